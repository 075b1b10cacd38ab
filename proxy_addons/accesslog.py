"""The access log: one JSON line per request (and per refused CONNECT), appended as it is logged.

One write(2) per line, before the response leaves: a proxy killed at any moment has logged every
response it sent. The access-log shipper (a child process) stores the lines in the database.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import orjson
from mitmproxy import http

from esafety import metrics
from proxy_addons.flowstate import FlowState, state
from proxy_addons.runtime import Runtime


def _text(value: str) -> str:
    """mitmproxy decodes invalid UTF-8 in a path to lone surrogates, which no JSON encoder or
    database takes: keep those bytes visible as \\xNN."""
    return value if value.isascii() else value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def encode(row: dict) -> bytes:
    try:
        return orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # a value orjson refuses (a surrogate that slipped through): never lose the line
        return (json.dumps(row, default=str) + "\n").encode()


class AccessLog:
    def __init__(self, rt: Runtime):
        self.rt = rt

    def _row(self, flow: http.HTTPFlow, st: FlowState, status: int, size: int) -> dict:
        d = st.decision
        r = flow.request
        method = r.method
        return {
            "ts": datetime.now(UTC), "ref": st.ref, "username": st.who.user, "policy_group": st.who.group,
            "device": st.who.device, "client_ip": st.client_ip,
            "method": method[:16], "scheme": r.scheme[:8], "host": (st.host or r.pretty_host)[:255],
            "path": _text(r.path[:4000]) if method != "CONNECT" else "", "status": status, "bytes": size,
            "action": d.action.value if d else ("block" if st.blocked_by else "allow"),
            "category": (d.category if d else st.blocked_by or "uncategorised")[:64],
            "rule": (d.rule if d else st.blocked_by)[:120],
        }

    def _log(self, flow: http.HTTPFlow, status: int, size: int) -> None:
        st = state(flow)
        if st is None or self.rt.access_log is None:
            return
        self.rt.access_log.append(encode(self._row(flow, st, status, size)))
        metrics.REQUEST_SECONDS.observe(time.perf_counter() - st.started)
        metrics.ADDON_SECONDS.observe(st.addon_seconds)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        # Refused tunnels and tunnels passed through undecrypted have no inner requests to log.
        st = state(flow)
        if flow.response is not None:
            self._log(flow, flow.response.status_code, len(flow.response.raw_content or b""))
        elif st is not None and st.decision is not None:
            self._log(flow, 200, 0)

    def response(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        if resp is None or flow.request.method == "CONNECT":
            return
        raw = resp.raw_content
        size = len(raw) if raw is not None else int(resp.headers.get("content-length", 0) or 0)
        self._log(flow, resp.status_code, size)

    def error(self, flow: http.HTTPFlow) -> None:
        if flow.response is None:
            st = state(flow)
            if st is not None and st.blocked_by == "download":
                self._log(flow, 403, 0)  # a streamed executable cut off mid-flight
            else:
                self._log(flow, 502, 0)
