"""No client reaches the proxy's own machine, or a link-local address, through the proxy.

A proxy on the school's server would otherwise hand every pupil the services that listen only on
loopback there (Prometheus, Grafana, the metrics ports, an admin console) and the cloud metadata
service at 169.254.169.254: squid's `to_localhost` deny. The check is made on the addresses a
server connection is about to go to, after name resolution, so every spelling of a host
(localhost, 127.1, 2130706433, [::ffff:127.0.0.1], a DNS name answering 127.0.0.1) meets it; the
address actually connected to is checked again (a name may resolve anew: DNS rebinding). A
connection to the proxy's own port on any of the machine's addresses is refused too: it would
loop through the proxy until its sockets ran out.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket

import psutil
from mitmproxy import ctx, exceptions, http
from mitmproxy.proxy import server_hooks

from esafety import metrics
from esafety.config import load_settings
from esafety.policy.model import Decision
from esafety.policy.schema import Action
from proxy_addons.flowstate import state

log = logging.getLogger("esafety.proxy")

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_FORBIDDEN = "127.0.0.0/8,::1/128,0.0.0.0/8,::/128,169.254.0.0/16,fe80::/10"
REFUSED = "esafety: no destination on the proxy's own machine or a link-local network"  # the error's prefix
REFUSAL = Decision(Action.BLOCK, "local_network", "destinations", "A10")


def _ip(text: str) -> IP:
    ip = ipaddress.ip_address(text.split("%", 1)[0])  # fe80::1%eth0: the zone is no part of the address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(n.strip()) for n in text.split(",") if n.strip())
    except ValueError as exc:
        raise exceptions.OptionsError(f"esafety_forbidden_networks: {exc}") from exc


def parse_endpoints(text: str) -> frozenset[tuple[IP, int]]:
    """'127.0.0.1:8081,[::1]:8081' -> {(address, port)}."""
    out = set()
    for item in filter(None, (i.strip() for i in text.split(","))):
        host, sep, port = item.rpartition(":")
        try:
            if not sep or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("expected ADDRESS:PORT")
            out.add((_ip(host.strip("[]")), int(port)))
        except ValueError as exc:
            raise exceptions.OptionsError(f"esafety_local_origins: {item!r}: {exc}") from exc
    return frozenset(out)


def own_addresses() -> frozenset[IP]:
    addrs = set()
    for nics in psutil.net_if_addrs().values():
        for a in nics:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(ValueError):
                    addrs.add(_ip(a.address))
    return frozenset(addrs)


class Destinations:
    def __init__(self) -> None:
        self.forbidden = parse_networks(DEFAULT_FORBIDDEN)
        self.allowed: frozenset[tuple[IP, int]] = frozenset()
        self.own: frozenset[IP] = frozenset()
        self.own_ports: frozenset[int] = frozenset()

    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        loader.add_option("esafety_forbidden_networks", str, DEFAULT_FORBIDDEN,
                          "Networks no client reaches through the proxy (comma-separated CIDRs): by default "
                          "the proxy's own machine (loopback) and link-local addresses.")
        loader.add_option("esafety_local_origins", str, "",
                          "ADDRESS:PORT pairs on those networks that clients may still reach (comma-separated), "
                          "such as a service on the proxy machine meant for its users.")

    def configure(self, updated: set[str]) -> None:
        if "esafety_forbidden_networks" in updated:
            self.forbidden = parse_networks(ctx.options.esafety_forbidden_networks)
        if "esafety_local_origins" in updated:
            self.allowed = parse_endpoints(ctx.options.esafety_local_origins)
        if "listen_port" in updated or not self.own_ports:
            self.own = own_addresses()
            self.own_ports = frozenset({ctx.options.listen_port or 8080, load_settings().proxy_port})

    def refused(self, ip: IP, port: int) -> bool:
        if (ip, port) in self.allowed:
            return False
        return (port in self.own_ports and ip in self.own) or any(ip in net for net in self.forbidden)

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        if not data.server.address or data.server.via:  # an upstream proxy resolves and connects
            return
        host, port = data.server.address
        try:
            addrs = [_ip(host)]
        except ValueError:
            try:  # the resolver mitmproxy connects with, so it reads 127.1 and 2130706433 alike
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError):
                return  # unresolvable: mitmproxy's own connect fails the same way
            addrs = [_ip(str(info[4][0])) for info in infos]
        bad = next((a for a in addrs if self.refused(a, port)), None)
        if bad is not None:
            data.server.error = f"{REFUSED} ({host}:{port} is {bad})"
            metrics.BAD_REQUESTS.labels(reason="local_destination").inc()
            log.warning("destination refused",
                        extra={"fields": {"host": host[:255], "port": port, "address": str(bad)}})

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        peer = data.server.peername
        if not peer or not self.refused(_ip(peer[0]), peer[1]):
            return
        # The resolver answered mitmproxy's connect otherwise than it answered the check (DNS
        # rebinding). mitmproxy has no hook that refuses an open connection, so its socket is
        # aborted here, before the request is written: the client gets a 502.
        metrics.BAD_REQUESTS.labels(reason="local_destination").inc()
        log.error("destination refused after connecting (the name resolved anew to a forbidden address)",
                  extra={"fields": {"address": str(peer[0]), "port": peer[1]}})
        data.server.error = f"{REFUSED} (resolved anew to {peer[0]})"
        handler = ctx.master.addons.get("proxyserver").connections.get(data.client.id)
        io = handler.transports.get(data.server) if handler is not None else None
        if io is not None and isinstance(io.writer, asyncio.StreamWriter):
            io.writer.transport.abort()

    def error(self, flow: http.HTTPFlow) -> None:
        st = state(flow)
        if st is not None and flow.error is not None and REFUSED in flow.error.msg:
            st.decision, st.blocked_by = REFUSAL, "destination"  # logged as a block, not an allowed 502
