"""Journals: JSON-lines files that survive the process being killed, where its memory does not.

A producer appends each line with one write(2) on an O_APPEND descriptor as it happens (the page
cache keeps it if the process dies; no fsync, so not a power cut). A consumer moves a checkpoint,
`<file>.stored` = (inode, byte offset), once the lines up to there are in the store; whatever lies
beyond it was written but never stored, and is stored by the next consumer.

* The proxy's access log: the proxy appends (`AppendLog`), the access-log shipper, a process of its
  own, consumes (esafety/store/shipper.py).
* The batch writer's private incident journal: one process appends and consumes (`Journal`).

One producer per file: each proxy worker has its own access log.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple


class Checkpoint(NamedTuple):
    inode: int | None  # None: no checkpoint yet
    offset: int  # bytes stored
    head: bytes = b""  # the file's first bytes: a file emptied and refilled in place has others


def checkpoint_path(path: Path) -> Path:
    return path.with_name(path.name + ".stored")


def read_checkpoint(path: Path) -> Checkpoint:
    try:
        raw = json.loads(checkpoint_path(path).read_text())
        return Checkpoint(int(raw["inode"]), int(raw["offset"]), bytes.fromhex(raw.get("head", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return Checkpoint(None, 0)


def write_checkpoint(path: Path, inode: int, offset: int, head: bytes = b"") -> None:
    mark = checkpoint_path(path)
    tmp = mark.with_name(mark.name + ".tmp")
    tmp.write_text(json.dumps({"inode": inode, "offset": offset, "head": head.hex()}))
    os.replace(tmp, mark)


class AppendLog:
    """The producer's side: one write(2) per line, so a line is whole or absent, never interleaved."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def append(self, line: bytes) -> None:
        assert self._fd is not None, "open() the journal first"
        os.write(self._fd, line)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Journal(AppendLog):
    """A journal its own process consumes: `recover` at start, `settle` as lines are stored."""

    def __init__(self, path: Path):
        super().__init__(path)
        self._stored = 0

    def recover(self) -> list[bytes]:
        """Whole lines written after the checkpoint (by a process that died), oldest first. Call
        before `open`, then `settle` them once they are stored."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stored = 0
            return []
        inode, offset, _ = read_checkpoint(self.path)
        if inode != st.st_ino:
            offset = st.st_size  # no checkpoint, or a file replaced: none owed
        elif offset > st.st_size:
            offset = 0  # truncated in place: replay it all; stores drop duplicates
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            tail = fh.read(st.st_size - offset)
        whole = tail[: tail.rfind(b"\n") + 1]
        self._stored = offset
        return whole.splitlines(keepends=True)

    def open(self) -> None:
        super().open()
        self._write_mark()  # from now on a restart knows where this file stands

    def settle(self, nbytes: int) -> None:
        """The next `nbytes` of the journal are stored (or spooled): move the checkpoint past them."""
        if nbytes:
            self._stored += nbytes
            self._write_mark()

    def truncate_if_settled(self) -> None:
        """Start empty when everything is stored. Only while no one appends (at start, or after
        the last producer stopped)."""
        size = os.stat(self.path).st_size if self.path.exists() else 0
        if size and self._stored >= size:
            os.truncate(self.path, 0)
            self._stored = 0
            self._write_mark()

    def _write_mark(self) -> None:
        # The inode of the file we write (by descriptor): after a rotation by rename it is not the path's.
        inode = os.fstat(self._fd).st_ino if self._fd is not None else os.stat(self.path).st_ino
        write_checkpoint(self.path, inode, self._stored)
