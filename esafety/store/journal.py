"""A JSON-lines journal that survives the process being killed: the writer's memory is not.

The proxy appends each line with one write(2) on an O_APPEND descriptor as the request is logged
(the page cache keeps it if the process dies; no fsync, so not a power cut). The batch writer moves
a checkpoint, `<file>.stored` = (inode, byte offset), once the lines up to there are in the store.
A new process first hands back the lines beyond the checkpoint: written, never stored.

One writer process per file: the offsets assume nobody else appends (each proxy worker has its own).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class Journal:
    def __init__(self, path: Path):
        self.path = path
        self.mark = path.with_name(path.name + ".stored")
        self._fd: int | None = None
        self._stored = 0

    def recover(self) -> list[bytes]:
        """Whole lines written after the checkpoint (by a process that died), oldest first. Call
        before `open`, then `settle` them once they are stored."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stored = 0
            return []
        inode, offset = self._read_mark()
        if inode != st.st_ino:
            offset = st.st_size  # no checkpoint (a log from before journals) or a file rotated away: none owed
        elif offset > st.st_size:
            offset = 0  # truncated in place (logrotate copytruncate): replay it all; stores drop duplicates
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            tail = fh.read(st.st_size - offset)
        whole = tail[: tail.rfind(b"\n") + 1]
        self._stored = offset
        return whole.splitlines(keepends=True)

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._write_mark()  # from now on a restart knows where this file stands

    def append(self, line: bytes) -> None:
        assert self._fd is not None, "open() the journal first"
        os.write(self._fd, line)

    def settle(self, nbytes: int) -> None:
        """The next `nbytes` of the journal are stored (or spooled): move the checkpoint past them."""
        if nbytes:
            self._stored += nbytes
            self._write_mark()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def truncate_if_settled(self) -> None:
        """For a private journal (not a log others read): start empty when everything is stored.
        Only while no one appends (at start, or after the last producer stopped)."""
        size = os.stat(self.path).st_size if self.path.exists() else 0
        if size and self._stored >= size:
            os.truncate(self.path, 0)
            self._stored = 0
            self._write_mark()

    def _read_mark(self) -> tuple[int | None, int]:
        try:
            raw = json.loads(self.mark.read_text())
            return int(raw["inode"]), int(raw["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            return None, 0

    def _write_mark(self) -> None:
        # The inode of the file we write (by descriptor): after a rotation by rename it is not the path's.
        inode = os.fstat(self._fd).st_ino if self._fd is not None else os.stat(self.path).st_ino
        tmp = self.mark.with_name(self.mark.name + ".tmp")
        tmp.write_text(json.dumps({"inode": inode, "offset": self._stored}))
        os.replace(tmp, self.mark)
