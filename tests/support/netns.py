"""A client host of the tests' own: a network namespace joined to this machine by a veth pair,
its web traffic redirected by nftables to a transparent proxy here, as a school's gateway does.

Needs root (ip netns, nft). The addresses are the pair's own (10.213.N.0/30); nothing is routed
beyond this machine: the namespace's only route leads to the host end of the pair.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class ClientHost:
    name: str
    host_ip: str  # this machine's end of the pair: the gateway the client sends through
    client_ip: str
    host_if: str
    table: str  # the nftables table of this host's redirect

    def redirect(self, ports: tuple[int, ...], to_port: int) -> None:
        """The client's connections to these ports go to the local port instead (a transparent proxy)."""
        rules = (f"table ip {self.table} {{\n chain pre {{\n  type nat hook prerouting priority dstnat;\n"
                 f"  iifname \"{self.host_if}\" tcp dport {{ {', '.join(map(str, ports))} }} "
                 f"redirect to :{to_port}\n }}\n}}\n")
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True, capture_output=True)

    def run(self, code: str, timeout: float = 20) -> str:
        """Python code run on the client host; what it prints."""
        out = subprocess.run(["ip", "netns", "exec", self.name, sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"client failed: {out.stderr}")
        return out.stdout


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _free_slot() -> int:
    """A namespace of our own: the first name no other test run holds (ip netns add is atomic)."""
    for n in range(os.getpid() % 200 + 20, 255):
        if subprocess.run(["ip", "netns", "add", f"esafety-etp{n}"], capture_output=True).returncode == 0:
            return n
    raise RuntimeError("no free network namespace slot (esafety-etp*)")


@contextmanager
def client_host() -> Iterator[ClientHost]:
    n = _free_slot()
    tag = f"etp{n}"
    net = f"10.213.{n}"
    host_if, client_if, table = f"{tag}h", f"{tag}c", f"esafety_{tag}"
    ch = ClientHost(f"esafety-{tag}", f"{net}.1", f"{net}.2", host_if, table)
    try:
        _sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", client_if)
        _sh("ip", "link", "set", client_if, "netns", ch.name)
        _sh("ip", "addr", "add", f"{ch.host_ip}/30", "dev", host_if)
        _sh("ip", "link", "set", host_if, "up")
        inside = ("ip", "netns", "exec", ch.name)
        _sh(*inside, "ip", "addr", "add", f"{ch.client_ip}/30", "dev", client_if)
        _sh(*inside, "ip", "link", "set", client_if, "up")
        _sh(*inside, "ip", "link", "set", "lo", "up")
        _sh(*inside, "ip", "route", "add", "default", "via", ch.host_ip)
        yield ch
    finally:
        subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ch.name], capture_output=True)
