"""The journal's checkpoint: what a killed process wrote but never stored is handed back, once."""

from __future__ import annotations

import os
from pathlib import Path

from esafety.store.journal import Journal


def lines(*words: str) -> list[bytes]:
    return [f'{{"w": "{w}"}}\n'.encode() for w in words]


def test_lines_beyond_the_checkpoint_come_back_after_a_crash(tmp_path: Path):
    j = Journal(tmp_path / "access.jsonl")
    assert j.recover() == []
    j.open()
    for line in lines("a", "b", "c", "d"):
        j.append(line)
    j.settle(sum(map(len, lines("a", "b"))))  # the writer stored a and b, then the process died
    # (no close: a killed process does not close anything)
    again = Journal(tmp_path / "access.jsonl")
    assert again.recover() == lines("c", "d")
    again.settle(sum(map(len, lines("c", "d"))))
    again.open()
    again.append(lines("e")[0])
    third = Journal(tmp_path / "access.jsonl")
    assert third.recover() == lines("e")


def test_a_half_written_last_line_is_not_replayed(tmp_path: Path):
    j = Journal(tmp_path / "j.jsonl")
    j.recover()
    j.open()
    j.append(lines("a")[0])
    j.append(b'{"w": "tru')
    assert Journal(tmp_path / "j.jsonl").recover() == lines("a")


def test_a_log_from_before_journals_owes_nothing_and_rotation_starts_afresh(tmp_path: Path):
    path = tmp_path / "access.jsonl"
    path.write_bytes(b"".join(lines("old1", "old2")))
    j = Journal(path)
    assert j.recover() == []
    j.open()
    j.append(lines("new")[0])
    os.truncate(path, 0)  # logrotate copytruncate
    path.write_bytes(lines("after")[0])
    assert Journal(path).recover() == lines("after")  # replayed from the start; the store drops duplicates


def test_a_private_journal_is_emptied_once_everything_is_stored(tmp_path: Path):
    j = Journal(tmp_path / "incidents.journal")
    j.recover()
    j.open()
    j.append(lines("x")[0])
    j.truncate_if_settled()
    assert (tmp_path / "incidents.journal").stat().st_size > 0  # not stored yet: kept
    j.settle(len(lines("x")[0]))
    j.truncate_if_settled()
    assert (tmp_path / "incidents.journal").stat().st_size == 0
    j.append(lines("y")[0])
    assert Journal(tmp_path / "incidents.journal").recover() == lines("y")
