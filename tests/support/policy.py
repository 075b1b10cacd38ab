"""A copy of the default policy (and its lists) with sections added, for tests that need settings
the shipped policy leaves at their defaults (an identity: section, say)."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from tests.conftest import ROOT


def policy_with(tmp: Path, extra_yaml: str) -> Path:
    """tmp/aup.yaml: policies/aup.yaml with `extra_yaml` (top-level sections) appended; lists beside it."""
    shutil.copytree(ROOT / "policies" / "lists", tmp / "lists", dirs_exist_ok=True)
    path = tmp / "aup.yaml"
    path.write_text((ROOT / "policies" / "aup.yaml").read_text() + "\n" + textwrap.dedent(extra_yaml))
    return path
