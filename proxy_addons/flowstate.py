"""Per-flow facts shared by the add-ons: who, what was decided, the reference quoted to the user."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mitmproxy import http

from esafety.identity import Identity
from esafety.incidents.model import new_ref
from esafety.policy.model import Decision

KEY = "esafety"


@dataclass
class FlowState:
    who: Identity
    decision: Decision | None = None
    ref: str = field(default_factory=new_ref)
    started: float = field(default_factory=time.perf_counter)
    addon_seconds: float = 0.0
    blocked_by: str = ""  # "" | policy | download | phrases | error | port
    pending_block: str = ""  # a download refused on its headers, answered once its body is in
    host: str = ""  # the host the decision was made on, reused by the access log


def state(flow: http.HTTPFlow) -> FlowState | None:
    return flow.metadata.get(KEY)
