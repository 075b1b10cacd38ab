"""decide(Request, Identity) -> Decision: the per-request verdict. Pure and I/O-free once built.

Building (compile) reads the lists and the compiled-index cache; deciding touches only memory.
Order of a decision, top to bottom:
  1. normalise the host and look it up: one call into the C index gives its categories, exceptions
     and no-inspect bits (IDNA names and IP literals are finished in Python);
  2. add categories derived from the request itself (DoH shape, web-proxy URL, URL lists);
  3. a group exception allows outright;
  4. the first rule for the group whose categories and schedule match decides: worked out once per
     set of categories while the active schedules stay the same, then read from a table;
  5. allowed searches are made safe and matched against the safeguarding watch lists.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from pathlib import Path
from zoneinfo import ZoneInfo

from tqdm import tqdm

from esafety.identity import Identity
from esafety.policy.domainindex import MARKS, NON_ASCII, DomainIndex
from esafety.policy.lists import file_signature, normalise_domain, read_list
from esafety.policy.model import Decision, Flag, Request
from esafety.policy.schema import Action, Group, Policy, Rule
from esafety.policy.searches import engine_of, safe_search_rewrite, search_query
from esafety.policy.text import Matcher, fold

log = logging.getLogger("esafety.policy")

_DOH_TYPES = ("application/dns-message", "application/dns-json")
_BLOCK, _ALLOW = Action.BLOCK, Action.ALLOW  # an enum member read through its class costs ~10x a global
_BACKREF = re.compile(r"\\[1-9]|\(\?P=")
_MAX_BITS = 62  # categories, no-inspect and exception sets; the index's two marks take the top bits
_VERDICTS_MAX = 4096  # distinct category sets remembered per group (a handful in practice)


def is_ip_literal(host: str) -> bool:
    """An address, not a name: also the forms the resolver reads as IPv4 (127.1, 2130706433,
    0x7f.0.0.1), which otherwise pass as names no list holds (a pupil's way round the IP rule)."""
    host = host.strip("[]")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
            return True
        except ValueError:
            return False
    try:
        socket.inet_aton(host)  # every IPv4 form ip_address reads, and the resolver's shorthands
        return True
    except OSError:
        return False


def any_of(patterns: tuple[re.Pattern[str], ...]) -> Callable[[str], object] | None:
    """One search for any of the patterns: one scan of the text instead of one per pattern."""
    if not patterns:
        return None
    # Numbered back-references would point at another pattern's group once joined.
    if not any(_BACKREF.search(p.pattern) for p in patterns):
        try:
            return re.compile("|".join(f"(?:{p.pattern})" for p in patterns), re.IGNORECASE).search
        except re.error:  # e.g. a group name used twice, or a pattern's own global flags
            pass
    return lambda text: any(p.search(text) for p in patterns)


class EngineError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: Rule
    mask: int  # category bits; 0 means any request
    when: str | None
    unless: str | None


class Engine:
    def __init__(self, policy: Policy, index: DomainIndex, url_prefixes: dict[str, list[tuple[str, int]]],
                 list_counts: dict[str, int]):
        self.policy = policy
        self.index = index
        self.list_counts = list_counts
        cats = list(policy.categories)
        self._cat_names = cats
        self._bit = {name: 1 << i for i, name in enumerate(cats)}
        self._no_inspect_bit = 1 << len(cats)
        self._exception_bit = {g: 1 << (len(cats) + 1 + i) for i, g in enumerate(sorted(policy.exceptions))}
        self._url_prefixes = url_prefixes
        self._regexes = [(rx, self._bit[c.name]) for c in policy.categories.values() for rx in c.regexes]
        self._uncategorised = self._bit["uncategorised"]
        self._rules: dict[str, tuple[_CompiledRule, ...]] = {
            g.name: tuple(self._compile_rule(r) for r in policy.rules if not r.groups or r.groups & g.lineage)
            for g in policy.groups.values()
        }
        self._exception_owner = {bit: g for g, bit in self._exception_bit.items()}
        self._exceptions_for: dict[str, int] = {
            g.name: sum(bit for name, bit in self._exception_bit.items() if name in g.lineage)
            for g in policy.groups.values()
        }
        self._safe_search_for = {g.name for g in policy.groups.values() if policy.safe_search.enforce_for & g.lineage}
        # The groups whose pages are phrase-scanned and whose downloads are checked: a lookup a
        # response, no set built.
        self._scanned = {g.name for g in policy.groups.values() if policy.phrases.scan_for & g.lineage}
        self._download_checked = {g.name for g in policy.groups.values() if policy.downloads.block_for & g.lineage}
        self._watch = Matcher((t, wl) for wl in policy.watch_lists for t in wl.terms)
        self._tz = ZoneInfo(policy.timezone)
        self._minute = -1.0
        self._active: frozenset[str] = frozenset()
        # Hot-path constants, so deciding reads locals and one dict instead of attribute chains.
        self._classify = index.classify
        self._cat_mask = self._no_inspect_bit - 1
        self._ip_bit, self._doh_bit = self._bit["ip_literal"], self._bit["doh"]
        self._web_proxy_bit = self._bit["web_proxies"]
        self._doh_by_shape = policy.circumvention.doh_by_shape
        self._web_proxy_url = any_of(policy.circumvention.web_proxy_patterns)
        self._defaults = {name: Decision(Action.ALLOW, name, "default", "") for name in cats}
        # Per group, everything deciding needs, in one lookup: (group, exception bits, verdicts, rules).
        # verdicts: category bits -> the rules' decision under the active schedules (see _roll).
        self._group_info: dict[str, tuple[Group, int, dict[int, Decision], tuple[_CompiledRule, ...]]] = {
            g.name: (g, self._exceptions_for[g.name], {}, self._rules[g.name]) for g in policy.groups.values()}
        self._default_info = self._group_info[policy.default_group]

    # -- build ---------------------------------------------------------------------------------

    def _compile_rule(self, r: Rule) -> _CompiledRule:
        mask = 0
        for c in r.categories:
            mask |= self._bit[c]
        return _CompiledRule(r, mask, r.when, r.unless)

    @classmethod
    def build(cls, policy: Policy, lists_dir: Path | None = None, cache_dir: Path | None = None,
              progress: bool = False) -> Engine:
        """Compile the policy's lists (plus imported lists under lists_dir/<category>/) into an index.

        The compiled index is cached by a signature of every input, so a restart with unchanged
        lists maps the cached file instead of re-reading millions of lines.
        """
        cats = list(policy.categories)
        if len(cats) + 1 + len(policy.exceptions) > _MAX_BITS:
            raise EngineError(f"at most {_MAX_BITS - 1} categories and group exception sets together")
        sources = _sources(policy, lists_dir)
        sig = hashlib.sha256()
        for cat, path, fmt in sources:
            sig.update(f"{cat}|{fmt}|{file_signature(path)}\n".encode())
        for c in policy.categories.values():
            sig.update(f"{c.name}|{','.join(c.domains)}|{','.join(c.url_prefixes)}\n".encode())
        for g, doms in sorted(policy.exceptions.items()):
            sig.update(f"exc|{g}|{','.join(doms)}\n".encode())
        sig.update(f"noinspect|{','.join(policy.no_inspect)}|{','.join(cats)}".encode())
        digest = sig.hexdigest()[:24]
        cache_file = cache_dir / f"domains-{digest}.idx" if cache_dir else None
        meta_file = cache_dir / f"domains-{digest}.meta" if cache_dir else None

        url_prefixes: dict[str, list[tuple[str, int]]] = {}
        counts: dict[str, int] = dict.fromkeys(cats, 0)
        bit = {name: 1 << i for i, name in enumerate(cats)}
        index = None
        if cache_file and meta_file and cache_file.exists() and meta_file.exists():
            try:
                index = DomainIndex.load(cache_file)
                counts, url_prefixes = _read_meta(meta_file, bit)
            except (ValueError, OSError) as exc:
                log.warning("compiled index unusable, rebuilding", extra={"fields": {"error": str(exc)}})
                index = None
        if index is None:
            lists: list[tuple[list[str], int]] = []  # (domains, bit): no million (domain, bit) tuples
            items: list[tuple[str, int]] = []  # the policy's own few entries
            for cat, path, fmt in tqdm(sources, desc="compiling lists", unit="list", disable=not progress):
                entries = read_list(path, fmt)
                lists.append((entries.domains, bit[cat]))
                counts[cat] += len(entries.domains) + len(entries.urls)
                for u in entries.urls:
                    host, _, p = u.partition("/")
                    url_prefixes.setdefault(host, []).append(("/" + p, bit[cat]))
            for c in policy.categories.values():
                for d in c.domains:
                    nd = normalise_domain(d)
                    if nd:
                        items.append((nd, bit[c.name]))
                        counts[c.name] += 1
                for u in c.url_prefixes:
                    host, _, p = u.partition("/")
                    url_prefixes.setdefault(host, []).append(("/" + p, bit[c.name]))
                    counts[c.name] += 1
            no_inspect_bit = 1 << len(cats)
            items.extend((d, no_inspect_bit) for d in map(normalise_domain, policy.no_inspect) if d)
            for i, (_g, doms) in enumerate(sorted(policy.exceptions.items())):
                items.extend((d, 1 << (len(cats) + 1 + i)) for d in map(normalise_domain, doms) if d)
            index = DomainIndex.build(chain(lists, (([d], b) for d, b in items)),
                                      count=sum(len(ds) for ds, _b in lists) + len(items))
            del lists
            if cache_file and meta_file:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                index.save(cache_file)
                _write_meta(meta_file, counts, url_prefixes, cats)
                index = DomainIndex.load(cache_file)  # serve from the shared mapping, not private memory
        return cls(policy, index, url_prefixes, counts)

    # -- decide --------------------------------------------------------------------------------

    def group_of(self, name: str) -> Group:
        """The policy group a request is treated as: its own, or the default for a name the policy
        lacks (a stale binding), as deciding does."""
        return self.policy.groups.get(name) or self.policy.groups[self.policy.default_group]

    def scans_pages(self, group: str) -> bool:
        return self.group_of(group).name in self._scanned

    def checks_downloads(self, group: str) -> bool:
        return self.group_of(group).name in self._download_checked

    def categories_of(self, req: Request) -> tuple[str, int]:
        """(normalised host, category and marker bits) for a request."""
        host, bits = self._classify(req.host)
        if bits & MARKS:
            host, bits = self._unusual_host(host, bits)
        path, query = req.path, req.query
        prefixes = self._url_prefixes.get(host)
        if prefixes:
            low = path.lower()
            for prefix, b in prefixes:
                if low.startswith(prefix):
                    bits |= b
        if self._regexes:
            target = f"{host}{path}?{query}"
            for rx, b in self._regexes:
                if rx.search(target):
                    bits |= b
        if self._doh_by_shape and (
            path.endswith("/dns-query") or (req.content_type and req.content_type.startswith(_DOH_TYPES))
            or (req.accept and req.accept.startswith(_DOH_TYPES))
        ):
            bits |= self._doh_bit
        # CGIProxy and friends put the target in the path (/nph-proxy.cgi/...), others in the query.
        web_proxy_url = self._web_proxy_url
        if web_proxy_url and web_proxy_url(f"{path}?{query}" if query else path):
            bits |= self._web_proxy_bit
        return host, bits

    def _unusual_host(self, host: str, mark: int) -> tuple[str, int]:
        """The hosts the index's classify leaves to Python: names that need IDNA, and what may be
        an address (a trailing digit, a colon, "0x"), including the forms only the resolver reads."""
        if mark & NON_ASCII:
            host = host.lower().rstrip(".")
            host = normalise_domain(host) or host
            if not (host and (host[-1].isdigit() or ":" in host or "0x" in host)):
                return host, self.index.lookup(host)
        return host, self._ip_bit if is_ip_literal(host) else self.index.lookup(host)

    def decide(self, req: Request, who: Identity, now: float | None = None) -> Decision:
        group, exceptions, verdicts, rules = self._group_info.get(who.group) or self._default_info
        host, bits = self.categories_of(req)
        if bits & exceptions:
            owner = self._exception_owner[(bits & exceptions) & -(bits & exceptions)]  # may be a parent group's
            return Decision(Action.ALLOW, self._first_category(bits) or "exception", f"exception:{owner}", "")
        minute = (time.time() if now is None else now) // 60
        if minute != self._minute:
            self._roll(minute)
        cat_bits = bits & self._cat_mask or self._uncategorised
        d = verdicts.get(cat_bits) or self._verdict(verdicts, rules, cat_bits)
        if d.action is _BLOCK or (not req.query and "youtube" not in host):  # _allowed's own first test
            return d
        return self._allowed(req, host, group, d)

    def _verdict(self, verdicts: dict[int, Decision], rules: tuple[_CompiledRule, ...], cat_bits: int) -> Decision:
        """The first of a group's rules whose categories and schedule match, else the default; kept
        in the group's table until the active schedules change."""
        active = self._active
        for cr in rules:
            hit = cat_bits & cr.mask if cr.mask else cat_bits
            if not hit or (cr.when and cr.when not in active) or (cr.unless and cr.unless in active):
                continue
            d = Decision(cr.rule.action, self._cat_names[(hit & -hit).bit_length() - 1], cr.rule.id, cr.rule.clause)
            break
        else:
            d = self._defaults[self._cat_names[(cat_bits & -cat_bits).bit_length() - 1]]
        if len(verdicts) >= _VERDICTS_MAX:
            verdicts.clear()
        verdicts[cat_bits] = d
        return d

    def _roll(self, minute: float) -> None:
        """A new minute (or a time asked out of order): the active schedules again, and the
        remembered verdicts dropped if they changed."""
        local = datetime.fromtimestamp(minute * 60, self._tz)
        t, day = local.time(), local.weekday()
        active = frozenset(s.name for s in self.policy.schedules.values()
                           if any(day in w.days and w.start <= t < w.end for w in s.windows))
        if active != self._active:
            self._active = active
            for _g, _exceptions, verdicts, _rules in self._group_info.values():
                verdicts.clear()
        self._minute = minute

    def _allowed(self, req: Request, host: str, group: Group, d: Decision) -> Decision:
        """Safe search and the search-term watch lists apply to whatever was let through."""
        if not req.query and "youtube" not in host:
            return d
        engine = engine_of(host)
        if engine is None:
            return d
        rewrite = None
        if group.name in self._safe_search_for:
            rewrite = safe_search_rewrite(engine, req.path, group.youtube_restrict)
        flags: tuple[Flag, ...] = ()
        q = search_query(engine, req.path, req.query)
        if q:
            flags = self.watch(q)
        if not rewrite and not flags:
            return d
        action = d.action
        if flags and action is _ALLOW:
            action = Action.FLAG
        elif rewrite and action is _ALLOW:
            action = Action.REWRITE
        category = flags[0].category if flags else d.category
        return Decision(action, category, d.rule, d.clause, d.flags + flags, rewrite)

    def watch(self, query: str) -> tuple[Flag, ...]:
        """Safeguarding watch-list matches in a search query, one flag per list."""
        seen: dict[str, Flag] = {}
        for _start, _term, wl in self._watch.find(fold(query)):
            if wl.name not in seen:
                seen[wl.name] = Flag(wl.category, wl.level, "search-term", query[:500])
        return tuple(seen.values())

    def no_inspect(self, host: str) -> bool:
        """Hosts (banking, health) that are decided on SNI alone and never decrypted."""
        nd = normalise_domain(host) if host else None
        return bool(nd and self.index.lookup(nd) & self._no_inspect_bit)

    def _first_category(self, bits: int) -> str | None:
        cat_bits = bits & (self._no_inspect_bit - 1)
        return self._cat_names[(cat_bits & -cat_bits).bit_length() - 1] if cat_bits else None

    def category_bits(self) -> dict[str, int]:
        return dict(self._bit)


def _sources(policy: Policy, lists_dir: Path | None) -> list[tuple[str, str, str]]:
    out = [(c.name, f, c.list_format) for c in policy.categories.values() for f in c.lists]
    if lists_dir and lists_dir.is_dir():
        for cat_dir in sorted(lists_dir.iterdir()):
            if cat_dir.is_dir() and cat_dir.name in policy.categories:
                out.extend((cat_dir.name, str(f), "plain") for f in sorted(cat_dir.glob("*.txt")))
                out.extend((cat_dir.name, str(f), "urls") for f in sorted(cat_dir.glob("*.urls")))
    return out


def _write_meta(path: Path, counts: dict[str, int], prefixes: dict[str, list[tuple[str, int]]],
                cats: list[str]) -> None:
    lines = [f"count\t{c}\t{n}" for c, n in counts.items()]
    names = {1 << i: c for i, c in enumerate(cats)}
    lines += [f"url\t{names[b]}\t{h}{p}" for h, ps in prefixes.items() for p, b in ps]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)


def _read_meta(path: Path, bit: dict[str, int]) -> tuple[dict[str, int], dict[str, list[tuple[str, int]]]]:
    counts: dict[str, int] = dict.fromkeys(bit, 0)
    prefixes: dict[str, list[tuple[str, int]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        kind, cat, value = line.split("\t", 2)
        if cat not in bit:
            raise ValueError(f"{path}: category '{cat}' no longer in the policy")
        if kind == "count":
            counts[cat] = int(value)
        else:
            host, _, p = value.partition("/")
            prefixes.setdefault(host, []).append(("/" + p, bit[cat]))
    return counts, prefixes

