"""Detectors: small functions that look at one payload of one flow and may return a Hit.

Signature: `detect(flow, payload, c2s, cfg) -> Hit | None`, where `c2s` says the payload came from
the flow's client. Detectors keep whatever they need across packets in `flow.scratch()`. A Hit is
`final` when the evidence is conclusive; otherwise the engine keeps the best non-final Hit and
reports it only if nothing better turns up before the flow's inspection budget runs out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Hit:
    protocol: str
    confidence: float
    evidence: dict[str, Any] = field(default_factory=dict)
    final: bool = True
    subject: bytes | None = None  # the device to blame when it is not the flow's client (servers, DHCP)
