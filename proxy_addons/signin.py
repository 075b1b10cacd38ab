"""Who is behind each request, before anything decides on it: proxy credentials, then the
connection's earlier sign-in, then the client-IP table. A client nobody can name is filtered as
the default group, asked to sign in (407 with Negotiate/Basic), or sent to the captive portal, as
the policy's `identity.unidentified` says.

Credentials: `Negotiate` (Kerberos single sign-on, a local decrypt with the proxy's keytab, checked
here) and `Basic` (checked against the store's passwords or by an LDAP bind: slow, so checked in a
worker thread on a cache miss while the flow waits; the event loop carries on). The identity is
remembered for the client connection: requests inside a CONNECT tunnel carry no credentials.
"""

from __future__ import annotations

import asyncio
import base64
import html
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from mitmproxy import connection, exceptions, http
from mitmproxy.proxy.mode_specs import RegularMode, Socks5Mode, UpstreamMode

from esafety import metrics
from esafety.identity.resolver import MISS, BasicVerifier, Identity, IdentityResolver, VerifierUnavailable
from esafety.policy.engine import Engine
from esafety.policy.schema import IdentitySettings
from proxy_addons.flowstate import KEY, REQUEST_HEADERS, FlowState, read_headers
from proxy_addons.runtime import Runtime

log = logging.getLogger("esafety.proxy")
_EXPLICIT = (RegularMode, UpstreamMode, Socks5Mode)  # modes in which a client can answer a 407


@dataclass(frozen=True)
class Backends:
    """What one policy's identity section asks for, built once per policy."""

    settings: IdentitySettings
    basic: BasicVerifier | None
    basic_method: str  # the metric label: basic_local | basic_directory
    negotiate: Any  # esafety.identity.negotiate.NegotiateAcceptor | None
    challenges: tuple[tuple[bytes, bytes], ...]  # the 407's Proxy-Authenticate headers
    bypass: frozenset[str]  # hosts an unidentified client reaches without signing in


def build_backends(settings: IdentitySettings, resolver: IdentityResolver, school: str,
                   dashboard_host: str) -> Backends:
    """Raises NegotiateUnavailable (a keytab that cannot be read) or ValueError."""
    auth = settings.proxy_auth
    basic: BasicVerifier | None = None
    if auth.basic == "local":
        basic = resolver.local_verifier
    elif auth.basic == "directory" and settings.directory is not None:
        basic = _directory_verifier(settings, resolver)
    negotiate = None
    if auth.negotiate:
        from esafety.identity.negotiate import NegotiateAcceptor  # noqa: PLC0415 - gssapi only when asked for

        negotiate = NegotiateAcceptor(auth.keytab or "", auth.principal, auth.realms)
    challenges = []
    if negotiate is not None:
        challenges.append((b"Proxy-Authenticate", b"Negotiate"))
    if basic is not None:
        realm = f"{school} web filter".replace('"', "'")
        challenges.append((b"Proxy-Authenticate", f'Basic realm="{realm}", charset="UTF-8"'.encode()))
    return Backends(settings, basic, f"basic_{auth.basic}", negotiate, tuple(challenges),
                    frozenset({*settings.portal.bypass, dashboard_host.lower()}))


def _directory_verifier(settings: IdentitySettings, resolver: IdentityResolver) -> BasicVerifier:
    from esafety.identity.directory import DirectoryUnavailable  # noqa: PLC0415 - ldap3 only when asked for
    from esafety.identity.directory_bind import DirectoryBind  # noqa: PLC0415

    assert settings.directory is not None
    bind = DirectoryBind(settings.directory)

    def verify(username: str, password: str) -> Identity | None:
        try:
            ok = bind.verify(username, password, resolver.directory_dn(username))
        except DirectoryUnavailable as exc:
            raise VerifierUnavailable(str(exc)) from exc
        if not ok:
            return None
        # A directory account the sync has not brought in is known by name, filtered as the default group.
        return resolver.person(username) or Identity(username.lower(), resolver.default_group, None, "auth")

    return verify


class SignIn:
    def __init__(self, rt: Runtime):
        self.rt = rt
        self._conn: dict[str, Identity] = {}  # client connection id -> who signed in on it
        self._backends: Backends | None = None
        self._pending: dict[bytes, asyncio.Future[Identity | None]] = {}  # one check per credential at a time
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="proxy-signin")
        self._portal_key: bytes | None = None
        rt.prepare.append(self._prepare)

    # -- lifecycle ------------------------------------------------------------------------------------

    def configure(self, updated: set[str]) -> None:
        # After the runtime (before us in the chain) compiled the policy: a keytab that cannot be
        # read, or a directory section without its module, stops the start with the reason.
        if self.rt.engine is not None and self.rt.identity is not None:
            try:
                self._current()
            except Exception as exc:
                raise exceptions.OptionsError(f"esafety identity settings rejected: {exc}") from exc

    def done(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def client_disconnected(self, client: connection.Client) -> None:
        self._conn.pop(client.id, None)

    def _current(self) -> Backends:
        """The backends of the running policy (a reload builds its own first: _prepare)."""
        engine = self.rt.engine
        assert engine is not None
        b = self._backends
        if b is None or b.settings is not engine.policy.identity:
            b = self._backends = self._build(engine)
        return b

    def _prepare(self, engine: Engine) -> None:
        """A reload's new identity settings, built before the policy is swapped in: if they fail
        (a keytab that cannot be read), the reload is rejected and the running policy stays."""
        if self._backends is None or self._backends.settings is not engine.policy.identity:
            self._backends = self._build(engine)

    def _build(self, engine: Engine) -> Backends:
        resolver = self.rt.identity
        assert resolver is not None
        settings = engine.policy.identity
        b = build_backends(settings, resolver, engine.policy.school, urlsplit(self.rt.dashboard_url).hostname or "")
        if settings.unidentified != "default" and self._portal_key is None:
            from esafety.identity.portal import load_key  # noqa: PLC0415

            self._portal_key = load_key(self.rt.home)  # a damaged key file stops the start, not a request
        return b

    # -- hooks ----------------------------------------------------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> Any:
        return self._identify(flow, connect=True)

    def request(self, flow: http.HTTPFlow) -> Any:
        if flow.response is not None:  # answered already (e.g. replay)
            return None
        return self._identify(flow, connect=False)

    def _identify(self, flow: http.HTTPFlow, connect: bool) -> Any:
        t0 = time.perf_counter()
        resolver = self.rt.identity
        assert resolver is not None
        b = self._current()
        peer = flow.client_conn.peername
        ip = peer[0] if peer else ""
        headers = read_headers(flow.request.headers, REQUEST_HEADERS)  # deciding reads them next: one pass
        auth = headers.pop(b"proxy-authorization", None)  # the credential is not kept with the flow
        if auth is None:
            who = self._conn.get(flow.client_conn.id) or resolver.bound(ip)
        else:
            del flow.request.headers["Proxy-Authorization"]  # never sent upstream
            scheme, _, value = auth.partition(" ")
            scheme = scheme.lower()
            who = None
            if scheme == "basic" and b.basic is not None:
                key = resolver.digest(auth)
                hit = resolver.cached(key, time.monotonic())
                if hit is MISS:
                    return self._verify_later(flow, key, auth, b, ip, connect, t0, headers)
                who = hit  # type: ignore[assignment]
                metrics.PROXY_AUTH.labels(method=b.basic_method, result="cached").inc()
            elif scheme == "negotiate" and b.negotiate is not None:
                who = self._negotiate(b, resolver, value.strip(), ip)
            if who is not None:
                self._conn[flow.client_conn.id] = who
            elif b.settings.unidentified != "challenge":
                who = resolver.bound(ip)  # credentials we cannot use: as if none were sent
        self._settle(flow, who, b, ip, connect, t0, headers)
        return None

    async def _verify_later(self, flow: http.HTTPFlow, key: bytes, auth: str, b: Backends, ip: str,
                            connect: bool, t0: float, headers: dict[bytes, str]) -> None:
        resolver = self.rt.identity
        assert resolver is not None and b.basic is not None
        pending = self._pending.get(key)
        if pending is None:  # a browser opens several connections at once with the same credential
            pending = asyncio.get_running_loop().run_in_executor(
                self._pool, resolver.verify_basic, key, auth, b.basic, b.basic_method)
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        who = await asyncio.shield(pending)
        if who is not None:
            self._conn[flow.client_conn.id] = who
        elif b.settings.unidentified != "challenge":
            who = resolver.bound(ip)
        self._settle(flow, who, b, ip, connect, time.perf_counter(), headers, started=t0)

    def _negotiate(self, b: Backends, resolver: IdentityResolver, value: str, ip: str) -> Identity | None:
        started = time.perf_counter()
        try:
            token = base64.b64decode(value, validate=True)
        except ValueError:
            token = b""
        result = b.negotiate.accept(token) if token else None
        metrics.PROXY_AUTH_SECONDS.labels(method="negotiate").observe(time.perf_counter() - started)
        if result is None or result.username is None:
            metrics.PROXY_AUTH.labels(method="negotiate", result="rejected").inc()
            log.info("Kerberos sign-in rejected", extra={"fields": {
                "reason": result.reason if result else "not base64", "client_ip": ip,
                "principal": result.principal if result else None}})
            return None
        metrics.PROXY_AUTH.labels(method="negotiate", result="ok").inc()
        return resolver.person(result.username) or Identity(result.username, resolver.default_group, None, "auth")

    # -- unidentified clients ---------------------------------------------------------------------------

    def _settle(self, flow: http.HTTPFlow, who: Identity | None, b: Backends, ip: str, connect: bool, t0: float,
                headers: dict[bytes, str], started: float | None = None) -> None:
        resolver = self.rt.identity
        assert resolver is not None
        st = flow.metadata[KEY] = FlowState(who or resolver.unknown, started=started or t0, client_ip=ip,
                                            request_headers=headers)
        if who is None and b.settings.unidentified != "default" and not self._bypassed(flow.request.host, b):
            self._ask_to_sign_in(flow, st, b, connect)
        st.addon_seconds += time.perf_counter() - t0

    @staticmethod
    def _bypassed(host: str, b: Backends) -> bool:
        host = host.lower().rstrip(".")
        while host:
            if host in b.bypass:
                return True
            host = host.partition(".")[2]
        return False

    def _ask_to_sign_in(self, flow: http.HTTPFlow, st: FlowState, b: Backends, connect: bool) -> None:
        explicit = isinstance(flow.client_conn.proxy_mode, _EXPLICIT)
        school = self.rt.engine.policy.school if self.rt.engine else "School"
        if b.settings.unidentified == "challenge" and explicit and b.challenges:
            st.blocked_by = "signin"
            metrics.PROXY_AUTH_CHALLENGES.labels(how="challenge").inc()
            flow.response = http.Response.make(407, _page(school, "Sign in to use the internet",
                                                          "Your browser will ask for your school username and "
                                                          "password.", st.ref),
                                               [*b.challenges, (b"Content-Type", b"text/html; charset=utf-8"),
                                                (b"Cache-Control", b"no-store")])
            return
        # The portal: a browser's page (not a tunnel: its pages are redirected once decrypted; not
        # an app's API call, which could not show a page) goes to the sign-in page; the rest is
        # filtered as the default group meanwhile.
        r = flow.request
        if connect or r.method != "GET" or "text/html" not in (st.request_headers or {}).get(b"accept", ""):
            return
        from esafety.identity.portal import issue_token  # noqa: PLC0415

        assert self._portal_key is not None  # loaded with the backends
        token = issue_token(self._portal_key, st.client_ip, time.time())
        target = f"{self.rt.dashboard_url}/portal?t={token}&next={quote(r.pretty_url[:2000], safe='')}"
        st.blocked_by = "signin"
        metrics.PROXY_AUTH_CHALLENGES.labels(how="portal").inc()
        flow.response = http.Response.make(
            302, _page(school, "Sign in to use the internet", "Continue to the school sign-in page.", st.ref,
                       target), {"Location": target, "Content-Type": "text/html; charset=utf-8",
                                 "Cache-Control": "no-store"})


def _page(school: str, title: str, lead: str, ref: str, link: str | None = None) -> bytes:
    e = html.escape
    more = f'<p><a href="{e(link)}">Sign in</a></p>' if link else ""
    return (f"<!doctype html><html lang=en><meta charset=utf-8><title>{e(title)}</title>"
            f"<body style='font-family:sans-serif;max-width:40em;margin:3em auto'><h1>{e(title)}</h1>"
            f"<p>{e(school)}: {e(lead)}</p>{more}<p><small>Reference {e(ref)}</small></p></body></html>").encode()
