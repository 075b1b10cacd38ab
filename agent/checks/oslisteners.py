"""`listening_servers` for desktops whose operating system itself listens on the network.

Windows always has RPC (135 and the dynamic range), SMB (445) and Delivery Optimization sockets open,
and macOS has Continuity (rapportd) and the AirPlay receiver: flagging those would fail every device,
so each platform module names its own services and the common check sees only the rest. The
exclusion is by process *and* port where the process is a host for many services (svchost), so a
user-enabled server in the same process (Remote Desktop on 3389) is still reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agent.checks import common
from agent.checks.base import Ctx, Host, Iface, Listener, Proc, Result


class _WithoutOsListeners:
    """The host as the common check should see it: its listeners minus the operating system's own."""

    def __init__(self, host: Host, is_os: Callable[[Listener], bool]):
        self._host = host
        self._is_os = is_os
        self.platform = host.platform
        self.ignored = 0

    def listeners(self) -> list[Listener]:
        mine = []
        for lst in self._host.listeners():
            if self._is_os(lst):
                self.ignored += 1
            else:
                mine.append(lst)
        return mine

    def run(self, argv: Sequence[str], timeout: float, ok_codes: Sequence[int] = (0,)) -> str:
        return self._host.run(argv, timeout, ok_codes)

    def processes(self) -> list[Proc]:
        return self._host.processes()

    def interfaces(self) -> list[Iface]:
        return self._host.interfaces()

    def read(self, path: str) -> str | None:
        return self._host.read(path)

    def listdir(self, path: str) -> list[str]:
        return self._host.listdir(path)

    def mtime(self, path: str) -> float | None:
        return self._host.mtime(path)


def listening_servers_except(ctx: Ctx, is_os: Callable[[Listener], bool]) -> Result:
    host = _WithoutOsListeners(ctx.host, is_os)
    res = common.listening_servers(Ctx(host, ctx.settings, ctx.monitor))
    return Result(res.status, {**res.evidence, "os_services_ignored": host.ignored})
