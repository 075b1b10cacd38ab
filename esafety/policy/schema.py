"""The AUP policy as typed, immutable objects. The loader builds these once; the engine only reads them."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
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
class RosterSettings:
    """How an MIS export (esafety roster import) maps to policy groups."""

    year_groups: dict[int, str] = field(default_factory=dict)  # NC year -> policy group
    max_retire_share: float = 0.2  # refuse an import that would retire more of the roster than this


@dataclass(frozen=True)
class GroupMapping:
    dn: str  # a directory group's DN (compared case-insensitively)
    group: str  # the policy group its members get


@dataclass(frozen=True)
class DirectorySettings:
    """LDAP / Active Directory (esafety directory sync, and Basic sign-in by LDAP bind)."""

    url: str  # ldap://host:389 or ldaps://host:636
    bind_dn: str
    bind_password_file: str | None  # the service account's password, in a root-only file
    start_tls: bool
    ca_file: str | None
    user_bases: tuple[str, ...]  # OUs searched for people
    user_filter: str
    username_attribute: str  # sAMAccountName (AD) | uid (OpenLDAP)
    display_name_attribute: str
    email_attribute: str
    upn_attribute: str | None  # the attribute holding the pupil's UPN, when the school keeps one there
    member_attribute: str  # a group's members: member (AD, groupOfNames) | uniqueMember | memberUid
    groups: tuple[GroupMapping, ...]  # first match wins
    default_group: str | None  # people in user_bases with no mapped group (None: not synced)
    page_size: int = 500
    timeout_seconds: int = 10
    max_disable_share: float = 0.2  # refuse a sync that would disable more people than this share


@dataclass(frozen=True)
class ProxyAuthSettings:
    basic: str = "local"  # off | local (the store's argon2 passwords) | directory (LDAP bind)
    negotiate: bool = False  # Kerberos single sign-on (SPNEGO)
    keytab: str | None = None
    principal: str | None = None  # the service principal to accept as; None: any in the keytab
    realms: tuple[str, ...] = ()  # accepted client realms; empty: any the keytab's KDC vouches for
    cache_seconds: int = 300  # a verified Basic credential is trusted this long without a new bind


@dataclass(frozen=True)
class PortalSettings:
    session_seconds: int = 8 * 3600  # how long a captive-portal sign-in binds the client IP
    bypass: tuple[str, ...] = ()  # hosts reachable before sign-in (OS connectivity checks, OCSP)


@dataclass(frozen=True)
class RadiusSettings:
    listen: str = "0.0.0.0:1813"
    secret_file: str | None = None
    clients: tuple[str, ...] = ()  # NAS addresses or CIDR ranges allowed to send accounting
    binding_seconds: int = 12 * 3600  # a Start without Interim-Update binds this long


UNIDENTIFIED = ("default", "challenge", "portal")


@dataclass(frozen=True)
class IdentitySettings:
    """The `identity:` section: where people come from and how the proxy knows them."""

    # A client the proxy cannot identify: filtered as the default group (default), asked to sign in
    # by the browser (challenge: 407 with Negotiate/Basic, explicit proxy), or sent to the sign-in page (portal).
    unidentified: str = "default"
    roster: RosterSettings = RosterSettings()
    directory: DirectorySettings | None = None
    proxy_auth: ProxyAuthSettings = ProxyAuthSettings()
    portal: PortalSettings = PortalSettings()
    radius: RadiusSettings = RadiusSettings()


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
    identity: IdentitySettings = IdentitySettings()

    def clause_text(self, clause_id: str) -> str:
        c = self.clauses.get(clause_id)
        return c.text if c else ""
