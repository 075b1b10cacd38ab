"""Per-flow facts shared by the add-ons: who, what was decided, the reference quoted to the user,
and the response's headers and body as the add-ons read them (read once, not once per add-on)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from mitmproxy import http

from esafety import metrics
from esafety.identity import Identity
from esafety.incidents.model import new_ref
from esafety.policy.engine import Engine
from esafety.policy.model import Decision
from esafety.policy.schema import Action

log = logging.getLogger("esafety.proxy")
KEY = "esafety"
# The request headers sign-in and deciding read, in one pass over the fields (proxy_addons/signin.py).
REQUEST_HEADERS = (b"proxy-authorization", b"content-type", b"accept", b"host")
_RESPONSE_HEADERS = (b"content-type", b"content-disposition", b"content-encoding")


def read_headers(headers: http.Headers, names: tuple[bytes, ...]) -> dict[bytes, str]:
    """The named headers (lower-case bytes -> value), in one pass over the fields.

    Values as headers.get gives them (repeated fields joined with ", "), for a fraction of the cost
    of one lookup per name: each lookup walks and lower-cases every field.
    """
    found: dict[bytes, list[str]] = {}
    for name, value in headers.fields:
        key = name.lower()
        if key in names:
            found.setdefault(key, []).append(value.decode("utf-8", "surrogateescape"))
    return {k: ", ".join(v) for k, v in found.items()}


@dataclass
class FlowState:
    who: Identity
    decision: Decision | None = None
    ref: str = field(default_factory=new_ref)
    started: float = field(default_factory=time.perf_counter)
    addon_seconds: float = 0.0
    blocked_by: str = ""  # "" | policy | download | phrases | error | port | destination
    host: str = ""  # the host the decision was made on, reused by the access log
    client_ip: str = ""
    request_headers: dict[bytes, str] | None = None  # REQUEST_HEADERS, as the client sent them
    _facts: tuple[http.Response, dict[bytes, str]] | None = None
    _body: tuple[http.Response, bytes | None] | None = None

    def response_headers(self, resp: http.Response) -> dict[bytes, str]:
        """Content-Type, -Disposition and -Encoding of this response (lower-case names)."""
        if self._facts is None or self._facts[0] is not resp:
            self._facts = (resp, read_headers(resp.headers, _RESPONSE_HEADERS))
        return self._facts[1]

    def body(self, resp: http.Response) -> bytes | None:
        """The response body with its content-encoding undone; None if it cannot be."""
        if self._body is None or self._body[0] is not resp:
            raw = resp.raw_content
            if raw is None or not self.response_headers(resp).get(b"content-encoding"):
                body = raw
            else:
                try:
                    body = resp.content
                except ValueError:  # undecodable content-encoding
                    body = None
            self._body = (resp, body)
        return self._body[1]


def fails_open(engine: Engine, st: FlowState, what: str) -> bool:
    """After an error in the filter itself: does this flow's group let it through (on_error)?
    Counted and logged either way; pupils' groups fail closed."""
    group = engine.group_of(st.who.group)
    fail_open = group.on_error is Action.ALLOW
    metrics.FAIL_CLOSED.labels(outcome="allowed" if fail_open else "blocked").inc()
    log.exception(f"{what} failed", extra={"fields": {"ref": st.ref, "group": group.name}})
    if not fail_open:
        st.blocked_by = "error"
    return fail_open


def state(flow: http.HTTPFlow) -> FlowState | None:
    return flow.metadata.get(KEY)
