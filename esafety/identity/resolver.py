"""Who is behind a request, from in-memory tables: the client-IP table, the people, and verdicts
on proxy credentials.

The client-IP table (agents, WiFi registrations, RADIUS accounting, the captive portal) and the
people (the roster, directory and local accounts that are active) are copied into memory by a
background refresh, so resolving never waits on the database. Checking a Basic credential does
(argon2 is slow on purpose; an LDAP bind is a network round trip): `verify_basic` is for a worker
thread, and its verdict is remembered by a digest of the header, so the next request only looks
it up.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from esafety import metrics

log = logging.getLogger("esafety.identity")
STALE_SECONDS = 12 * 3600  # an earlier good verdict still counts this long while the directory is down


@dataclass(frozen=True, slots=True)
class Identity:
    user: str | None
    group: str
    device: str | None = None
    source: str = "unknown"  # auth | agent | wifi | radius | portal | static | unknown


class VerifierUnavailable(Exception):
    """The credential could not be checked (the directory is unreachable): neither yes nor no."""


# (username, password) -> the person's Identity, or None when the password is wrong.
BasicVerifier = Callable[[str, str], Identity | None]


@dataclass(frozen=True, slots=True)
class _Verdict:
    who: Identity | None
    fresh_until: float  # monotonic
    usable_until: float  # a good verdict outlives freshness while a new check cannot be made


class IdentityResolver:
    def __init__(self, database_url: str | None, default_group: str, refresh_seconds: float = 2.0,
                 auth_ttl: float = 300.0):
        self.database_url = database_url
        self._unknown = Identity(None, default_group)
        self.refresh_seconds = refresh_seconds
        self.auth_ttl = auth_ttl
        self._by_ip: dict[str, Identity] = {}
        self._people: dict[str, Identity] = {}  # active username -> Identity(source="auth")
        self._dns: dict[str, str] = {}  # active username -> the directory entry it binds as
        self._people_sig: tuple[object, ...] | None = None
        self._verdicts: dict[bytes, _Verdict] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- hot path --------------------------------------------------------------------------------

    def resolve(self, client_ip: str, proxy_authorization: str | None = None) -> Identity:
        """Credentials (checked here, blocking: not for the proxy's event loop), else the IP table."""
        if proxy_authorization:
            key = self.digest(proxy_authorization)
            who = self.cached(key, time.monotonic())
            if who is MISS:
                who = self.verify_basic(key, proxy_authorization, self.local_verifier)
            if who is not None and who is not MISS:
                return who  # type: ignore[return-value]
        return self._by_ip.get(client_ip, self._unknown)

    def bound(self, client_ip: str) -> Identity | None:
        """The person the client-IP table puts at this address, or None (unidentified)."""
        return self._by_ip.get(client_ip)

    @property
    def unknown(self) -> Identity:
        return self._unknown

    @property
    def default_group(self) -> str:
        return self._unknown.group

    @default_group.setter
    def default_group(self, group: str) -> None:  # a reload may rename it
        if group != self._unknown.group:
            self._unknown = Identity(None, group)

    def person(self, username: str) -> Identity | None:
        """An active person by username (as proxy sign-in names them), or None."""
        return self._people.get(username.lower())

    def directory_dn(self, username: str) -> str | None:
        return self._dns.get(username.lower())

    # -- verdicts on Basic credentials -------------------------------------------------------------

    @staticmethod
    def digest(header: str) -> bytes:
        return hashlib.sha256(header.encode("utf-8", "surrogateescape")).digest()

    def cached(self, key: bytes, now: float) -> Identity | None | object:
        """The remembered verdict (an Identity, or None for a wrong password), or MISS."""
        v = self._verdicts.get(key)
        return v.who if v is not None and v.fresh_until > now else MISS

    def verify_basic(self, key: bytes, header: str, verifier: BasicVerifier, method: str = "basic_local") \
            -> Identity | None:
        """Check a `Basic ...` header with `verifier` and remember the verdict (blocking).

        A wrong password is remembered as long as a right one: a browser repeats it on every
        request, and each retry would count towards the account's lockout in Active Directory."""
        now = time.monotonic()
        try:
            username, _, password = base64.b64decode(header.partition(" ")[2], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            metrics.PROXY_AUTH.labels(method=method, result="rejected").inc()
            return None
        started = time.perf_counter()
        try:
            who = verifier(username.strip(), password)
        except VerifierUnavailable as exc:
            metrics.PROXY_AUTH.labels(method=method, result="error").inc()
            old = self._verdicts.get(key)
            log.warning("proxy sign-in could not be checked", extra={"fields": {
                "method": method, "error": str(exc), "stale_verdict": bool(old and old.who)}})
            return old.who if old is not None and old.who is not None and old.usable_until > now else None
        metrics.PROXY_AUTH_SECONDS.labels(method=method).observe(time.perf_counter() - started)
        metrics.PROXY_AUTH.labels(method=method, result="ok" if who else "rejected").inc()
        if len(self._verdicts) > 50_000:  # a flood of made-up credentials must not grow without bound
            self._verdicts = {k: v for k, v in self._verdicts.items() if v.usable_until > now}
        self._verdicts[key] = _Verdict(who, now + self.auth_ttl, now + max(self.auth_ttl, STALE_SECONDS))
        return who

    def local_verifier(self, username: str, password: str) -> Identity | None:
        """The store's own (argon2) passwords: `esafety users add`."""
        if not self.database_url:
            return None
        from esafety.auth import verify_user  # noqa: PLC0415 - only the proxy process needs it

        user = verify_user(self.database_url, username, password)
        return Identity(user.username, user.policy_group, None, "auth") if user else None

    # -- background refresh ------------------------------------------------------------------------

    def set_bindings(self, bindings: dict[str, Identity]) -> None:
        self._by_ip = bindings  # one reference swap: readers see the old or the new table, whole

    def refresh(self) -> None:
        if not self.database_url:
            return
        from sqlalchemy import case, func, select  # noqa: PLC0415

        from esafety.store.db import sessions  # noqa: PLC0415
        from esafety.store.models import IpBinding, User  # noqa: PLC0415

        now = datetime.now(UTC)
        with sessions(self.database_url)() as s:
            rows = s.execute(
                select(IpBinding.ip, IpBinding.username, IpBinding.device, IpBinding.source, IpBinding.expires_at,
                       User.policy_group).join(User, User.username == IpBinding.username)
                .where(User.active.is_(True))
            ).all()
            # The people change a few times a day (imports, syncs): re-read them only then.
            sig = tuple(s.execute(select(func.count(), func.max(User.updated_at), func.max(User.created_at),
                                         func.sum(case((User.active.is_(True), 1), else_=0)))).one())
            people = None
            if sig != self._people_sig:
                people = s.execute(select(User.username, User.policy_group, User.source, User.directory_dn)
                                   .where(User.active.is_(True))).all()
        table = {}
        for ip, username, device, source, expires, group in rows:
            if expires is not None and (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) < now:
                continue
            table[ip] = Identity(username, group, device, source)
        self.set_bindings(table)
        for source, n in Counter(i.source for i in table.values()).items():
            metrics.IDENTITY_BINDINGS.labels(source=source).set(n)
        for source in {"agent", "wifi", "radius", "portal", "static"} - {i.source for i in table.values()}:
            metrics.IDENTITY_BINDINGS.labels(source=source).set(0)
        if people is not None:
            self._people = {u.lower(): Identity(u, g, None, "auth") for u, g, _, _ in people}
            self._dns = {u.lower(): dn for u, _, _, dn in people if dn}
            self._people_sig = sig
            counts = Counter(src for _, _, src, _ in people)
            for source in ("roster", "directory", "local"):
                metrics.IDENTITY_PEOPLE.labels(source=source).set(counts.get(source, 0))

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.refresh()
                except Exception as exc:  # keep the last good tables; the store may be briefly away
                    metrics.IDENTITY_REFRESH_FAILURES.inc()
                    log.warning("identity refresh failed", extra={"fields": {"error": str(exc)}})
                self._stop.wait(self.refresh_seconds)

        self._thread = threading.Thread(target=loop, name="identity-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


MISS = object()  # no verdict remembered for a credential
