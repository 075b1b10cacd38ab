"""Password hashing (argon2id) and checking a user's credentials against the store."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from esafety.store.db import sessions
from esafety.store.models import User

_hasher = PasswordHasher()
# Verifying against this keeps the time of an unknown user equal to a known one's.
_DUMMY = _hasher.hash("not-a-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def verify_user(database_url: str, username: str, password: str) -> User | None:
    with sessions(database_url)() as s:
        user = s.scalar(select(User).where(User.username == username, User.active.is_(True)))
    try:
        _hasher.verify(user.password_hash if user and user.password_hash else _DUMMY, password)
    except (VerificationError, InvalidHashError):
        return None
    return user if user and user.password_hash else None
