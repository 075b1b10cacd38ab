"""The access log: one row per request (and per refused CONNECT), handed to the batch writer.

No I/O here: the writer thread writes JSON lines and the store.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from mitmproxy import http

from esafety import metrics
from proxy_addons.flowstate import FlowState, state
from proxy_addons.runtime import Runtime


class AccessLog:
    def __init__(self, rt: Runtime):
        self.rt = rt

    def _row(self, flow: http.HTTPFlow, st: FlowState, status: int, size: int) -> dict:
        d = st.decision
        r = flow.request
        method = r.method
        return {
            "ts": datetime.now(UTC), "ref": st.ref, "username": st.who.user, "policy_group": st.who.group,
            "device": st.who.device, "client_ip": flow.client_conn.peername[0] if flow.client_conn.peername else "",
            "method": method[:16], "scheme": r.scheme[:8], "host": (st.host or r.pretty_host)[:255],
            "path": r.path[:4000] if method != "CONNECT" else "", "status": status, "bytes": size,
            "action": d.action.value if d else ("block" if st.blocked_by else "allow"),
            "category": (d.category if d else st.blocked_by or "uncategorised")[:64],
            "rule": (d.rule if d else st.blocked_by)[:120],
        }

    def _log(self, flow: http.HTTPFlow, status: int, size: int) -> None:
        st = state(flow)
        if st is None or self.rt.writer is None:
            return
        self.rt.writer.log_access(self._row(flow, st, status, size))
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
