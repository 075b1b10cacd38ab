"""The safeguarding monitor's identity: a hash of the agent's own code, so the server can tell a
modified or swapped agent from an upgraded one (it compares hashes and agent versions)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

AGENT_ROOT = Path(__file__).resolve().parent
# The agent package (checks, reporter) and the command that starts it; not the sensor.
CODE_DIRS = ("", "checks")
EXTRA = (AGENT_ROOT.parent / "esafety" / "commands" / "agent.py",)


class Monitor:
    def __init__(self, root: Path = AGENT_ROOT, extra: tuple[Path, ...] = EXTRA):
        self.root = root
        self.extra = extra
        self.sha256 = self.current()  # what started

    def files(self) -> list[Path]:
        found = [p for d in CODE_DIRS for p in sorted((self.root / d).glob("*.py"))]
        return found + [p for p in self.extra if p.exists()]

    def current(self) -> str:
        h = hashlib.sha256()
        for path in self.files():
            h.update(path.name.encode() + b"\0")
            try:
                h.update(path.read_bytes())
            except OSError:
                h.update(b"<unreadable>")
        return h.hexdigest()

    def writable_by_others(self) -> list[str]:
        """Code files (and their folders) that group or world may write (POSIX; [] on Windows)."""
        if os.name != "posix":
            return []
        loose = []
        for path in [*{p.parent for p in self.files()}, *self.files()]:
            try:
                mode = path.stat().st_mode
            except OSError:
                continue
            if mode & (stat.S_IWGRP | stat.S_IWOTH):
                loose.append(str(path))
        return sorted(loose)
