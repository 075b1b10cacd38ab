"""The AUP policy as typed, immutable objects. The loader builds these once; the engine only reads them."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import time


class Action(enum.StrEnum):
    ALLOW = "allow"
    BLOCK = "block"
    FLAG = "flag"  # allow, and raise an incident
    WARN = "warn"  # an interstitial the user may click through (logged)
    REWRITE = "rewrite"  # allowed after forcing safe search


KCSIE = ("content", "contact", "conduct", "commerce")
QUEUES = ("dsl", "it_services", "esafety_coordinator")


@dataclass(frozen=True)
class Clause:
    id: str
    text: str


@dataclass(frozen=True)
class Group:
    name: str
    description: str
    parents: tuple[str, ...]
    # Fail closed (block) when deciding raises; staff may be configured open.
    on_error: Action
    youtube_restrict: str | None  # "Strict" | "Moderate" | None
    # All names this group answers to: itself and its ancestors, for rule matching.
    lineage: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: time
    end: time


@dataclass(frozen=True)
class Schedule:
    name: str
    windows: tuple[Window, ...]


@dataclass(frozen=True)
class Category:
    name: str
    title: str
    clause: str
    kcsie: str
    level: int  # incident risk level when this category raises one
    safeguarding: bool  # a concern for the DSL, not just a filtering matter
    incident: bool  # a block or flag in this category raises an incident (safeguarding, circumvention)
    lists: tuple[str, ...]  # domain list files (resolved paths)
    list_format: str
    domains: tuple[str, ...]  # inline domains
    url_prefixes: tuple[str, ...]  # "host/path" prefixes
    regexes: tuple[re.Pattern[str], ...]  # over "host/path?query"


@dataclass(frozen=True)
class Rule:
    id: str
    groups: frozenset[str]  # empty: every group
    categories: frozenset[str]  # empty: every request
    action: Action
    clause: str
    when: str | None = None  # schedule name the rule applies in
    unless: str | None = None  # schedule name the rule does not apply in


@dataclass(frozen=True)
class SafeSearch:
    enforce_for: frozenset[str]  # groups
    google: bool = True
    bing: bool = True
    duckduckgo: bool = True
    youtube: bool = True


@dataclass(frozen=True)
class Circumvention:
    connect_ports: frozenset[int]
    doh_by_shape: bool
    doh_canary: bool
    web_proxy_patterns: tuple[re.Pattern[str], ...]
    ip_literals_category: str = "ip_literal"


@dataclass(frozen=True)
class Downloads:
    block_for: frozenset[str]
    extensions: frozenset[str]
    content_types: frozenset[str]
    magic: bool
    inspect_archives: bool
    clause: str


@dataclass(frozen=True)
class PhraseList:
    name: str
    category: str
    phrases: tuple[tuple[str, int], ...]  # (phrase, weight)


@dataclass(frozen=True)
class Phrases:
    scan_for: frozenset[str]
    threshold: int
    max_bytes: int
    lists: tuple[PhraseList, ...]
    clause: str


@dataclass(frozen=True)
class WatchList:
    name: str  # e.g. self_harm
    category: str  # policy category the incident carries
    level: int
    terms: tuple[str, ...]


@dataclass(frozen=True)
class Route:
    categories: frozenset[str]  # empty: any
    min_level: int
    queue: str
    level: int | None  # override level


@dataclass(frozen=True)
class Notifications:
    immediate_levels: frozenset[int]
    digest_hour: int
    ack_minutes: dict[int, int]
    on_call: tuple[str, ...]


@dataclass(frozen=True)
class Retention:
    access_log_days: int
    incident_years: int


@dataclass(frozen=True)
class Compliance:
    """Endpoint agents (the `compliance:` section): timings of the device rollup and what checks allow.

    Sent to every agent with each reply (esafety/compliance/agentsettings.py), so a change in the
    policy file reaches the devices at their next report."""

    heartbeat_seconds: int = 60
    check_seconds: int = 900
    check_timeout_seconds: int = 10
    grace_seconds: int = 86_400  # a failing critical check is in_grace this long, then noncompliant
    stale_buffer_seconds: int = 120  # silent for heartbeat + buffer: stale
    stale_limit_seconds: int = 259_200  # silent this long: noncompliant
    listening_allow: tuple[str, ...] = ()  # process names allowed to listen on non-loopback addresses
    admin_allow: tuple[str, ...] = ()  # accounts allowed in the local administrators group
    p2p_names: tuple[str, ...] = ()
    vpn_names: tuple[str, ...] = ()
    monitor_sha256: str | None = None  # the safeguarding monitor's expected hash (None: any, but it must not change)


@dataclass(frozen=True)
class Policy:
    source: str
    digest: str
    school: str
    timezone: str
    default_group: str
    clauses: dict[str, Clause]
    groups: dict[str, Group]
    schedules: dict[str, Schedule]
    categories: dict[str, Category]
    rules: tuple[Rule, ...]
    exceptions: dict[str, tuple[str, ...]]  # group -> always-allowed domains
    no_inspect: tuple[str, ...]
    safe_search: SafeSearch
    circumvention: Circumvention
    downloads: Downloads
    phrases: Phrases
    watch_lists: tuple[WatchList, ...]
    routing: tuple[Route, ...]
    default_queue: str
    notifications: Notifications
    retention: Retention
    compliance: Compliance = Compliance()

    def clause_text(self, clause_id: str) -> str:
        c = self.clauses.get(clause_id)
        return c.text if c else ""
