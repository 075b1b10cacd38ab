"""Checking a person's password by binding to the directory as them: the sign-in check for
people without a local password (proxy Basic, the dashboard, the captive portal). It blocks: the
proxy calls it off the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar

import ldap3
from ldap3.core.exceptions import (
    LDAPBindError,
    LDAPCommunicationError,
    LDAPException,
    LDAPSessionTerminatedByServerError,
)
from ldap3.utils.conv import escape_filter_chars

from esafety.identity.directory import (
    BUSY,
    INVALID_CREDENTIALS,
    UNAVAILABLE,
    DirectoryError,
    DirectoryUnavailable,
    clean_dn,
    ldap_connection,
    ldap_server,
    read_bind_password,
    server_said,
    unreachable_message,
)
from esafety.policy.schema import DirectorySettings

log = logging.getLogger("esafety.identity.directory")
_T = TypeVar("_T")


# -- sign-in by bind ----------------------------------------------------------------------------------


class DirectoryBind:
    """Checks a person's password by binding as them. Thread-safe; keeps a few connections open.

    A failed bind counts towards the account's lockout in AD, and a browser repeats a wrong
    password on every request: a refused (dn, password) is remembered for `negative_ttl` seconds
    (as a keyed digest, never the password) and answered False without asking the server again.
    """

    def __init__(self, settings: DirectorySettings, pool_size: int = 4, negative_ttl: float = 30.0):
        self.settings = settings
        self._pool: queue.LifoQueue[ldap3.Connection] = queue.LifoQueue(maxsize=pool_size)
        self._dn_filter = f"(&{_wrap(settings.user_filter)}({settings.username_attribute}={{}}))"
        self._negative_ttl = negative_ttl
        self._refused: dict[bytes, float] = {}
        self._refused_lock = threading.Lock()
        self._key = os.urandom(32)

    def verify(self, username: str, password: str, dn: str | None = None) -> bool:
        """True if the directory accepts the password; False if it refuses it, or knows no such person.

        Raises DirectoryUnavailable when it cannot be asked (down, timeout, service account refused)."""
        # An empty password is an unauthenticated bind (RFC 4513 5.1.2), which AD and many servers
        # answer with success: never send one.
        if not password or not username or "\x00" in password:
            return False
        digest = hmac.new(self._key, f"{username}\x00{dn}\x00{password}".encode(), hashlib.sha256).digest()
        if self._recently_refused(digest):
            return False
        ok = self._with_connection(lambda conn: self._bind(conn, username, password, dn))
        if not ok:
            with self._refused_lock:
                if len(self._refused) > 10_000:
                    self._refused.clear()
                self._refused[digest] = time.monotonic() + self._negative_ttl
        return ok

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait().unbind()
            except queue.Empty:
                return
            except LDAPException:
                continue

    # -- inside --------------------------------------------------------------------------------------

    def _recently_refused(self, digest: bytes) -> bool:
        with self._refused_lock:
            until = self._refused.get(digest)
            if until is None:
                return False
            if until < time.monotonic():
                del self._refused[digest]
                return False
            return True

    def _with_connection(self, work: Callable[[ldap3.Connection], _T]) -> _T:
        # A pooled connection may have been closed by the server (AD drops idle ones after 15 min):
        # one retry on a fresh connection before calling the directory unavailable.
        for attempt in (1, 2):
            try:
                conn = self._pool.get_nowait()
            except queue.Empty:
                # A new Server each time: ldap3's remembers an address that failed and skips it for a while.
                conn = ldap_connection(self.settings, ldap_server(self.settings))  # raises DirectoryUnavailable
            try:
                value = work(conn)
            except LDAPCommunicationError as exc:
                _close(conn)
                if attempt == 2:
                    raise DirectoryUnavailable(unreachable_message(self.settings, exc)) from exc
                continue
            except DirectoryError as exc:  # the service account's bind, for find_dn: cannot check now
                _close(conn)
                raise DirectoryUnavailable(str(exc)) from exc
            except BaseException:
                _close(conn)
                raise
            try:
                self._pool.put_nowait(conn)
            except queue.Full:
                _close(conn)
            return value
        raise AssertionError("unreachable")

    def _bind(self, conn: ldap3.Connection, username: str, password: str, dn: str | None) -> bool:
        if dn is None:
            dn = self._find_dn(conn, username)
            if dn is None:
                return False
        if _rebind(conn, dn, password):
            return True
        code = (conn.result or {}).get("result")
        if code in (BUSY, UNAVAILABLE):
            raise DirectoryUnavailable(
                f"the directory at {self.settings.url} is not serving binds: {server_said(conn)}")
        if code != INVALID_CREDENTIALS:
            log.info("directory refused a sign-in", extra={"fields": {"result": server_said(conn)}})
        return False

    def _find_dn(self, conn: ldap3.Connection, username: str) -> str | None:
        """The DN of `username` under user_bases, found by the service account; None if not exactly one."""
        password = read_bind_password(self.settings)
        if not _rebind(conn, self.settings.bind_dn or None, password or None):
            raise DirectoryError(f"bind refused for the service account {self.settings.bind_dn!r} at "
                                 f"{self.settings.url}: {server_said(conn)}")
        found: list[str] = []
        flt = self._dn_filter.format(escape_filter_chars(username))
        for base in self.settings.user_bases:
            conn.search(clean_dn(base), flt, ldap3.SUBTREE, attributes=["1.1"], size_limit=2)  # 1.1: no attributes
            found.extend(e["dn"] for e in conn.response or [] if e.get("type") == "searchResEntry")
        return found[0] if len(found) == 1 else None


def _rebind(conn: ldap3.Connection, user: str | None, password: str | None) -> bool:
    try:
        return bool(conn.rebind(user=user, password=password, read_server_info=False))
    except LDAPBindError as exc:  # ldap3's word, in a rebind, for "the server closed the connection"
        raise LDAPSessionTerminatedByServerError(str(exc)) from exc


def _wrap(flt: str) -> str:
    flt = flt.strip()
    return flt if flt.startswith("(") else f"({flt})"


def _close(conn: ldap3.Connection) -> None:
    with contextlib.suppress(LDAPException):
        conn.unbind()


@lru_cache(maxsize=8)
def directory_bind(settings: DirectorySettings) -> DirectoryBind:
    """One DirectoryBind (and its connection pool) per directory configuration, per process."""
    return DirectoryBind(settings)
