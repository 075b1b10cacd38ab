"""The agent's credential and counters on disk, readable by root only, and its offline queue.

credential.json: server URL, device id and credential from enrolment, the last sequence number
used (a restart never reuses one: the server refuses replays), and the intervals and settings the
server last sent. Writes are atomic (a new file renamed over the old), created with mode 0600.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_HEARTBEAT = 60
DEFAULT_CHECKS = 900
MAX_QUEUED = 500  # about 8 hours of heartbeats; beyond that the oldest go and the server asks for a snapshot


def default_path() -> Path:
    env = os.environ.get("ESAFETY_AGENT_STATE")
    if env:
        return Path(env)
    if os.name == "nt":
        return Path(os.environ.get("PROGRAMDATA", "C:/ProgramData")) / "esafety" / "agent" / "credential.json"
    if os.geteuid() == 0:
        return Path("/var/lib/esafety-agent/credential.json")
    return Path.home() / ".local" / "state" / "esafety-agent" / "credential.json"


class StateError(Exception):
    pass


@dataclass
class AgentState:
    server: str
    device_id: str
    credential: str
    seq: int = 0
    heartbeat_seconds: int = DEFAULT_HEARTBEAT
    check_seconds: int = DEFAULT_CHECKS
    settings: dict[str, Any] = field(default_factory=dict)
    ca_file: str | None = None

    @classmethod
    def load(cls, path: Path) -> AgentState:
        try:
            raw = json.loads(path.read_text())
            return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})
        except FileNotFoundError:
            raise StateError(f"{path} does not exist: enrol first (`esafety agent enrol --server URL --token T`)") \
                from None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise StateError(f"{path} is unreadable or damaged ({exc}); enrol again") from None

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(asdict(self), indent=1).encode())

    def apply_reply(self, reply: dict[str, Any]) -> None:
        hb, chk = reply.get("heartbeat_seconds"), reply.get("check_seconds")
        if isinstance(hb, int) and hb > 0:
            self.heartbeat_seconds = hb
        if isinstance(chk, int) and chk > 0:
            self.check_seconds = chk
        if isinstance(reply.get("settings"), dict):
            self.settings = reply["settings"]


def write_private(path: Path, data: bytes) -> None:
    """Atomically replace `path` with `data`, owner read/write only (its folder too)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if sys.platform != "win32":
        os.chmod(tmp, 0o600)  # in case a umask or an existing file widened it
    os.replace(tmp, path)


class Queue:
    """Reports the server could not take yet, oldest first, as files named by sequence number."""

    def __init__(self, folder: Path, limit: int = MAX_QUEUED):
        self.folder = folder
        self.limit = limit

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("*.json"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)

    def __len__(self) -> int:
        return len(self._files())

    def put(self, seq: int, body: bytes) -> int:
        """Queue one report; returns how many old ones were dropped to stay within the limit."""
        write_private(self.folder / f"{seq:020d}.json", body)
        files = self._files()
        dropped = files[: max(0, len(files) - self.limit)]
        for p in dropped:
            p.unlink(missing_ok=True)
        return len(dropped)

    def peek(self) -> tuple[Path, bytes] | None:
        files = self._files()
        return (files[0], files[0].read_bytes()) if files else None
