"""Download controls: executables, installers, disk images, torrents (and archives of them) for pupils.

Headers decide first (extension, Content-Type, Content-Disposition filename); then magic bytes.
A buffered body is checked whole (zip contents too); a streamed large body is checked on its
first chunk, and the flow is killed if it is an executable, since its headers have already gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mitmproxy import http

from esafety import metrics
from esafety.policy.filetypes import by_content, by_headers
from esafety.policy.model import Decision
from esafety.policy.schema import Action
from proxy_addons import blockpage
from proxy_addons.flowstate import FlowState, state
from proxy_addons.runtime import Runtime


class Downloads:
    def __init__(self, rt: Runtime):
        self.rt = rt

    def _applies(self, st: FlowState | None) -> bool:
        engine = self.rt.engine
        return st is not None and engine is not None and not st.blocked_by and engine.checks_downloads(st.who.group)

    def _by_headers(self, flow: http.HTTPFlow, st: FlowState, resp: http.Response) -> str | None:
        assert self.rt.engine is not None
        headers = st.response_headers(resp)
        return by_headers(self.rt.engine.policy.downloads, flow.request.path.split("?", 1)[0],
                          headers.get(b"content-type", ""), headers.get(b"content-disposition", ""))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # Only a streamed body must be judged here: its headers go out right after this hook. A
        # buffered one (most pages) is judged whole in `response`, headers and content together.
        resp = flow.response
        if resp is None or not resp.stream:
            return
        st = state(flow)
        if not self._applies(st):
            return
        assert st is not None
        reason = self._by_headers(flow, st, resp)
        if reason:
            self._refuse_streamed(flow, st, reason)  # only a kill stops it now
        else:
            resp.stream = self._stream_guard(flow, st)

    def _stream_guard(self, flow: http.HTTPFlow, st: FlowState) -> Callable[[bytes], bytes | Iterable[bytes]]:
        rules = self.rt.engine.policy.downloads  # type: ignore[union-attr]
        first = True

        def guard(chunk: bytes) -> bytes:
            nonlocal first
            if first and chunk:
                first = False
                reason = by_content(rules, chunk, whole=False)
                if reason:
                    self._refuse_streamed(flow, st, reason)
                    return b""
            return chunk

        return guard

    def _refuse_streamed(self, flow: http.HTTPFlow, st: FlowState, reason: str) -> None:
        metrics.DOWNLOADS_BLOCKED.labels(reason="streamed").inc()
        st.blocked_by = "download"
        st.decision = Decision(Action.BLOCK, "download", f"download: {reason}", "")
        flow.kill()

    def response(self, flow: http.HTTPFlow) -> None:
        st = state(flow)
        if not self._applies(st) or flow.response is None or flow.response.stream:
            return
        assert st is not None and self.rt.engine is not None
        reason = self._by_headers(flow, st, flow.response)
        if not reason:
            body = st.body(flow.response)
            if body is None:  # undecodable content-encoding: judge the raw bytes
                body = flow.response.raw_content
            reason = by_content(self.rt.engine.policy.downloads, body or b"")
        if reason:
            self._block(flow, st, reason)

    def _block(self, flow: http.HTTPFlow, st: FlowState, reason: str) -> None:
        engine = self.rt.engine
        assert engine is not None
        clause = engine.policy.downloads.clause
        st.blocked_by = "download"
        st.decision = Decision(Action.BLOCK, "download", f"download: {reason}", clause)
        metrics.DOWNLOADS_BLOCKED.labels(reason=reason.split(" ", 1)[0]).inc()
        html = blockpage.render(school=engine.policy.school, url=flow.request.pretty_url,
                                category=f"Download not allowed ({reason})", clause=engine.policy.clause_text(clause),
                                ref=st.ref, review_url=f"{self.rt.dashboard_url}/review",
                                title="This download is blocked",
                                lead="Pupils may not download programs, installers, disk images or torrents.")
        flow.response = blockpage.response(html)
