"""A copy of the default policy (and its lists) with sections added, for tests that need settings
the shipped policy leaves at their defaults (an identity: section, say)."""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

from tests.conftest import ROOT


def policy_with(tmp: Path, extra_yaml: str) -> Path:
    """tmp/aup.yaml: policies/aup.yaml with the top-level sections of `extra_yaml` in place of its
    own (a section the default has is replaced whole); the lists beside it."""
    shutil.copytree(ROOT / "policies" / "lists", tmp / "lists", dirs_exist_ok=True)
    extra = textwrap.dedent(extra_yaml).strip("\n")
    text = (ROOT / "policies" / "aup.yaml").read_text()
    for key in re.findall(r"^([a-z_]+):", extra, re.M):
        # The section runs from its key to the next top-level key (comments before that go with it).
        text = re.sub(rf"^{key}:.*?(?=^[a-z_]+:|\Z)", "", text, flags=re.M | re.S)
    path = tmp / "aup.yaml"
    path.write_text(text + "\n" + extra + "\n")
    return path
