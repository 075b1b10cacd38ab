"""Domain and URL lists: the formats schools get them in, parsed into normalised entries.

Formats: plain (one domain a line), hosts (`0.0.0.0 domain`), adblock (`||domain^`), ut1 (a UT1
category folder with `domains` and `urls` files), urls (IWF/CTIRU style URL lists: host/path).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

FORMATS = ("plain", "hosts", "adblock", "ut1", "urls")

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_HOSTS_SINKS = {"0.0.0.0", "127.0.0.1", "::", "::1", "0", "::0"}
_IGNORED_HOSTS = {"localhost", "localhost.localdomain", "local", "broadcasthost", "0.0.0.0", "ip6-localhost",
                  "ip6-loopback"}


def normalise_domain(raw: str) -> str | None:
    """Lower-case, punycode, no leading wildcard or trailing dot; None if it is not a domain."""
    d = raw.strip().lower().rstrip(".")
    if d.startswith("*."):
        d = d[2:]
    d = d.lstrip(".")
    if not d or " " in d or "/" in d:
        return None
    if not d.isascii():
        try:
            d = d.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = d.split(".")
    if len(d) > 253 or not all(_LABEL.match(label) for label in labels):
        return None
    return d


@dataclass(frozen=True)
class ListEntries:
    domains: list[str]
    urls: list[str]  # "host/path" prefixes, lower-case
    rejected: int  # lines that were neither blank, comment, nor a valid entry


def _domain_lines(lines: Iterator[str], fmt: str) -> Iterator[str | None]:
    for line in lines:
        s = line.strip()
        if not s or s[0] in "#!;[":
            continue
        if fmt == "hosts":
            parts = s.split("#", 1)[0].split()
            if len(parts) < 2 or parts[0] not in _HOSTS_SINKS:
                yield None
                continue
            for host in parts[1:]:
                if host.lower() not in _IGNORED_HOSTS:
                    yield host
        elif fmt == "adblock":
            # Only whole-domain block rules map onto a domain list; cosmetic and path rules do not.
            if s.startswith("@@") or not s.startswith("||"):
                yield None
                continue
            body = s[2:].split("$", 1)[0]
            if not body.endswith("^") or "/" in body or "*" in body:
                yield None
                continue
            yield body[:-1]
        else:
            yield s.split("#", 1)[0].strip()


def _url_entry(raw: str) -> str | None:
    s = raw.strip()
    if not s or s[0] == "#":
        return None
    s = re.sub(r"^[a-z][a-z0-9+.-]*://", "", s, flags=re.IGNORECASE)
    host, _, path = s.partition("/")
    dom = normalise_domain(host.split(":", 1)[0])
    if dom is None:
        return None
    return f"{dom}/{path}".lower()


def _counted(lines: Iterable[str], on_bytes: Callable[[int], None] | None) -> Iterator[str]:
    """The lines, reporting roughly how many bytes were read every 16k lines (for a progress bar)."""
    if on_bytes is None:
        yield from lines
        return
    done = 0
    for n, line in enumerate(lines, 1):
        done += len(line)
        if not n & 0x3FFF:
            on_bytes(done)
            done = 0
        yield line
    on_bytes(done)


def read_list(path: str | Path, fmt: str, on_bytes: Callable[[int], None] | None = None) -> ListEntries:
    """Parse one list. Raises OSError (unreadable) or ValueError (unknown format)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown list format '{fmt}' (one of {', '.join(FORMATS)})")
    p = Path(path)
    domains: list[str] = []
    urls: list[str] = []
    rejected = 0
    if fmt == "ut1":
        if not p.is_dir():
            raise ValueError(f"{p}: a UT1 list is a category folder holding 'domains' and 'urls'")
        sources = [(p / "domains", "plain"), (p / "urls", "urls")]
    else:
        sources = [(p, fmt)]
    for src, kind in sources:
        if not src.exists() and fmt == "ut1":
            continue
        with open(src, encoding="utf-8", errors="replace") as raw_fh:
            fh = _counted(raw_fh, on_bytes)
            if kind == "urls":
                for line in fh:
                    if not line.strip() or line.lstrip().startswith("#"):
                        continue
                    u = _url_entry(line)
                    if u is None:
                        rejected += 1
                    elif u.find("/") == len(u) - 1:
                        domains.append(u[:-1])  # a bare host in a URL list means the whole site
                    else:
                        urls.append(u)
            else:
                for raw in _domain_lines(fh, kind):
                    d = normalise_domain(raw) if raw is not None else None
                    if d is None:
                        rejected += 1
                    else:
                        domains.append(d)
    return ListEntries(domains, urls, rejected)


def file_signature(path: str | Path) -> str:
    """Cheap change detector for cache keys: path, size and mtime (of a folder's files too)."""
    p = Path(path)
    if p.is_dir():
        return ";".join(file_signature(c) for c in sorted(p.iterdir()) if c.is_file())
    st = os.stat(p)
    return f"{p}:{st.st_size}:{st.st_mtime_ns}"
