"""Apply the policy to each request: decide, then block, warn, rewrite (safe search) or let through.

Also: CONNECT only to the ports the policy allows; hosts on the no-inspect list (banking, health)
and all hosts when interception is off are decided on the SNI alone and never decrypted.
If deciding raises, the group's on_error applies (proxy_addons/failsafe.py): pupils get the block
page (fail closed).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import time
from urllib.parse import parse_qsl, urlencode

from mitmproxy import ctx as mctx
from mitmproxy import http, tls
from mitmproxy.net.http import url
from mitmproxy.proxy.mode_specs import RegularMode, Socks5Mode, UpstreamMode

from esafety import metrics
from esafety.incidents.model import IncidentReport
from esafety.policy.model import Decision, Flag, Request
from esafety.policy.schema import Action
from proxy_addons import blockpage
from proxy_addons.flowstate import REQUEST_HEADERS, FlowState, read_headers, state
from proxy_addons.runtime import Runtime

log = logging.getLogger("esafety.proxy")

_WARNED_PARAM = "esafety-continue"
_EXPLICIT = (RegularMode, UpstreamMode, Socks5Mode)  # modes where the client names where to go
_STRICTER = {Action.ALLOW: 0, Action.REWRITE: 1, Action.FLAG: 2, Action.WARN: 3, Action.BLOCK: 4}


def _hosts(flow: http.HTTPFlow, host_header: str | None) -> tuple[str, ...]:
    """The hosts a request's fate depends on, the one to report first: where mitmproxy connects
    (`request.host`) and the host the Host header names to the origin, if another.

    An explicit proxy's HTTP/1 absolute-form request (`GET http://a/ ...` with `Host: b`) goes to
    `a`: its Host header is replaced with `a`, as RFC 9112 3.2.2 asks of a proxy (deciding on `b`
    let a pupil reach any blocked site by naming an allowed one). Transparent interception gives
    only the address the client dialled: the Host header names the site, and the request is sent
    to that name, not to the address (else a blocked site's address with an allowed Host would
    pass: squid's host-header forgery). Otherwise (in a tunnel: domain fronting) both are decided
    on and the stricter decision wins.
    """
    r = flow.request
    target = r.host
    if not host_header or host_header == target or (  # or "target:port", the usual case
            host_header.startswith(target) and host_header[len(target)] == ":"
            and host_header[len(target) + 1:].isdigit()):
        return (target,)
    named = url.parse_authority(host_header, check=False)[0]
    if named == target:
        return (target,)
    explicit = isinstance(flow.client_conn.proxy_mode, _EXPLICIT)
    if explicit and not flow.client_conn.tls_established and not (r.is_http2 or r.is_http3):
        r.host_header = url.hostport(r.scheme, target, r.port)  # absolute-form (not in a TLS tunnel)
        return (target,)
    if not explicit:
        try:
            ipaddress.ip_address(target)
        except ValueError:
            pass
        else:
            r.host = named  # mitmproxy connects to request.host; this setter also rewrites Host
            r.host_header = host_header
            return (named,)
    return (named, target)


class Filtering:
    def __init__(self, rt: Runtime):
        self.rt = rt

    # -- CONNECT and TLS ------------------------------------------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        assert self.rt.engine is not None
        st = state(flow)  # who: proxy_addons/signin.py, which may have answered already (407)
        if flow.response is not None or st is None:
            return
        policy = self.rt.engine.policy
        if flow.request.port not in policy.circumvention.connect_ports:
            st.blocked_by = "port"
            metrics.BAD_REQUESTS.labels(reason="connect_port").inc()
            clause = policy.clause_text(policy.categories["web_proxies"].clause)
            flow.response = http.Response.make(
                403, f"esafety: CONNECT to port {flow.request.port} is not allowed. {clause} "
                     f"Reference {st.ref}\n".encode(), {"Content-Type": "text/plain"})
            self._incident(st, "web_proxies", 2, f"CONNECT to port {flow.request.port} refused",
                           {"host": flow.request.host, "port": flow.request.port}, flow)
            return
        if self._passthrough(flow.request.host):
            d = self._decide(flow, st, sni_only=True)
            if d.action is Action.BLOCK:
                flow.response = http.Response.make(
                    403, f"esafety: {flow.request.host} is blocked ({d.category}). Reference {st.ref}\n".encode(),
                    {"Content-Type": "text/plain"})

    def _passthrough(self, host: str) -> bool:
        assert self.rt.engine is not None
        return not mctx.options.esafety_intercept or self.rt.engine.no_inspect(host)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        sni = data.client_hello.sni or ""
        server = data.context.server.address
        host = sni or (server[0] if server else "")
        if host and self._passthrough(host):
            data.ignore_connection = True  # forwarded encrypted; the CONNECT/SNI decision already ran
            if sni and server and not isinstance(data.context.client.proxy_mode, _EXPLICIT) \
                    and not data.context.server.connected:
                # Transparent: to the name decided on, not the address dialled (see _hosts).
                data.context.server.address = (sni, server[1])

    # -- requests -------------------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        t0 = time.perf_counter()
        if flow.response is not None:  # answered already (replay, or sign-in asked for); nothing to decide
            return
        st = state(flow)  # who: proxy_addons/signin.py
        if st is None:
            return
        r = flow.request
        headers = st.request_headers or read_headers(r.headers, REQUEST_HEADERS)
        metrics.REQUESTS.labels(r.scheme).inc()
        d = self._decide(flow, st, sni_only=False, headers=headers)
        if d.action is Action.BLOCK:
            self._block(flow, st, d)
        elif d.action is Action.WARN:
            self._warn(flow, st, d)
        elif d.rewrite is not None:
            self._rewrite(flow, d)
        st.addon_seconds += time.perf_counter() - t0

    def _decide(self, flow: http.HTTPFlow, st: FlowState, sni_only: bool,
                headers: dict[bytes, str] | None = None) -> Decision:
        engine = self.rt.engine
        assert engine is not None
        r = flow.request
        if headers is None:
            headers = read_headers(r.headers, REQUEST_HEADERS)
        hosts: tuple[str, ...]
        if sni_only:
            hosts, path, query = (r.host,), "/", ""
        else:
            hosts = _hosts(flow, headers.get(b"host"))
            path, _, query = r.path.partition("?")
        req = Request(
            method=r.method, scheme=r.scheme, host=hosts[0], port=r.port, path=path, query=query,
            content_type=headers.get(b"content-type", ""), accept=headers.get(b"accept", ""),
            client_ip=st.client_ip,
        )
        t0 = time.perf_counter()
        d = engine.decide(req, st.who)  # if it raises, the chain's failsafe applies the group's on_error
        st.host = hosts[0]
        for other in hosts[1:]:  # the stricter decision wins
            alt = engine.decide(dataclasses.replace(req, host=other), st.who)
            if _STRICTER[alt.action] > _STRICTER[d.action]:
                d, st.host = alt, other
        metrics.DECISION_SECONDS.observe(time.perf_counter() - t0)
        metrics.DECISIONS.labels(d.action.value, d.category).inc()
        st.decision = d
        self._incidents_for(flow, st, d)
        return d

    def _incidents_for(self, flow: http.HTTPFlow, st: FlowState, d: Decision) -> None:
        engine = self.rt.engine
        assert engine is not None
        if d.flags:
            url = flow.request.pretty_url  # only when there is an incident: it costs ~6 us
            for f in d.flags:
                self._incident(st, f.category, f.level, _summary(f), {"url": url[:2000], "reason": f.reason,
                                                                      "query": f.evidence}, flow)
            return
        cat = engine.policy.categories.get(d.category)
        if cat and cat.incident and d.action in (Action.BLOCK, Action.FLAG):
            url = flow.request.pretty_url
            verb = "blocked" if d.action is Action.BLOCK else "visited"
            self._incident(st, cat.name, cat.level, f"{cat.title}: {verb} {flow.request.pretty_host[:200]}",
                           {"url": url[:2000], "rule": d.rule, "action": d.action.value}, flow)

    def _incident(self, st: FlowState, category: str, level: int, summary: str, evidence: dict,
                  flow: http.HTTPFlow) -> None:
        if self.rt.writer is None:
            return
        self.rt.writer.raise_incident(IncidentReport(
            source="proxy", category=category, level=level, summary=summary, subject=st.who.user,
            device=st.who.device, client_ip=st.client_ip or None,
            evidence={**evidence, "group": st.who.group, "ref": st.ref}, key=f"proxy-{st.ref}-{category}",
            ref=st.ref,
        ))

    def _page(self, flow: http.HTTPFlow, st: FlowState, d: Decision, **kw: object) -> str:
        engine = self.rt.engine
        assert engine is not None
        cat = engine.policy.categories.get(d.category)
        clause = d.clause or (cat.clause if cat else "")
        return blockpage.render(
            school=engine.policy.school, url=flow.request.pretty_url, category=cat.title if cat else d.category,
            clause=engine.policy.clause_text(clause), ref=st.ref,
            review_url=f"{self.rt.dashboard_url}/review", **kw,  # type: ignore[arg-type]
        )

    def _block(self, flow: http.HTTPFlow, st: FlowState, d: Decision) -> None:
        st.blocked_by = st.blocked_by or "policy"
        flow.response = blockpage.response(self._page(flow, st, d))

    def _warn(self, flow: http.HTTPFlow, st: FlowState, d: Decision) -> None:
        q = flow.request.query
        if q.get(_WARNED_PARAM) == "1":
            q.pop(_WARNED_PARAM)  # the user chose to continue; logged as a warn that was passed
            return
        sep = "&" if "?" in flow.request.pretty_url else "?"
        html = self._page(flow, st, d, title="Are you sure?", lead="This page is outside what the school "
                          "expects at this time. You may continue; the visit is logged.",
                          continue_url=f"{flow.request.pretty_url}{sep}{_WARNED_PARAM}=1")
        flow.response = blockpage.response(html, status=403)
        flow.response.headers["X-Esafety-Decision"] = "warn"

    def _rewrite(self, flow: http.HTTPFlow, d: Decision) -> None:
        assert d.rewrite is not None
        if d.rewrite.params:
            path, _, query = flow.request.path.partition("?")
            forced = dict(d.rewrite.params)
            items = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in forced]
            flow.request.path = f"{path}?{urlencode(items + list(d.rewrite.params))}"
        for k, v in d.rewrite.headers:
            flow.request.headers[k] = v


def _summary(f: Flag) -> str:
    return f"Search watched for {f.category.replace('_', ' ')}" if f.reason == "search-term" else f.reason
