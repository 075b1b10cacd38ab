"""The flow table: one entry per bidirectional 5-tuple, bounded, with idle expiry.

A flow is inspected on its first payload packets only; after that a packet costs one dict lookup
and a few integer updates. Memory is bounded by `max_flows`: when full, the oldest flow (by
creation, which a dict keeps for free) is evicted and counted, so a scan or a flood can slow
detection down but never exhaust the sensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

# Flow.mode values
INSPECT = 0  # still looking at payloads
DONE = 1  # decided (or gave up): count only
WATCH = 2  # decided, but a volume/duration rule still applies (SSH tunnels)


class Flow:
    __slots__ = ("key", "proto", "cip", "sip", "cport", "sport", "cmac", "first", "last", "c_pkts", "s_pkts",
                 "c_bytes", "s_bytes", "mode", "seen", "state", "best", "reported", "syn_from_client",
                 "server_accepted", "ttl")

    def __init__(self, key: tuple[Any, ...], proto: int, cip: bytes, cport: int, sip: bytes, sport: int,
                 ts: float) -> None:
        self.key = key
        self.proto = proto
        self.cip = cip  # client: the side that opened the flow (or our best guess)
        self.cport = cport
        self.sip = sip
        self.sport = sport
        self.cmac = b""
        self.first = ts
        self.last = ts
        self.c_pkts = 0
        self.s_pkts = 0
        self.c_bytes = 0
        self.s_bytes = 0
        self.mode = INSPECT
        self.seen = 0  # payload packets inspected
        self.state: dict[str, Any] | None = None  # detector scratch space, created on first use
        self.best: Any = None  # the best not-yet-certain detection, reported if nothing beats it
        self.reported: set[str] | None = None  # protocols already reported for this flow
        self.syn_from_client = False
        self.server_accepted = False
        self.ttl = 0  # client's TTL on its first packet

    def scratch(self) -> dict[str, Any]:
        if self.state is None:
            self.state = {}
        return self.state

    @property
    def duration(self) -> float:
        return self.last - self.first


def flow_key(proto: int, src: bytes, sport: int, dst: bytes, dport: int) -> tuple[Any, ...]:
    """The same key for both directions: the lower (address, port) end first."""
    if src < dst or (src == dst and sport <= dport):
        return (src, sport, dst, dport, proto)
    return (dst, dport, src, sport, proto)


class FlowTable:
    def __init__(self, max_flows: int, idle_timeout: float, on_expire: Callable[[Flow], None]):
        self.max_flows = max_flows
        self.idle_timeout = idle_timeout
        self.on_expire = on_expire  # called for every flow leaving the table (idle, evicted, flushed)
        self.flows: dict[tuple[Any, ...], Flow] = {}
        self.created = 0
        self.evicted = 0
        self.expired = 0
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self.flows)

    def __iter__(self) -> Iterator[Flow]:
        return iter(list(self.flows.values()))

    def add(self, flow: Flow) -> None:
        flows = self.flows
        if len(flows) >= self.max_flows:
            oldest = next(iter(flows))
            self.on_expire(flows.pop(oldest))
            self.evicted += 1
        flows[flow.key] = flow
        self.created += 1

    def sweep(self, now: float) -> None:
        """Expire idle flows; cheap to call often, it only walks the table every quarter timeout."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + max(self.idle_timeout / 4, 0.25)
        cutoff = now - self.idle_timeout
        idle = [k for k, f in self.flows.items() if f.last < cutoff]
        for k in idle:
            self.on_expire(self.flows.pop(k))
        self.expired += len(idle)

    def flush(self) -> None:
        """End of capture: every remaining flow is finished."""
        flows, self.flows = self.flows, {}
        for f in flows.values():
            self.on_expire(f)
