"""YAML -> Policy. Every error names the file and line; nothing half-valid is ever returned."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from esafety.policy.compliance_section import read_compliance
from esafety.policy.identity_section import read_identity
from esafety.policy.lists import FORMATS
from esafety.policy.schema import (
    KCSIE,
    QUEUES,
    Action,
    Category,
    Circumvention,
    Clause,
    Downloads,
    Group,
    Notifications,
    PhraseList,
    Phrases,
    Policy,
    Retention,
    Route,
    Rule,
    SafeSearch,
    Schedule,
    WatchList,
    Window,
)

# Top-level keys; a misspelt one must not be ignored silently. `sensor` belongs to agent/sensor/config.py.
SECTIONS = ("school", "timezone", "default_group", "clauses", "groups", "schedules", "categories", "rules",
            "exceptions", "no_inspect", "safe_search", "circumvention", "downloads", "phrases", "search_watch",
            "routing", "notifications", "compliance", "identity", "retention", "sensor")
DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_RANGE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


@dataclass(frozen=True)
class PolicyError:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class PolicyInvalid(Exception):
    def __init__(self, errors: list[PolicyError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class _Doc:
    """Plain Python values plus the line of every node, keyed by its path."""

    def __init__(self, path: Path, text: str):
        self.file = str(path)
        self.lines: dict[tuple[Any, ...], int] = {}
        self.errors: list[PolicyError] = []
        self._loader = yaml.SafeLoader("")
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark else 1
            raise PolicyInvalid([PolicyError(self.file, line, f"YAML syntax: {getattr(exc, 'problem', exc)}")]) from exc
        self.data = self._plain(node, ()) if node is not None else {}

    def _plain(self, node: yaml.Node, path: tuple[Any, ...]) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)  # a key's own line, not its value's
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k, v in node.value:
                key = str(k.value)
                if key in out:  # YAML keeps the last silently: half a section would vanish
                    self.errors.append(PolicyError(self.file, k.start_mark.line + 1, f"'{key}' is given twice "
                                                   f"(first on line {self.lines[(*path, key)]})"))
                self.lines[(*path, key)] = k.start_mark.line + 1
                out[key] = self._plain(v, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._plain(v, (*path, i)) for i, v in enumerate(node.value)]
        return self._loader.construct_object(node, deep=True)

    def line(self, path: tuple[Any, ...]) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path: tuple[Any, ...], message: str) -> None:
        self.errors.append(PolicyError(self.file, self.line(path), message))


class _Reader:
    """Typed getters that record errors instead of raising, so one run reports them all."""

    def __init__(self, doc: _Doc):
        self.doc = doc

    def get(self, obj: dict[str, Any], path: tuple[Any, ...], key: str, kind: type | tuple[type, ...],
            default: Any = ..., check: Callable[[Any], str | None] | None = None) -> Any:
        if key not in obj:
            if default is ...:
                self.doc.error(path, f"missing required key '{key}'")
                return None
            return default
        value = obj[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            self.doc.error((*path, key), f"'{key}' must be {names}, not {type(value).__name__}")
            return None if default is ... else default
        if check:
            problem = check(value)
            if problem:
                self.doc.error((*path, key), problem)
                return None if default is ... else default
        return value

    def str_list(self, obj: dict[str, Any], path: tuple[Any, ...], key: str) -> list[str]:
        value = self.get(obj, path, key, (list, str), default=[])
        if isinstance(value, str):
            return [value]
        out = []
        for i, v in enumerate(value or []):
            if isinstance(v, (str, int)) and not isinstance(v, bool):
                out.append(str(v))
            else:
                self.doc.error((*path, key, i), f"'{key}' entries must be strings")
        return out


def _queue(v: str) -> str | None:
    return None if v in QUEUES else f"queue must be one of {', '.join(QUEUES)}"


def _level(v: int) -> str | None:
    return None if 1 <= v <= 5 else "risk level must be 1-5"


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyInvalid([PolicyError(str(path), 0, f"cannot read policy: {exc.strerror}")]) from exc
    doc = _Doc(path, text)
    policy = _build(doc, path, text)
    if doc.errors or policy is None:
        raise PolicyInvalid(doc.errors or [PolicyError(str(path), 1, "empty policy")])
    return policy


def check_policy(path: str | Path) -> list[PolicyError]:
    try:
        load_policy(path)
    except PolicyInvalid as exc:
        return exc.errors
    return []


def _build(doc: _Doc, path: Path, text: str) -> Policy | None:  # noqa: C901 - one pass over the sections
    d = doc.data
    if not isinstance(d, dict):
        doc.error((), "a policy is a mapping of sections")
        return None
    r = _Reader(doc)
    base = path.parent
    for key in d:
        if key not in SECTIONS:
            doc.error((key,), f"unknown section '{key}' (sections: {', '.join(SECTIONS)})")

    school = r.get(d, (), "school", str, default="School")
    tz = r.get(d, (), "timezone", str, default="Europe/London")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        doc.error(("timezone",), f"unknown timezone '{tz}'")

    clauses: dict[str, Clause] = {}
    for cid, ctext in (r.get(d, (), "clauses", dict, default={}) or {}).items():
        if not isinstance(ctext, str):
            doc.error(("clauses", cid), "a clause is its text")
            continue
        clauses[cid] = Clause(cid, ctext.strip())

    def clause_ref(p: tuple[Any, ...], cid: Any) -> str:
        if not isinstance(cid, str) or cid not in clauses:
            doc.error(p, f"unknown AUP clause '{cid}' (define it under clauses:)")
            return str(cid)
        return cid

    # Groups, with lineage resolved through parents. A setting a group leaves out comes from its
    # first parent that has it (year7 -> ks3 -> pupils), so a year group is never less strict than its key stage.
    raw_groups = r.get(d, (), "groups", dict) or {}
    groups: dict[str, Group] = {}
    own: dict[str, dict[str, Any]] = {}
    for name, g in raw_groups.items():
        p: tuple[Any, ...] = ("groups", name)
        if not isinstance(g, dict):
            g = {}
        on_error = r.get(g, p, "on_error", str, default="block",
                         check=lambda v: None if v in ("allow", "block") else "on_error must be allow or block")
        yt = r.get(g, p, "youtube_restrict", (str, type(None)), default=None,
                   check=lambda v: None if v in (None, "Strict", "Moderate")
                   else "youtube_restrict is Strict or Moderate")
        own[name] = {k: v for k, v in (("on_error", on_error), ("youtube_restrict", yt)) if k in g}
        groups[name] = Group(name, r.get(g, p, "description", str, default=""),
                             tuple(r.str_list(g, p, "parents")), Action(on_error or "block"), yt)

    def inherited(name: str, key: str, seen: frozenset[str] = frozenset()) -> tuple[bool, Any]:
        if key in own.get(name, {}):
            return True, own[name][key]
        for parent in groups[name].parents if name in groups else ():
            if parent in groups and parent not in seen:
                found, value = inherited(parent, key, seen | {name})
                if found:
                    return True, value
        return False, None

    for name, g in list(groups.items()):
        lineage, todo = {name}, list(g.parents)
        while todo:
            parent = todo.pop()
            if parent not in groups:
                doc.error(("groups", name, "parents"), f"unknown group '{parent}'")
                continue
            if parent not in lineage:
                lineage.add(parent)
                todo.extend(groups[parent].parents)
        has_on_error, on_error = inherited(name, "on_error")
        _, yt = inherited(name, "youtube_restrict")
        groups[name] = Group(g.name, g.description, g.parents, Action(on_error) if has_on_error and on_error else
                             g.on_error, yt, frozenset(lineage))
    default_group = r.get(d, (), "default_group", str, default="unknown")
    if default_group not in groups:
        doc.error(("default_group",), f"unknown group '{default_group}'")

    def group_refs(obj: dict[str, Any], p: tuple[Any, ...], key: str) -> frozenset[str]:
        names = r.str_list(obj, p, key)
        for i, n in enumerate(names):
            if n not in groups:
                doc.error((*p, key, i), f"unknown group '{n}'")
        return frozenset(names)

    schedules: dict[str, Schedule] = {}
    for name, s in (r.get(d, (), "schedules", dict, default={}) or {}).items():
        p = ("schedules", name)
        windows = []
        for i, w in enumerate(s if isinstance(s, list) else []):
            wp = (*p, i)
            if not isinstance(w, dict):
                doc.error(wp, "a window has days: and times:")
                continue
            days = set()
            for j, day in enumerate(r.str_list(w, wp, "days")):
                if day.lower()[:3] not in DAYS:
                    doc.error((*wp, "days", j), f"unknown day '{day}'")
                else:
                    days.add(DAYS[day.lower()[:3]])
            for j, rng in enumerate(r.str_list(w, wp, "times")):
                m = _RANGE.match(rng.strip())
                if not m:
                    doc.error((*wp, "times", j), f"bad time range '{rng}' (want HH:MM-HH:MM)")
                    continue
                h1, m1, h2, m2 = (int(x) for x in m.groups())
                if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h1, m1) >= (h2, m2):
                    doc.error((*wp, "times", j), f"bad time range '{rng}' (start must be before end, within a day)")
                    continue
                end = time(23, 59, 59) if h2 == 24 else time(h2, m2)
                windows.append(Window(frozenset(days), time(h1, m1), end))
        if not isinstance(s, list):
            doc.error(p, "a schedule is a list of windows")
        schedules[name] = Schedule(name, tuple(windows))

    categories: dict[str, Category] = {}
    for name, c in (r.get(d, (), "categories", dict) or {}).items():
        p = ("categories", name)
        if not isinstance(c, dict):
            doc.error(p, "a category is a mapping")
            continue
        fmt = r.get(c, p, "format", str, default="plain",
                    check=lambda v: None if v in FORMATS else f"unknown list format (one of {', '.join(FORMATS)})")
        files = []
        for i, f in enumerate(r.str_list(c, p, "lists")):
            fp = (base / f).resolve()
            if not fp.exists():
                doc.error((*p, "lists", i), f"unknown list file '{f}' (looked for {fp})")
            files.append(str(fp))
        regexes = []
        for i, rx in enumerate(r.str_list(c, p, "regex")):
            try:
                regexes.append(re.compile(rx, re.IGNORECASE))
            except re.error as exc:
                doc.error((*p, "regex", i), f"bad regex '{rx}': {exc}")
        kcsie = r.get(c, p, "kcsie", str, default="content",
                      check=lambda v: None if v in KCSIE else f"kcsie must be one of {', '.join(KCSIE)}")
        categories[name] = Category(
            name=name,
            title=r.get(c, p, "title", str, default=name.replace("_", " ").title()),
            clause=clause_ref((*p, "clause"), c.get("clause")),
            kcsie=kcsie or "content",
            level=r.get(c, p, "level", int, default=2, check=_level) or 2,
            safeguarding=bool(r.get(c, p, "safeguarding", bool, default=False)),
            incident=bool(r.get(c, p, "incident", bool, default=bool(c.get("safeguarding", False)))),
            lists=tuple(files),
            list_format=fmt or "plain",
            domains=tuple(x.lower().strip(".") for x in r.str_list(c, p, "domains")),
            url_prefixes=tuple(x.lower() for x in r.str_list(c, p, "urls")),
            regexes=tuple(regexes),
        )
    # Categories the engine derives from the request itself rather than from lists.
    for builtin, title in (("ip_literal", "IP address instead of a name"), ("doh", "DNS over HTTPS"),
                           ("web_proxies", "Web proxies and anonymisers"), ("uncategorised", "Uncategorised")):
        if builtin not in categories:
            doc.error(("categories",), f"category '{builtin}' must be defined (the engine assigns it; {title})")

    def category_refs(obj: dict[str, Any], p: tuple[Any, ...], key: str) -> frozenset[str]:
        names = r.str_list(obj, p, key)
        for i, n in enumerate(names):
            if n not in categories:
                doc.error((*p, key, i), f"unknown category '{n}'")
        return frozenset(names)

    rules = []
    for i, rd in enumerate(r.get(d, (), "rules", list) or []):
        p = ("rules", i)
        if not isinstance(rd, dict):
            doc.error(p, "a rule is a mapping")
            continue
        action = r.get(rd, p, "action", str, check=lambda v: None if v in {a.value for a in Action} - {"rewrite"}
                       else "action must be allow, block, flag or warn")
        when = r.get(rd, p, "when", str, default=None)
        unless = r.get(rd, p, "unless", str, default=None)
        for key, sched in (("when", when), ("unless", unless)):
            if sched is not None and sched not in schedules:
                doc.error((*p, key), f"unknown schedule '{sched}'")
        rules.append(Rule(
            id=r.get(rd, p, "id", str, default=f"rule-{i + 1}"),
            groups=group_refs(rd, p, "groups"),
            categories=category_refs(rd, p, "categories"),
            action=Action(action or "block"),
            clause=clause_ref((*p, "clause"), rd.get("clause")),
            when=when,
            unless=unless,
        ))

    exceptions: dict[str, tuple[str, ...]] = {}
    for gname, domains in (r.get(d, (), "exceptions", dict, default={}) or {}).items():
        if gname not in groups:
            doc.error(("exceptions", gname), f"unknown group '{gname}'")
        exceptions[gname] = tuple(x.lower().strip(".") for x in (domains or []) if isinstance(x, str))

    ss = r.get(d, (), "safe_search", dict, default={}) or {}
    safe_search = SafeSearch(
        enforce_for=group_refs(ss, ("safe_search",), "enforce_for"),
        google=bool(ss.get("google", True)), bing=bool(ss.get("bing", True)),
        duckduckgo=bool(ss.get("duckduckgo", True)), youtube=bool(ss.get("youtube", True)),
    )

    cv = r.get(d, (), "circumvention", dict, default={}) or {}
    ports = []
    for i, port in enumerate(cv.get("connect_ports", [443])):
        if not isinstance(port, int) or not 0 < port < 65536:
            doc.error(("circumvention", "connect_ports", i), f"bad port '{port}'")
        else:
            ports.append(port)
    patterns = []
    for i, rx in enumerate(r.str_list(cv, ("circumvention",), "web_proxy_patterns")):
        try:
            patterns.append(re.compile(rx, re.IGNORECASE))
        except re.error as exc:
            doc.error(("circumvention", "web_proxy_patterns", i), f"bad regex '{rx}': {exc}")
    circumvention = Circumvention(frozenset(ports), bool(cv.get("doh_by_shape", True)),
                                  bool(cv.get("doh_canary", True)), tuple(patterns))

    dl = r.get(d, (), "downloads", dict, default={}) or {}
    downloads = Downloads(
        block_for=group_refs(dl, ("downloads",), "block_for"),
        extensions=frozenset(x.lower().lstrip(".") for x in r.str_list(dl, ("downloads",), "extensions")),
        content_types=frozenset(x.lower() for x in r.str_list(dl, ("downloads",), "content_types")),
        magic=bool(dl.get("magic", True)),
        inspect_archives=bool(dl.get("inspect_archives", True)),
        clause=clause_ref(("downloads", "clause"), dl.get("clause")) if dl else "",
    )

    ph = r.get(d, (), "phrases", dict, default={}) or {}
    phrase_lists = []
    for name, pl in (r.get(ph, ("phrases",), "lists", dict, default={}) or {}).items():
        p = ("phrases", "lists", name)
        if not isinstance(pl, dict):
            doc.error(p, "a phrase list has category: and phrases:")
            continue
        cat = r.get(pl, p, "category", str)
        if cat and cat not in categories:
            doc.error((*p, "category"), f"unknown category '{cat}'")
        items = []
        for phrase, weight in (r.get(pl, p, "phrases", dict) or {}).items():
            if not isinstance(weight, int) or isinstance(weight, bool):
                doc.error((*p, "phrases", phrase), f"weight of '{phrase}' must be an integer")
                continue
            items.append((str(phrase), weight))
        phrase_lists.append(PhraseList(name, cat or "", tuple(items)))
    phrases = Phrases(
        scan_for=group_refs(ph, ("phrases",), "scan_for"),
        threshold=r.get(ph, ("phrases",), "threshold", int, default=100) or 100,
        max_bytes=r.get(ph, ("phrases",), "max_bytes", int, default=1_048_576) or 1_048_576,
        lists=tuple(phrase_lists),
        clause=clause_ref(("phrases", "clause"), ph.get("clause")) if ph else "",
    )

    watch = []
    for name, wl in (r.get(d, (), "search_watch", dict, default={}) or {}).items():
        p = ("search_watch", name)
        if not isinstance(wl, dict):
            doc.error(p, "a watch list has category:, level: and terms:")
            continue
        cat = r.get(wl, p, "category", str)
        if cat and cat not in categories:
            doc.error((*p, "category"), f"unknown category '{cat}'")
        watch.append(WatchList(name, cat or "", r.get(wl, p, "level", int, default=4, check=_level) or 4,
                               tuple(t.lower() for t in r.str_list(wl, p, "terms"))))

    rt = r.get(d, (), "routing", dict, default={}) or {}
    routes = []
    for i, rd in enumerate(r.get(rt, ("routing",), "rules", list, default=[]) or []):
        p = ("routing", "rules", i)
        if not isinstance(rd, dict):
            doc.error(p, "a routing rule is a mapping")
            continue
        queue = r.get(rd, p, "queue", str, check=_queue)
        routes.append(Route(category_refs(rd, p, "categories"), r.get(rd, p, "min_level", int, default=1) or 1,
                            queue or "dsl", r.get(rd, p, "level", int, default=None, check=_level)))
    default_queue = r.get(rt, ("routing",), "default_queue", str, default="it_services", check=_queue)

    nt = r.get(d, (), "notifications", dict, default={}) or {}
    ntp = ("notifications",)
    ack = r.get(nt, ntp, "ack_minutes", dict, default={5: 15, 4: 60, 3: 480, 2: 1440, 1: 2880}) or {}
    ack_minutes = {}
    for level, minutes in ack.items():
        if not (isinstance(minutes, int) and str(level).isdigit() and 1 <= int(level) <= 5 and minutes > 0):
            doc.error((*ntp, "ack_minutes", level), "ack_minutes maps a level 1-5 to a whole number of minutes")
            continue
        ack_minutes[int(level)] = minutes
    immediate = []
    for i, level in enumerate(r.get(nt, ntp, "immediate_levels", list, default=[4, 5]) or []):
        if isinstance(level, int) and not isinstance(level, bool) and _level(level) is None:
            immediate.append(level)
        else:
            doc.error((*ntp, "immediate_levels", i), "immediate_levels holds risk levels 1-5")
    notifications = Notifications(
        immediate_levels=frozenset(immediate),
        digest_hour=r.get(nt, ntp, "digest_hour", int, default=16,
                          check=lambda v: None if 0 <= v <= 23 else "digest_hour must be 0-23"),
        ack_minutes=ack_minutes,
        on_call=tuple(r.str_list(nt, ntp, "on_call")),
    )
    rn = r.get(d, (), "retention", dict, default={}) or {}
    positive = lambda v: None if v > 0 else "must be a positive number"  # noqa: E731
    retention = Retention(r.get(rn, ("retention",), "access_log_days", int, default=90, check=positive) or 90,
                          r.get(rn, ("retention",), "incident_years", int, default=25, check=positive) or 25)

    no_inspect = tuple(x.lower() for x in r.str_list(d, (), "no_inspect"))
    compliance = read_compliance(doc, r, d)
    identity = read_identity(doc, d, set(groups), base)
    if doc.errors:
        return None
    return Policy(
        source=str(path), digest=hashlib.sha256(text.encode()).hexdigest()[:16], school=school, timezone=tz,
        default_group=default_group, clauses=clauses, groups=groups, schedules=schedules, categories=categories,
        rules=tuple(rules), exceptions=exceptions, no_inspect=no_inspect, safe_search=safe_search,
        circumvention=circumvention, downloads=downloads, phrases=phrases, watch_lists=tuple(watch),
        routing=tuple(routes), default_queue=default_queue or "it_services", notifications=notifications,
        retention=retention, compliance=compliance, identity=identity,
    )
