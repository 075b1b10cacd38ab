"""When one of our own checks fails on a flow: the group's on_error, never an unchecked pass.

The chain calls this for any of our handlers that raises on a request, a response or a CONNECT,
whatever the check and wherever in it. A group that fails closed (pupils, unknown clients) gets
the block page with its reference (a CONNECT is refused, a streamed response cut off); one that
fails open goes on as if the check had passed, logged as such. A flow whose failure came before
it had a FlowState gets one for an unknown client, so the access log still records it.
"""

from __future__ import annotations

import logging

from mitmproxy import http

from esafety import metrics
from esafety.identity import Identity
from esafety.policy.model import Decision
from esafety.policy.schema import Action
from proxy_addons import blockpage
from proxy_addons.flowstate import KEY, FlowState, fails_open, state
from proxy_addons.runtime import Runtime

log = logging.getLogger("esafety.proxy")
GUARDED = frozenset({"request", "responseheaders", "response", "http_connect"})
_CLOSED = Decision(Action.BLOCK, "error", "fail-closed", "A1")
_OPEN = Decision(Action.ALLOW, "error", "fail-open", "A1")


class Failsafe:
    def __init__(self, rt: Runtime):
        self.rt = rt

    def __call__(self, hook: str, handler: str, flow: http.HTTPFlow) -> None:
        """Called inside the failed handler's `except` (the exception is logged from here)."""
        engine = self.rt.engine
        st = state(flow)
        if st is None:
            peer = flow.client_conn.peername
            group = engine.policy.default_group if engine else "unknown"
            st = flow.metadata[KEY] = FlowState(Identity(None, group), client_ip=peer[0] if peer else "")
        if st.blocked_by and st.blocked_by != "error":
            log.exception("add-on hook failed on a flow already refused",
                          extra={"fields": {"hook": hook, "handler": handler, "ref": st.ref}})
            return
        if engine is None:  # not configured: nothing to decide with, so nothing goes through
            metrics.FAIL_CLOSED.labels(outcome="blocked").inc()
            log.exception(f"{handler} ({hook}) failed", extra={"fields": {"ref": st.ref}})
            st.blocked_by = "error"
        elif fails_open(engine, st, f"{handler} ({hook})"):
            st.decision = st.decision or _OPEN
            return
        st.decision = _CLOSED
        if hook == "responseheaders":
            flow.kill()  # a streamed body's headers leave right after this hook: only a kill stops it
        elif engine is None:
            flow.response = http.Response.make(
                403, f"esafety: the web filter failed, so this is not shown. Reference {st.ref}\n".encode(),
                {"Content-Type": "text/plain"})
        else:
            flow.response = blockpage.response(blockpage.render(
                school=engine.policy.school, url=flow.request.pretty_url, category="Filter error",
                clause=engine.policy.clause_text("A1"), ref=st.ref, review_url=f"{self.rt.dashboard_url}/review",
                lead="The school's web filter could not check this page, so it is not shown."))
