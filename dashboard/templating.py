"""Jinja2 for the server-rendered pages: autoescape always on (evidence is attacker-controlled).

`render(request, "page.html", {...}, user)` adds the user, a `csrf_field()` helper for forms and
the security headers. Templates extend base.html.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from dashboard.security import CurrentUser, security_headers

HERE = Path(__file__).resolve().parent
# autoescape=True for every template whatever its extension; StrictUndefined catches typos in tests.
_env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined)


def _when(dt: datetime | None) -> str:
    if dt is None:
        return ""
    dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _age(dt: datetime | None) -> str:
    if dt is None:
        return ""
    dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    secs = int((datetime.now(UTC) - dt).total_seconds())
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= n:
            return f"{secs // n}{unit}"
    return f"{max(secs, 0)}s"


_env.filters["when"] = _when
_env.filters["age"] = _age
templates = Jinja2Templates(env=_env)


def render(request: Request, name: str, context: dict[str, Any], user: CurrentUser | None = None,
           status_code: int = 200) -> Any:
    token = user.csrf_token if user else None

    def csrf_field() -> Markup:
        return Markup('<input type="hidden" name="csrf_token" value="{}">').format(escape(token or ""))

    ctx = {"user": user, "csrf_field": csrf_field, **context}
    response = templates.TemplateResponse(request, name, ctx, status_code=status_code)
    return security_headers(response)
