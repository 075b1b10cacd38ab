"""Pupils with a year and tutor group, as the roster import leaves them in `users`."""

from __future__ import annotations

from sqlalchemy import update

from esafety.store.db import sessions
from esafety.store.models import User


def add_pupil(database_url: str, username: str, year: int | None, tutor: str = "", name: str = "") -> None:
    with sessions(database_url)() as s:
        s.add(User(username=username, display_name=name, policy_group=f"year{year}" if year else "default",
                   source="roster", year_group=year, tutor_group=tutor))
        s.commit()


def move_pupil(database_url: str, username: str, year: int | None, tutor: str) -> None:
    """The next roster import: the pupil has gone up a year."""
    with sessions(database_url)() as s:
        s.execute(update(User).where(User.username == username).values(year_group=year, tutor_group=tutor))
        s.commit()
