"""The real device: psutil for processes, sockets and interfaces; subprocess for OS tools."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence

import psutil

from agent.checks.base import CommandFailed, CommandMissing, CommandTimeout, Iface, Listener, Proc


def this_platform() -> str:
    if sys.platform.startswith("win"):
        return "windows"
    if sys.platform == "darwin":
        return "macos"
    return "linux"


class LocalHost:
    def __init__(self) -> None:
        self.platform = this_platform()

    def run(self, argv: Sequence[str], timeout: float, ok_codes: Sequence[int] = (0,)) -> str:
        exe = shutil.which(argv[0])
        if exe is None:
            raise CommandMissing(f"`{argv[0]}` is not installed")
        # C locale: the parsers read English output whatever the device's language.
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        try:
            done = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout, env=env,
                                  stdin=subprocess.DEVNULL, errors="replace")
        except subprocess.TimeoutExpired:
            raise CommandTimeout(f"`{' '.join(argv)}` took longer than {timeout:g} s") from None
        out = done.stdout + (("\n" + done.stderr) if done.stderr else "")
        if done.returncode not in ok_codes:
            raise CommandFailed(argv, done.returncode, out)
        return out

    def processes(self) -> list[Proc]:
        procs = []
        for p in psutil.process_iter(["pid", "name", "exe", "username"]):
            info = p.info
            procs.append(Proc(info["pid"], info["name"] or "", info["exe"] or "", info["username"]))
        return procs

    def listeners(self) -> list[Listener]:
        names: dict[int, str] = {}
        out = []
        for c in psutil.net_connections(kind="inet"):
            is_tcp = c.type == socket.SOCK_STREAM
            if (is_tcp and c.status != psutil.CONN_LISTEN) or (not is_tcp and c.raddr) or not c.laddr:
                continue
            name = None
            if c.pid:
                if c.pid not in names:
                    try:
                        names[c.pid] = psutil.Process(c.pid).name()
                    except psutil.Error:
                        names[c.pid] = ""
                name = names[c.pid] or None
            out.append(Listener(c.laddr.ip, c.laddr.port, "tcp" if is_tcp else "udp", c.pid, name))
        return out

    def interfaces(self) -> list[Iface]:
        stats = psutil.net_if_stats()
        addrs = psutil.net_if_addrs()
        return [Iface(name, bool(stats[name].isup) if name in stats else False,
                      tuple(a.address for a in addrs.get(name, ()) if a.family in (socket.AF_INET, socket.AF_INET6)))
                for name in sorted(set(stats) | set(addrs))]

    def read(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return None

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except OSError:
            return []

    def mtime(self, path: str) -> float | None:
        try:
            return os.stat(path).st_mtime
        except OSError:
            return None
