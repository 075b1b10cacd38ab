"""What the engine is asked (Request) and what it answers (Decision): plain typed values."""

from __future__ import annotations

from dataclasses import dataclass

from esafety.policy.schema import Action


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    scheme: str
    host: str  # as the client named it; the engine normalises
    port: int
    path: str  # without the query
    query: str = ""  # raw query string, without '?'
    content_type: str = ""
    accept: str = ""
    client_ip: str = ""
    sni: str = ""


@dataclass(frozen=True, slots=True)
class Flag:
    """A safeguarding or circumvention concern seen in a request, to become an incident."""

    category: str
    level: int
    reason: str  # search-term | phrases | rule | download
    evidence: str


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Safe search: query parameters to force and headers to set before the request goes upstream."""

    params: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    category: str
    rule: str
    clause: str
    flags: tuple[Flag, ...] = ()
    rewrite: Rewrite | None = None

    @property
    def blocked(self) -> bool:
        return self.action is Action.BLOCK
