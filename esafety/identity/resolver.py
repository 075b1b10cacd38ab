"""Who is behind a request: proxy authentication, then the client-IP table, then the default group.

The client-IP table (agents, WiFi registrations) is copied into memory by a background refresh,
so resolving never waits on the database. Proxy credentials are verified once (argon2 is slow
on purpose) and the result cached by a digest of the header.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

log = logging.getLogger("esafety.identity")


@dataclass(frozen=True, slots=True)
class Identity:
    user: str | None
    group: str
    device: str | None = None
    source: str = "unknown"  # auth | agent | wifi | static | unknown


class IdentityResolver:
    def __init__(self, database_url: str | None, default_group: str, refresh_seconds: float = 2.0,
                 auth_ttl: float = 300.0):
        self.database_url = database_url
        self.default_group = default_group
        self.refresh_seconds = refresh_seconds
        self.auth_ttl = auth_ttl
        self._by_ip: dict[str, Identity] = {}
        self._auth: dict[bytes, tuple[float, Identity | None]] = {}
        self._unknown = Identity(None, default_group)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- hot path --------------------------------------------------------------------------------

    def resolve(self, client_ip: str, proxy_authorization: str | None = None) -> Identity:
        if proxy_authorization:
            who = self._from_auth(proxy_authorization)
            if who is not None:
                return who
        return self._by_ip.get(client_ip, self._unknown)

    def _from_auth(self, header: str) -> Identity | None:
        key = hashlib.sha256(header.encode()).digest()
        hit = self._auth.get(key)
        now = time.monotonic()
        if hit and hit[0] > now:
            return hit[1]
        who = self._verify(header)
        self._auth[key] = (now + self.auth_ttl, who)
        return who

    def _verify(self, header: str) -> Identity | None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not self.database_url:
            return None
        try:
            username, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
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
        from sqlalchemy import select  # noqa: PLC0415

        from esafety.store.db import sessions  # noqa: PLC0415
        from esafety.store.models import IpBinding, User  # noqa: PLC0415

        now = datetime.now(UTC)
        with sessions(self.database_url)() as s:
            rows = s.execute(
                select(IpBinding.ip, IpBinding.username, IpBinding.device, IpBinding.source, IpBinding.expires_at,
                       User.policy_group).join(User, User.username == IpBinding.username)
            ).all()
        table = {}
        for ip, username, device, source, expires, group in rows:
            if expires is not None and (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) < now:
                continue
            table[ip] = Identity(username, group, device, source)
        self.set_bindings(table)

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.refresh()
                except Exception as exc:  # keep the last good table; the store may be briefly away
                    log.warning("identity refresh failed", extra={"fields": {"error": str(exc)}})
                self._stop.wait(self.refresh_seconds)

        self._thread = threading.Thread(target=loop, name="identity-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
