"""A `Host` that replays a device recorded on Windows or macOS, so the agent's real check functions run
against what the real tools print.

A machine is a folder under tests/fixtures/agent/<platform>/<machine>/ holding `host.json` and one file
per recorded command output (written exactly as the tool prints it, headers and blank lines included):

    {"platform": "windows",
     "commands": [{"argv": ["net", "share"], "out": "net_share.txt", "code": 0},
                  {"argv": ["softwareupdate", "-l", "--no-scan"], "timeout": true}],
     "processes": [{"pid": 4, "name": "System", "exe": "", "user": null}],
     "interfaces": [{"name": "Wi-Fi", "up": true, "addresses": ["10.0.0.5"]}],
     "listeners": [{"ip": "0.0.0.0", "port": 445, "proto": "tcp", "pid": 4, "process": "System"}],
     "dirs": {"/Applications": ["Safari.app"]}, "files": {"/etc/exports": "..."}}

Outputs may hold `{{days_ago:N:STRFTIME}}` (a date N days before now, UTC) where a check compares a
recorded date with the clock, so the recording stays "recent" whenever the tests run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.checks.base import CommandFailed, CommandMissing, CommandTimeout, Ctx, Iface, Listener, Proc, Settings
from agent.monitor import Monitor

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "agent"
_DAYS_AGO = re.compile(r"\{\{days_ago:(\d+(?:\.\d+)?):([^}]*)\}\}")


def machine_dir(platform: str, machine: str) -> Path:
    return FIXTURES / platform / machine


def render(text: str, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return _DAYS_AGO.sub(lambda m: (now - timedelta(days=float(m.group(1)))).strftime(m.group(2)), text)


class RecordedHost:
    def __init__(self, folder: Path, missing: Iterable[str] = (), timeouts: Iterable[str] = ()):
        """`missing` / `timeouts`: programs to treat as not installed / as hanging, on top of the recording."""
        self.folder = folder
        spec: dict[str, Any] = json.loads((folder / "host.json").read_text())
        self.platform: str = spec["platform"]
        self._commands = {tuple(c["argv"]): c for c in spec.get("commands", [])}
        self._missing = set(missing)
        self._timeouts = set(timeouts)
        self._spec = spec
        self.calls: list[tuple[str, ...]] = []

    @classmethod
    def load(cls, platform: str, machine: str, **kw: Any) -> RecordedHost:
        return cls(machine_dir(platform, machine), **kw)

    def run(self, argv: Sequence[str], timeout: float, ok_codes: Sequence[int] = (0,)) -> str:
        key = tuple(argv)
        self.calls.append(key)
        program = self._program(key)
        if program in self._missing or not any(self._program(k) == program for k in self._commands):
            raise CommandMissing(f"`{program}` is not installed")
        rec = self._commands.get(key)
        if rec is None:
            raise LookupError(f"no recording of {list(key)} in {self.folder}")
        if rec.get("timeout") or program in self._timeouts:
            raise CommandTimeout(f"`{' '.join(argv)}` took longer than {timeout:g} s")
        out = render((self.folder / rec["out"]).read_text(encoding="utf-8")) if rec.get("out") else ""
        code = int(rec.get("code", 0))
        if code not in ok_codes:
            raise CommandFailed(argv, code, out)
        return out

    @staticmethod
    def _program(argv: tuple[str, ...]) -> str:
        """The program that does the work: `sudo -n -u sam -- sysadminctl ...` needs sysadminctl."""
        if argv[:1] == ("sudo",) and "--" in argv:
            return argv[argv.index("--") + 1]
        return argv[0]

    def processes(self) -> list[Proc]:
        return [Proc(p["pid"], p["name"], p.get("exe", ""), p.get("user")) for p in self._spec.get("processes", [])]

    def listeners(self) -> list[Listener]:
        return [Listener(x["ip"], x["port"], x["proto"], x.get("pid"), x.get("process"))
                for x in self._spec.get("listeners", [])]

    def interfaces(self) -> list[Iface]:
        return [Iface(i["name"], i["up"], tuple(i.get("addresses", ()))) for i in self._spec.get("interfaces", [])]

    def read(self, path: str) -> str | None:
        text = self._spec.get("files", {}).get(path)
        return None if text is None else str(text)

    def listdir(self, path: str) -> list[str]:
        return sorted(self._spec.get("dirs", {}).get(path, []))

    def mtime(self, path: str) -> float | None:
        days = self._spec.get("mtimes", {}).get(path)
        return None if days is None else (datetime.now(UTC) - timedelta(days=days)).timestamp()


def quiet_monitor(folder: Path) -> Monitor:
    """The agent's own-code monitor over a small private copy with administrator-only permissions, so
    `safeguarding_monitor` does not depend on how this checkout's files happen to be permitted."""
    code = folder / "agent-code"
    (code / "checks").mkdir(parents=True, exist_ok=True)
    for path in (code / "__init__.py", code / "checks" / "__init__.py"):
        path.write_text("# agent\n")
        path.chmod(0o644)
    code.chmod(0o755)
    (code / "checks").chmod(0o755)
    return Monitor(root=code, extra=())


def recorded_ctx(host: RecordedHost, tmp: Path, settings: Settings | None = None) -> Ctx:
    return Ctx(host, settings or Settings(), quiet_monitor(tmp))
