"""PROXY protocol v1 from haproxy: the client's real address, for workers behind `esafety run --workers N`.

Behind haproxy every connection comes from 127.0.0.1, which would give every pupil the same
identity. haproxy (`send-proxy`) prefixes each connection with one line
`PROXY TCP4 <src> <dst> <sport> <dport>\\r\\n`; this add-on reads it before mitmproxy picks the
protocol layer, sets the client's peername to the real address (identity, access log, incidents
all read peername) and strips the line so HTTP parsing sees the request itself.

Only on when `esafety_proxy_protocol` is set (the supervisor sets it for its workers, which listen on
127.0.0.1 only); then a connection without the line is refused, so nobody can pose as another client.
It must run before mitmproxy's own next_layer add-on: script add-ons do (ScriptLoader comes first).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Generator
from typing import Any

from mitmproxy import connection, ctx
from mitmproxy.proxy import commands, events, layer

log = logging.getLogger("esafety.proxy")

_MAX_V1 = 107  # the longest v1 header, CRLF included (the protocol's own limit)


class _Refuse(layer.Layer):
    """Close the client connection at once (no PROXY header where one is required)."""

    def _handle_event(self, event: events.Event) -> Generator[commands.Command, Any, None]:
        yield commands.CloseConnection(self.context.client)


def parse_v1(data: bytes) -> tuple[tuple[str, int] | None, int] | None:
    """(source address or None for UNKNOWN, header length); None while incomplete. ValueError if invalid."""
    if not data.startswith(b"PROXY "[: len(data)]):
        raise ValueError("not a PROXY protocol v1 header")
    end = data.find(b"\r\n", 0, _MAX_V1)
    if end < 0:
        if len(data) >= _MAX_V1:
            raise ValueError("PROXY header too long")
        return None
    parts = data[:end].decode("ascii", "strict").split(" ")
    if parts[0] != "PROXY":
        raise ValueError("not a PROXY protocol v1 header")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return None, end + 2
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ValueError(f"malformed PROXY header: {data[:end]!r}")
    src = str(ipaddress.ip_address(parts[2]))
    port = int(parts[4])
    if not 0 <= port < 65536:
        raise ValueError("bad source port")
    return (src, port), end + 2


class ProxyProtocol:
    def __init__(self) -> None:
        self._pending: set[str] = set()  # client ids whose header has not been read yet

    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        loader.add_option("esafety_proxy_protocol", bool, False,
                          "Require a PROXY protocol v1 line on each connection (workers behind haproxy).")

    def client_connected(self, client: connection.Client) -> None:
        if ctx.options.esafety_proxy_protocol:
            self._pending.add(client.id)

    def client_disconnected(self, client: connection.Client) -> None:
        self._pending.discard(client.id)

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        client = nextlayer.context.client
        if client.id not in self._pending:
            return
        data = nextlayer.data_client()
        try:
            parsed = parse_v1(data)
        except (ValueError, UnicodeDecodeError) as exc:
            self._pending.discard(client.id)
            log.warning("connection without a valid PROXY header refused",
                        extra={"fields": {"peer": client.peername[0] if client.peername else "", "error": str(exc)}})
            nextlayer.layer = _Refuse(nextlayer.context)
            return
        if parsed is None:
            # haproxy sends the whole line in one write before anything else, so half a line is
            # not haproxy: refuse rather than buffer for a slow sender.
            self._pending.discard(client.id)
            log.warning("connection with a partial PROXY header refused")
            nextlayer.layer = _Refuse(nextlayer.context)
            return
        self._pending.discard(client.id)
        address, skip = parsed
        if address is not None:
            client.peername = address
        self._strip(nextlayer, skip)
        if not nextlayer.data_client():
            nextlayer.layer = layer.NextLayer(nextlayer.context)  # only the header so far: wait for the request

    @staticmethod
    def _strip(nextlayer: layer.NextLayer, n: int) -> None:
        """Drop the first n bytes the client sent from the buffered events."""
        kept: list[events.Event] = []
        for e in nextlayer.events:
            if n and isinstance(e, events.DataReceived) and e.connection == nextlayer.context.client:
                cut = min(n, len(e.data))
                n -= cut
                if cut == len(e.data):
                    continue
                e.data = e.data[cut:]
            kept.append(e)
        nextlayer.events[:] = kept
