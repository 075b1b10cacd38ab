"""What a check is: a small function from the device (`Host`) and the server's settings to a `Result`.

Checks never touch the OS directly: they ask the `Host` for command output, processes, listening
sockets, interfaces and files. The real host (agent/checks/host.py) uses psutil and subprocess; the
tests replay outputs recorded on Windows and macOS through the same interface.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from agent.monitor import Monitor

Status = Literal["pass", "fail", "error", "not_applicable"]


@dataclass(frozen=True, slots=True)
class Result:
    status: Status
    evidence: dict[str, Any] = field(default_factory=dict)


def passed(**evidence: Any) -> Result:
    return Result("pass", evidence)


def failed(**evidence: Any) -> Result:
    return Result("fail", evidence)


def error(message: str, **evidence: Any) -> Result:
    return Result("error", {"error": message, **evidence})


def not_applicable(reason: str, **evidence: Any) -> Result:
    return Result("not_applicable", {"reason": reason, **evidence})


class CommandMissing(Exception):
    """The program a check needs is not installed: the check reports `error`, it does not crash."""


class CommandTimeout(Exception):
    """The program did not finish within the check's time limit."""


class CommandFailed(Exception):
    def __init__(self, argv: Sequence[str], code: int, output: str):
        super().__init__(f"`{' '.join(argv)}` exited {code}: {output.strip()[:300]}")
        self.code = code
        self.output = output


@dataclass(frozen=True, slots=True)
class Proc:
    pid: int
    name: str
    exe: str = ""
    user: str | None = None


@dataclass(frozen=True, slots=True)
class Listener:
    ip: str
    port: int
    proto: str  # tcp | udp
    pid: int | None = None
    process: str | None = None


@dataclass(frozen=True, slots=True)
class Iface:
    name: str
    up: bool
    addresses: tuple[str, ...] = ()


class Host(Protocol):
    """The device as the checks see it."""

    platform: str  # linux | windows | macos

    def run(self, argv: Sequence[str], timeout: float, ok_codes: Sequence[int] = (0,)) -> str:
        """stdout (and stderr appended) of a command; raises CommandMissing / CommandTimeout / CommandFailed."""
        ...

    def processes(self) -> list[Proc]: ...

    def listeners(self) -> list[Listener]: ...

    def interfaces(self) -> list[Iface]: ...

    def read(self, path: str) -> str | None:
        """A text file's contents, or None when it does not exist or cannot be read."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Names in a directory ([] when it does not exist)."""
        ...

    def mtime(self, path: str) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Settings:
    """What the server sends with each reply (the policy's `compliance:` section); defaults until then."""

    listening_allow: tuple[str, ...] = ("sshd", "systemd-resolved", "cupsd", "chronyd", "avahi-daemon", "dhclient",
                                        "NetworkManager", "rpcbind")
    admin_allow: tuple[str, ...] = ("root", "Administrator", "administrator")
    p2p_names: tuple[str, ...] = ("qbittorrent", "qbittorrent-nox", "transmission", "transmission-daemon",
                                  "transmission-cli", "transmission-gtk", "transmission-qt", "utorrent", "bittorrent",
                                  "deluge", "deluged", "vuze", "azureus", "emule", "amule", "amuled", "frostwire",
                                  "bitcomet", "tixati", "ktorrent", "rtorrent", "aria2c")
    vpn_names: tuple[str, ...] = ("openvpn", "openvpn-gui", "wireguard", "wg-quick", "nordvpn", "nordvpnd",
                                  "protonvpn", "psiphon", "psiphon3", "expressvpn", "expressvpnd", "windscribe",
                                  "hotspotshield", "tailscaled", "zerotier-one", "cyberghost", "surfshark",
                                  "mullvad-daemon")
    monitor_sha256: str | None = None
    check_timeout_seconds: int = 10

    @classmethod
    def from_reply(cls, raw: Mapping[str, Any] | None) -> Settings:
        """The server's `settings` object; anything missing or of the wrong type keeps the default."""
        base = cls()
        if not isinstance(raw, Mapping):
            return base

        def names(key: str) -> tuple[str, ...]:
            v = raw.get(key)
            ok = isinstance(v, list) and all(isinstance(x, str) for x in v)
            return tuple(v) if ok else getattr(base, key)  # type: ignore[arg-type]

        sha = raw.get("monitor_sha256")
        timeout = raw.get("check_timeout_seconds")
        return cls(listening_allow=names("listening_allow"), admin_allow=names("admin_allow"),
                   p2p_names=tuple(n.lower() for n in names("p2p_names")),
                   vpn_names=tuple(n.lower() for n in names("vpn_names")),
                   monitor_sha256=sha.lower() if isinstance(sha, str) else None,
                   check_timeout_seconds=timeout if isinstance(timeout, int) and timeout > 0
                   else base.check_timeout_seconds)

    def as_dict(self) -> dict[str, Any]:
        return {"listening_allow": list(self.listening_allow), "admin_allow": list(self.admin_allow),
                "p2p_names": list(self.p2p_names), "vpn_names": list(self.vpn_names),
                "monitor_sha256": self.monitor_sha256, "check_timeout_seconds": self.check_timeout_seconds}


@dataclass(frozen=True, slots=True)
class Ctx:
    host: Host
    settings: Settings
    monitor: Monitor  # this agent's own code (agent/monitor.py)

    @property
    def timeout(self) -> float:
        return float(self.settings.check_timeout_seconds)

    def run(self, *argv: str, ok_codes: Sequence[int] = (0,)) -> str:
        return self.host.run(argv, self.timeout, ok_codes)


Check = Callable[[Ctx], Result]


def process_matches(procs: Sequence[Proc], names: Sequence[str]) -> list[dict[str, Any]]:
    """Processes whose name or executable's base name (without .exe/.app) is one of `names`."""
    wanted = {n.lower() for n in names}
    hits = []
    for p in procs:
        base = p.exe.replace("\\", "/").rsplit("/", 1)[-1].lower()
        for candidate in (p.name.lower(), base):
            stem = candidate.removesuffix(".exe")
            if stem in wanted:
                hits.append({"pid": p.pid, "name": p.name, "exe": p.exe, "user": p.user})
                break
    return sorted(hits, key=lambda h: (h["name"], h["pid"]))
