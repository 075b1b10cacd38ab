"""Reading people from LDAP / Active Directory, and checking a person's password by an LDAP bind.

`read_people(settings)` binds as the service account, reads each `user_bases` OU with a paged
search (RFC 2696: AD answers at most MaxPageSize, 1000, entries to a search that does not page)
and the mapped groups' members, and returns typed `PersonRecord`s for `apply_people`. A person
gets the policy group of the first mapping whose directory group holds them, else `default_group`,
else is left out (counted). Disabled AD accounts (userAccountControl bit 2) are left out, so
they are retired like leavers.

The sign-in check by bind is in esafety/identity/directory_bind.py.

Errors say which server and what it answered, for the IT technician reading the log:
`DirectoryUnavailable` (cannot connect, TLS, timeout: try again later) and `DirectoryError` (the
configuration or the service account is wrong: someone must fix it).
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import ldap3
from ldap3.core.exceptions import (
    LDAPCommunicationError,
    LDAPException,
    LDAPStartTLSError,
)

from esafety.identity.people import PersonRecord
from esafety.identity.roster import upn_problem
from esafety.policy.schema import DirectorySettings

log = logging.getLogger("esafety.identity.directory")

PAGED_RESULTS = "1.2.840.113556.1.4.319"
ACCOUNT_DISABLE = 0x2  # userAccountControl: AD's "account disabled" bit
# LDAP result codes (RFC 4511) this module tells apart.
INVALID_CREDENTIALS, NO_SUCH_OBJECT, BUSY, UNAVAILABLE = 49, 32, 51, 52
# AD explains a refused bind in its message ("... data 52e, v4563"): what each code means.
_AD_BIND_REASONS = {"525": "no such user", "52e": "wrong password", "530": "not allowed to sign in at this time",
                    "531": "not allowed to sign in from this computer", "532": "password expired",
                    "533": "account disabled", "701": "account expired", "773": "must change password",
                    "775": "account locked out"}


class DirectoryUnavailable(Exception):
    """The directory cannot be reached (connection refused, TLS failure, timeout)."""


class DirectoryError(Exception):
    """The directory answered, but refused or the settings do not fit it (bad bind, missing base)."""


@dataclass
class DirectoryRead:
    """What one read of the directory found."""

    people: list[PersonRecord]
    per_group: dict[str, int]  # policy group -> people mapped to it
    no_group: int = 0  # in user_bases but in no mapped group, and no default_group: left out
    disabled: int = 0  # AD accounts with the disabled bit: left out (so they retire)
    invalid: list[str] = field(default_factory=list)  # "DN: why" for entries that could not be used
    pages: int = 0  # search result pages read (more than one per base: paging happened)


# -- connecting ---------------------------------------------------------------------------------------


def ldap_server(settings: DirectorySettings) -> ldap3.Server:
    url = settings.url.strip().rstrip("/")
    tls = None
    if url.lower().startswith("ldaps://") or settings.start_tls:
        # No version: ldap3 then starts from ssl.create_default_context (TLS 1.2+); ldap3 checks the
        # certificate's names against the URL's host itself after the handshake.
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=settings.ca_file)
    # get_info=NONE: no schema read per connection (cheap binds); attributes are decoded here.
    return ldap3.Server(url, tls=tls, get_info=ldap3.NONE, connect_timeout=settings.timeout_seconds)


def ldap_connection(settings: DirectorySettings, server: ldap3.Server, user: str | None = None,
                password: str | None = None) -> ldap3.Connection:
    """An open (not yet bound) connection, StartTLS done when configured."""
    conn = ldap3.Connection(server, user=user, password=password, receive_timeout=settings.timeout_seconds,
                            raise_exceptions=False, read_only=True, auto_referrals=False,  # AD's referrals hang
                            auto_range=True)  # AD hands out large groups' members in ranges of 1500
    try:
        conn.open()
        if settings.start_tls and not conn.start_tls():
            raise DirectoryUnavailable(f"StartTLS with the directory at {settings.url} failed: {server_said(conn)}")
    except LDAPStartTLSError as exc:
        raise DirectoryUnavailable(unreachable_message(settings, exc)) from exc
    except LDAPCommunicationError as exc:
        raise DirectoryUnavailable(unreachable_message(settings, exc)) from exc
    return conn


def unreachable_message(settings: DirectorySettings, exc: Exception) -> str:
    text = str(exc)
    tls = _tls_problem(text)
    if tls:
        return (f"TLS with the directory at {settings.url} failed: {tls} (ca_file: "
                f"{settings.ca_file or 'none, the system CAs'}; the URL's host must be a name in the certificate)")
    if "timed out" in text or "timeout" in text.lower():
        return f"cannot reach the directory at {settings.url}: no answer within {settings.timeout_seconds}s ({text})"
    return f"cannot reach the directory at {settings.url}: {text}"


def _tls_problem(text: str) -> str | None:
    """The readable part of ldap3's nested TLS error text, or None if it is not about TLS."""
    m = re.search(r"\[SSL: [A-Z_]+\] ([^('\"]+?)\s*\(_ssl", text)
    if m:
        return m.group(1).strip()
    m = re.search(r"certificate .* (doesn't match any name in \[[^\]]*\])", text)
    if m:
        return f"the certificate {m.group(1)}"
    return "TLS handshake error" if "ssl" in text.lower() and "wrap" in text.lower() else None


def server_said(conn: ldap3.Connection) -> str:
    r = conn.result or {}
    text = f"{r.get('description', 'no result')} ({r.get('result', '?')})"
    message = (r.get("message") or "").strip()
    if message:
        text += f": {message}"
        code = re.search(r"data ([0-9a-f]{3})", message)
        if code and code.group(1) in _AD_BIND_REASONS:
            text += f" [{_AD_BIND_REASONS[code.group(1)]}]"
    return text


def read_bind_password(settings: DirectorySettings) -> str:
    if not settings.bind_password_file:
        if settings.bind_dn:
            raise DirectoryError("identity.directory has bind_dn but no bind_password_file (the file holding "
                                 "the service account's password)")
        return ""
    try:
        with open(settings.bind_password_file, encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    except OSError as exc:
        raise DirectoryError(f"cannot read bind_password_file {settings.bind_password_file}: {exc.strerror}") from exc


def service_connection(settings: DirectorySettings, server: ldap3.Server | None = None) -> ldap3.Connection:
    """Connected and bound as the service account (bind_dn), or raises with what the server said."""
    password = read_bind_password(settings)
    conn = ldap_connection(settings, server or ldap_server(settings), settings.bind_dn or None, password or None)
    try:
        ok = conn.bind()
    except LDAPCommunicationError as exc:
        raise DirectoryUnavailable(unreachable_message(settings, exc)) from exc
    except LDAPException as exc:
        raise DirectoryError(f"bind refused for the service account {settings.bind_dn!r} at {settings.url}: "
                             f"{exc}") from exc
    if not ok:
        said = server_said(conn)
        conn.unbind()
        if (conn.result or {}).get("result") in (BUSY, UNAVAILABLE):
            raise DirectoryUnavailable(f"the directory at {settings.url} is not serving binds: {said}")
        raise DirectoryError(f"bind refused for the service account {settings.bind_dn!r} at {settings.url}: {said}"
                             f" (check bind_dn and the password in {settings.bind_password_file})")
    return conn


# -- reading entries ----------------------------------------------------------------------------------


def clean_dn(dn: str) -> str:
    """The DN with the spaces people paste around separators ("CN=Year 7, OU=Groups") dropped.

    ldap3 refuses such a DN; the server would accept it. Backslash escapes are kept as written."""
    parts, current, escaped = [], [], False
    for ch in dn.strip():
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch in ",+":
            parts.append("".join(current).strip())
            parts.append(ch)
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    out = []
    for part in parts:
        name, eq, value = part.partition("=")
        out.append(f"{name.strip()}={value.strip()}" if eq else part)
    return "".join(out)


def normal_dn(dn: str) -> str:
    """A DN for comparing: clean_dn, lower-cased (DN attribute values compare case-insensitively in AD)."""
    return clean_dn(dn).lower()


Attrs = dict[str, list[str]]  # lower-cased attribute name -> values


def _attrs(entry: dict[str, object]) -> Attrs:
    raw = entry.get("raw_attributes") or {}
    out: Attrs = {}
    for name, values in raw.items():  # type: ignore[attr-defined]
        out[name.split(";", 1)[0].lower()] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                                              for v in values]
    return out


def _first(attrs: Attrs, name: str | None) -> str:
    if not name:
        return ""
    values = attrs.get(name.lower()) or []
    return values[0].strip() if values else ""


def paged_search(conn: ldap3.Connection, settings: DirectorySettings, base: str, search_filter: str,
                 attributes: list[str], on_page: Callable[[], None] | None = None) -> Iterator[tuple[str, Attrs]]:
    """(DN, attributes) of every entry under `base`, page by page (RFC 2696).

    The loop is written out, not ldap3's paged_search generator, so that a missing base or a refused
    search is an error naming the base, and the pages can be counted."""
    cookie: bytes | None = None
    while True:
        try:
            conn.search(clean_dn(base), search_filter, ldap3.SUBTREE, attributes=attributes,
                        paged_size=settings.page_size, paged_cookie=cookie)
        except LDAPCommunicationError as exc:
            raise DirectoryUnavailable(unreachable_message(settings, exc)) from exc
        except LDAPException as exc:  # e.g. a filter ldap3 cannot parse
            raise DirectoryError(f"search of {base!r} at {settings.url} failed: {exc}") from exc
        result = conn.result or {}
        if result.get("result") == NO_SUCH_OBJECT:
            raise DirectoryError(f"user base {base!r} does not exist at {settings.url} (noSuchObject): "
                                 "fix identity.directory.user_bases")
        if result.get("result") != 0:
            raise DirectoryError(f"search of {base!r} at {settings.url} was refused: {server_said(conn)}")
        if on_page:
            on_page()
        for entry in conn.response or []:
            if entry.get("type") == "searchResEntry":
                yield entry["dn"], _attrs(entry)
        control = (result.get("controls") or {}).get(PAGED_RESULTS) or {}
        cookie = (control.get("value") or {}).get("cookie")
        if not cookie:
            return


def _group_members(conn: ldap3.Connection, settings: DirectorySettings) -> dict[str, set[str]]:
    """normal group DN -> its members (normal DNs; usernames when member_attribute is memberUid)."""
    by_uid = settings.member_attribute.lower() == "memberuid"
    out: dict[str, set[str]] = {}
    for mapping in settings.groups:
        key = normal_dn(mapping.dn)
        if key in out:
            continue
        try:
            conn.search(clean_dn(mapping.dn), "(objectClass=*)", ldap3.BASE, attributes=[settings.member_attribute])
        except LDAPCommunicationError as exc:
            raise DirectoryUnavailable(unreachable_message(settings, exc)) from exc
        except LDAPException as exc:  # a DN ldap3 cannot parse
            raise DirectoryError(f"the mapped group {mapping.dn!r}: {exc}: fix identity.directory.groups") from exc
        if (conn.result or {}).get("result") == NO_SUCH_OBJECT or not conn.response:
            # Refuse rather than move a whole year group to the default: a renamed group needs the policy fixed.
            raise DirectoryError(f"the mapped group {mapping.dn!r} (-> {mapping.group}) does not exist at "
                                 f"{settings.url}, or the service account cannot read it: "
                                 "fix identity.directory.groups")
        if (conn.result or {}).get("result") != 0:
            raise DirectoryError(f"reading the group {mapping.dn!r} at {settings.url} was refused: {server_said(conn)}")
        values = _attrs(conn.response[0]).get(settings.member_attribute.lower(), [])
        out[key] = {v.strip().lower() if by_uid else normal_dn(v) for v in values}
    return out


def _username(attrs: Attrs, settings: DirectorySettings) -> str:
    # sAMAccountName and uid both compare case-insensitively in the directory: one spelling here.
    return _first(attrs, settings.username_attribute).lower()


def read_people(settings: DirectorySettings, on_page: Callable[[], None] | None = None) -> DirectoryRead:
    """Everyone in `user_bases` that maps to a policy group, as PersonRecords (directory_dn set)."""
    attributes = sorted({settings.username_attribute, settings.display_name_attribute, "cn",
                         settings.email_attribute, "userAccountControl", "memberOf",
                         *([settings.upn_attribute] if settings.upn_attribute else [])})
    conn = service_connection(settings)
    read = DirectoryRead([], {m.group: 0 for m in settings.groups})
    seen_dns: set[str] = set()
    seen_names: dict[str, str] = {}

    def page() -> None:
        read.pages += 1
        if on_page:
            on_page()

    try:
        members = _group_members(conn, settings)
        by_uid = settings.member_attribute.lower() == "memberuid"
        mappings = [(normal_dn(m.dn), m.group) for m in settings.groups]
        for base in settings.user_bases:
            for dn, attrs in paged_search(conn, settings, base, settings.user_filter, attributes, page):
                key = normal_dn(dn)
                if key in seen_dns:  # overlapping user_bases
                    continue
                seen_dns.add(key)
                username = _username(attrs, settings)
                if not username:
                    read.invalid.append(f"{dn}: no {settings.username_attribute}")
                    continue
                if username.endswith("$"):  # an AD computer account matched by objectClass=user
                    continue
                if username in seen_names:
                    read.invalid.append(f"{dn}: {settings.username_attribute} {username!r} is also "
                                        f"{seen_names[username]}")
                    continue
                seen_names[username] = dn
                uac = _first(attrs, "userAccountControl")
                if uac.isdigit() and int(uac) & ACCOUNT_DISABLE:
                    read.disabled += 1
                    continue
                in_groups = {normal_dn(g) for g in attrs.get("memberof", [])}
                member_key = username if by_uid else key
                in_groups.update(g for g, m in members.items() if member_key in m)
                group = next((g for g_dn, g in mappings if g_dn in in_groups), None)
                group = group or settings.default_group
                if group is None:
                    read.no_group += 1
                    continue
                upn = _first(attrs, settings.upn_attribute).upper() or None
                if upn and upn_problem(upn):
                    # Most likely upn_attribute names AD's userPrincipalName (a sign-in name), not the DfE UPN.
                    read.invalid.append(f"{dn}: {upn_problem(upn)}; synced without a UPN")
                    upn = None
                read.per_group[group] = read.per_group.get(group, 0) + 1
                read.people.append(PersonRecord(
                    username=username,
                    display_name=_first(attrs, settings.display_name_attribute) or _first(attrs, "cn") or username,
                    email=_first(attrs, settings.email_attribute).lower(),
                    policy_group=group,
                    upn=upn,
                    directory_dn=dn,
                    where=dn,
                ))
    finally:
        conn.unbind()
    return read
