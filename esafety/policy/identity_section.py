"""The policy's `identity:` section, read by the loader with file:line errors.

    identity:
      unidentified: portal        # default | challenge | portal (see IdentitySettings)
      roster:
        year_groups: {7: year7, 8: year8}   # default: year N -> group yearN where the policy has it
        max_retire_share: 0.2
      directory:
        url: ldaps://dc1.school.internal
        bind_dn: "CN=esafety,OU=Service Accounts,DC=school,DC=internal"
        bind_password_file: /etc/esafety/ldap-bind.secret
        user_bases: ["OU=Pupils,DC=school,DC=internal", "OU=Staff,DC=school,DC=internal"]
        username_attribute: sAMAccountName
        groups:                     # first match wins
          - {dn: "CN=Year 7,OU=Groups,DC=school,DC=internal", group: year7}
          - {dn: "CN=All Staff,OU=Groups,DC=school,DC=internal", group: staff}
      proxy_auth: {basic: directory, negotiate: true, keytab: /etc/esafety/proxy.keytab, realms: [SCHOOL.INTERNAL]}
      portal: {session: 8h, bypass: [connectivitycheck.gstatic.com]}
      radius: {listen: "0.0.0.0:1813", secret_file: /etc/esafety/radius.secret, clients: [10.0.0.0/8]}

Secrets (the bind password, the RADIUS secret, the keytab) live in files of their own, never in
the policy, which many people read. Relative paths are relative to the policy file.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Protocol

from esafety.policy.compliance_section import parse_duration
from esafety.policy.schema import (
    UNIDENTIFIED,
    DirectorySettings,
    GroupMapping,
    IdentitySettings,
    PortalSettings,
    ProxyAuthSettings,
    RadiusSettings,
    RosterSettings,
)

SECTION = "identity"
KEYS = ("unidentified", "roster", "directory", "proxy_auth", "portal", "radius")
_DIRECTORY_KEYS = ("url", "bind_dn", "bind_password_file", "start_tls", "ca_file", "user_bases", "user_filter",
                   "username_attribute", "display_name_attribute", "email_attribute", "upn_attribute",
                   "member_attribute", "groups", "default_group", "page_size", "timeout", "max_disable_share")
# AD people, or OpenLDAP inetOrgPerson entries (where objectCategory is undefined and drops out of the OR).
DEFAULT_USER_FILTER = "(|(&(objectCategory=person)(objectClass=user))(objectClass=inetOrgPerson))"
_AUTH_KEYS = ("basic", "negotiate", "keytab", "principal", "realms", "cache")
_BASIC = ("off", "local", "directory")


class _Doc(Protocol):
    def error(self, path: tuple[Any, ...], message: str) -> None: ...


class _Section:
    """Typed reads of one mapping, errors recorded against its path."""

    def __init__(self, doc: _Doc, raw: Any, path: tuple[Any, ...], keys: tuple[str, ...], base: Path):
        self.doc, self.path, self.base = doc, path, base
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            doc.error(path, f"{path[-1]}: is a mapping ({', '.join(keys[:3])}, ...)")
            raw = {}
        self.raw: dict[str, Any] = raw
        for key in raw:
            if key not in keys:
                doc.error((*path, key), f"unknown {path[-1]} setting '{key}' (one of {', '.join(keys)})")

    def has(self, key: str) -> bool:
        return key in self.raw

    def err(self, key: str, message: str) -> None:
        self.doc.error((*self.path, key), message)

    def text(self, key: str, default: str | None = None, choices: tuple[str, ...] = ()) -> str | None:
        v = self.raw.get(key, default)
        if v is None:
            return None
        if not isinstance(v, str) or not v.strip():
            self.err(key, f"'{key}' must be a non-empty string")
            return default
        if choices and v not in choices:
            self.err(key, f"'{key}' must be one of {', '.join(choices)}, not '{v}'")
            return default
        return v.strip()

    def file(self, key: str) -> str | None:
        v = self.text(key)
        return str(self.base / v) if v else None  # an absolute v stays as it is

    def flag(self, key: str, default: bool) -> bool:
        v = self.raw.get(key, default)
        if not isinstance(v, bool):
            self.err(key, f"'{key}' must be true or false")
            return default
        return v

    def whole(self, key: str, default: int, low: int, high: int) -> int:
        v = self.raw.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            self.err(key, f"'{key}' must be a whole number from {low} to {high}")
            return default
        return v

    def share(self, key: str, default: float) -> float:
        v = self.raw.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            self.err(key, f"'{key}' is a share from 0 to 1 (0.2 = 20%)")
            return default
        return float(v)

    def duration(self, key: str, default: int) -> int:
        if key not in self.raw:
            return default
        seconds = parse_duration(self.raw[key])
        if seconds is None or seconds <= 0:
            self.err(key, f"'{key}' must be a duration like 90s, 15m, 8h or 3d, not {self.raw[key]!r}")
            return default
        return seconds

    def texts(self, key: str) -> tuple[str, ...]:
        v = self.raw.get(key, [])
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
            self.err(key, f"'{key}' is a list of strings")
            return ()
        return tuple(x.strip() for x in v)


def read_identity(doc: _Doc, data: dict[str, Any], groups: set[str], base: Path) -> IdentitySettings:
    """The section as typed settings; absent keys take the defaults. Errors go to `doc`."""
    if data.get(SECTION) is None:
        return IdentitySettings(roster=RosterSettings(_default_years(groups)))
    top = _Section(doc, data[SECTION], (SECTION,), KEYS, base)

    def group(sec: _Section, key: str, value: Any, path: tuple[Any, ...] | None = None) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or value not in groups:
            doc.error(path or (*sec.path, key), f"unknown group '{value}' (define it under groups:)")
            return None
        return value

    ro = _Section(doc, top.raw.get("roster"), (SECTION, "roster"), ("year_groups", "max_retire_share"), base)
    years = _default_years(groups)
    raw_years = ro.raw.get("year_groups")
    if raw_years is not None:
        if not isinstance(raw_years, dict):
            ro.err("year_groups", "year_groups maps a year (7, 8, ...; 0 for Reception) to a policy group")
        else:
            years = {}
            for y, g in raw_years.items():
                ypath = (*ro.path, "year_groups", y)
                if isinstance(y, bool) or not str(y).lstrip("-").isdigit() or not -2 <= int(y) <= 14:
                    doc.error(ypath, f"'{y}' is not a year group (a whole number, -2 (nursery) to 14)")
                elif group(ro, "year_groups", g, ypath):
                    years[int(y)] = g
    roster = RosterSettings(years, ro.share("max_retire_share", 0.2))

    directory = None
    if top.raw.get("directory") is not None:
        di = _Section(doc, top.raw["directory"], (SECTION, "directory"), _DIRECTORY_KEYS, base)
        url = di.text("url")
        if url is None:
            doc.error(di.path, "directory: needs url: (ldap://host or ldaps://host)")
        elif not url.lower().startswith(("ldap://", "ldaps://")):
            di.err("url", f"url must start with ldap:// or ldaps://, not '{url}'")
        bases = di.texts("user_bases")
        if not bases:
            doc.error(di.path, "directory: needs user_bases: (the OUs to read people from)")
        mappings = []
        raw_groups = di.raw.get("groups", [])
        if not isinstance(raw_groups, list):
            di.err("groups", "groups is a list of {dn: ..., group: ...}")
            raw_groups = []
        for i, m in enumerate(raw_groups):
            mp = (*di.path, "groups", i)
            if not isinstance(m, dict) or not isinstance(m.get("dn"), str) or "group" not in m:
                doc.error(mp, "a group mapping is {dn: \"CN=...\", group: policy_group}")
                continue
            g = group(di, "groups", m["group"], (*mp, "group"))
            if g:
                mappings.append(GroupMapping(m["dn"].strip(), g))
        directory = DirectorySettings(
            url=url or "",
            bind_dn=di.text("bind_dn", "") or "",
            bind_password_file=di.file("bind_password_file"),
            start_tls=di.flag("start_tls", False),
            ca_file=di.file("ca_file"),
            user_bases=bases,
            # objectCategory=person: in AD, computer accounts are objectClass=user too.
            user_filter=di.text("user_filter", DEFAULT_USER_FILTER) or "",
            username_attribute=di.text("username_attribute", "sAMAccountName") or "sAMAccountName",
            display_name_attribute=di.text("display_name_attribute", "displayName") or "displayName",
            email_attribute=di.text("email_attribute", "mail") or "mail",
            upn_attribute=di.text("upn_attribute"),
            member_attribute=di.text("member_attribute", "member") or "member",
            groups=tuple(mappings),
            default_group=group(di, "default_group", di.raw.get("default_group")),
            page_size=di.whole("page_size", 500, 1, 10_000),
            timeout_seconds=di.duration("timeout", 10),
            max_disable_share=di.share("max_disable_share", 0.2),
        )

    au = _Section(doc, top.raw.get("proxy_auth"), (SECTION, "proxy_auth"), _AUTH_KEYS, base)
    basic = au.text("basic", "local", _BASIC) or "local"
    if basic == "directory" and directory is None:
        au.err("basic", "basic: directory needs a directory: section to bind against")
    negotiate = au.flag("negotiate", False)
    keytab = au.file("keytab")
    if negotiate and keytab is None:
        au.err("negotiate", "negotiate: true needs keytab: (the proxy's HTTP/ service key)")
    proxy_auth = ProxyAuthSettings(basic, negotiate, keytab, au.text("principal"), au.texts("realms"),
                                   au.duration("cache", 300))

    po = _Section(doc, top.raw.get("portal"), (SECTION, "portal"), ("session", "bypass"), base)
    portal = PortalSettings(po.duration("session", 8 * 3600), tuple(h.lower() for h in po.texts("bypass")))

    ra = _Section(doc, top.raw.get("radius"), (SECTION, "radius"), ("listen", "secret_file", "clients", "binding"),
                  base)
    listen = ra.text("listen", "0.0.0.0:1813") or "0.0.0.0:1813"
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        ra.err("listen", f"listen is host:port, not '{listen}'")
    clients = ra.texts("clients")
    for i, c in enumerate(clients):
        try:
            ipaddress.ip_network(c, strict=False)
        except ValueError:
            doc.error((*ra.path, "clients", i), f"'{c}' is not an address or CIDR range")
    radius = RadiusSettings(listen, ra.file("secret_file"), clients, ra.duration("binding", 12 * 3600))

    unidentified = top.text("unidentified", "default", UNIDENTIFIED) or "default"
    return IdentitySettings(unidentified, roster, directory, proxy_auth, portal, radius)


def _default_years(groups: set[str]) -> dict[int, str]:
    return {y: f"year{y}" for y in range(-2, 15) if f"year{y}" in groups}
