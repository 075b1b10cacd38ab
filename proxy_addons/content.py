"""Content scanning: weighted phrases over HTML and text pages; over the threshold, the page is blocked."""

from __future__ import annotations

import time

from mitmproxy import http

from esafety import metrics
from esafety.policy.engine import Engine
from esafety.policy.model import Decision
from esafety.policy.phrases import PhraseScanner
from esafety.policy.schema import Action
from proxy_addons import blockpage
from proxy_addons.flowstate import FlowState, state
from proxy_addons.runtime import Runtime

_TEXT_TYPES = ("text/html", "text/plain", "application/xhtml")


class ContentScan:
    def __init__(self, rt: Runtime):
        self.rt = rt
        self._scanner: tuple[Engine, PhraseScanner] | None = None

    def scanner(self, engine: Engine) -> PhraseScanner:
        # Rebuilt only when the policy (engine) changes.
        if self._scanner is None or self._scanner[0] is not engine:
            self._scanner = (engine, PhraseScanner(engine.policy.phrases))
        return self._scanner[1]

    def response(self, flow: http.HTTPFlow) -> None:
        t0 = time.perf_counter()
        st = state(flow)
        engine = self.rt.engine
        resp = flow.response
        if st is None or engine is None or resp is None or st.blocked_by or resp.stream:
            return
        if not engine.scans_pages(st.who.group):
            return
        content_type = st.response_headers(resp).get(b"content-type", "")
        if not content_type.startswith(_TEXT_TYPES):
            return
        body = st.body(resp)
        if not body:
            return  # empty, or an undecodable content-encoding: nothing readable to scan
        scanner = self.scanner(engine)  # if scanning raises, the chain's failsafe applies on_error
        # scan_html reads only the first max_bytes itself: no copy of the body here
        result = scanner.scan_html(body, content_type.partition("charset=")[2].strip() or "utf-8")
        metrics.CONTENT_SCANNED_BYTES.inc(min(len(body), scanner.max_bytes))
        if result.over(scanner.threshold):
            cat = engine.policy.categories.get(result.category)
            st.blocked_by = "phrases"
            metrics.DECISIONS.labels(action="block", category=result.category).inc()
            self._block(flow, st, Decision(Action.BLOCK, result.category, f"phrases:{result.score}",
                                           engine.policy.phrases.clause), cat.title if cat else result.category,
                        "The school's web filter found content on this page that is not allowed.")
            if cat and cat.incident and self.rt.writer:
                from esafety.incidents.model import IncidentReport

                self.rt.writer.raise_incident(IncidentReport(
                    source="proxy", category=cat.name, level=cat.level,
                    summary=f"{cat.title}: page blocked by phrase score {result.score}",
                    subject=st.who.user, device=st.who.device,
                    client_ip=st.client_ip or None,
                    evidence={"url": flow.request.pretty_url[:2000], "score": result.score,
                              "phrases": [{"phrase": p, "weight": w, "excerpt": e} for p, w, e in result.matches]},
                    key=f"proxy-{st.ref}-phrases", ref=st.ref))
        st.addon_seconds += time.perf_counter() - t0

    def _block(self, flow: http.HTTPFlow, st: FlowState, d: Decision, title: str, lead: str) -> None:
        engine = self.rt.engine
        assert engine is not None
        st.decision = d
        flow.response = blockpage.response(blockpage.render(
            school=engine.policy.school, url=flow.request.pretty_url, category=title,
            clause=engine.policy.clause_text(d.clause), ref=st.ref, review_url=f"{self.rt.dashboard_url}/review",
            lead=lead))
