"""Password hashing (argon2id) and checking a user's credentials against the store.

People synced from the directory (LDAP / AD) have no local password: with the policy's
identity.directory settings given, they are checked by an LDAP bind as themselves instead.
"""

from __future__ import annotations

import logging
import secrets
from functools import cache
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select

from esafety.store.db import sessions
from esafety.store.models import User

if TYPE_CHECKING:
    from esafety.policy.schema import DirectorySettings

log = logging.getLogger("esafety.auth")
_hasher = PasswordHasher()


@cache
def _dummy() -> str:
    # Verifying against this keeps the time of an unknown user equal to a known one's. Made on first
    # use, not at import: every `esafety` command imports this module, and a hash takes ~0.3 s.
    return _hasher.hash("not-a-password")


class DirectoryUnreachable(Exception):
    """The password is the directory's and the directory cannot be asked: neither yes nor no."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def checked_by_directory(user: User) -> bool:
    """A person whose password is the directory's: synced from it, or linked to it, with no local one."""
    return not user.password_hash and (user.source == "directory" or user.directory_dn is not None)


def verify_user(database_url: str, username: str, password: str,
                directory: DirectorySettings | None = None) -> User | None:
    """The active user if the password is theirs, else None. Raises DirectoryUnreachable when the
    password is the directory's and the directory does not answer (so the sign-in page can say so,
    and the attempt does not count towards the account's lockout)."""
    with sessions(database_url)() as s:
        # Case-insensitive, as the proxy and the imports treat usernames (a directory's are lower-cased).
        user = s.scalar(select(User).where(func.lower(User.username) == username.lower(), User.active.is_(True)))
    by_directory = user is not None and directory is not None and checked_by_directory(user)
    try:
        # Always one argon2 verify, directory people included, so the time does not tell who exists.
        _hasher.verify(user.password_hash if user and user.password_hash else _dummy(), password)
    except (VerificationError, InvalidHashError):
        if not by_directory:
            return None
    if not by_directory:
        return user if user and user.password_hash else None
    assert user is not None and directory is not None
    from esafety.identity.directory import DirectoryUnavailable  # noqa: PLC0415 - ldap3 on demand
    from esafety.identity.directory_bind import directory_bind  # noqa: PLC0415

    try:
        ok = directory_bind(directory).verify(user.username, password, user.directory_dn)
    except DirectoryUnavailable as exc:
        log.warning("directory sign-in could not be checked", extra={"fields": {"error": str(exc)}})
        raise DirectoryUnreachable(str(exc)) from exc
    return user if ok else None
