"""Kerberos single sign-on at the proxy: one `Proxy-Authorization: Negotiate <token>` -> the person.

The token is SPNEGO (what browsers and curl send) or bare Kerberos, carrying the client's service
ticket for the proxy (HTTP/<proxy name>@REALM) and an authenticator. Accepting it is local: the
ticket is decrypted with the key in the proxy's keytab, the authenticator with the session key,
and the authenticator is checked against krb5's replay cache (a small file, shared by the proxy
workers on one machine: KRB5RCACHEDIR, default /var/tmp). No KDC round trip: the acceptor
credentials are acquired once, and each accept reads three small local files (krb5.conf, the
keytab, the replay cache), ~55 us in all, so the proxy calls `accept` on its event loop. Because
krb5 reads the keytab on each accept, a new key added to it (a rotation) is used without a restart.

Only Kerberos is accepted. A client without a ticket for the proxy (not joined to the domain, or
told the proxy by an IP address) falls back to NTLM, which would need a second round and a domain
controller to check: that token is rejected with a reason saying so, and the client is asked
again (or, if it sends nothing we can use, filtered as the policy's unidentified clients are).

python-gssapi is an optional dependency (`pip install 'esafety[kerberos]'`, which builds against
MIT Kerberos: Debian's libkrb5-dev): it is imported only when a policy turns Negotiate on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

_NTLMSSP = b"NTLMSSP\x00"  # a bare NTLM message (a Windows client with no ticket for us)
MAX_TOKEN = 64 * 1024  # Windows' MaxTokenSize is 48 KiB (a ticket with a large PAC); more is not Kerberos
_KRB5 = "1.2.840.113554.1.2.2"
_MS_KRB5 = "1.2.840.48018.1.2.2"  # the OID Windows puts first in its SPNEGO offer
_SPNEGO = "1.3.6.1.5.5.2"


class NegotiateUnavailable(Exception):
    """Kerberos sign-in cannot work with this configuration (module, keytab or key missing)."""


@dataclass(frozen=True)
class NegotiateResult:
    username: str | None  # the principal's name without the realm, lower-cased; None: rejected
    principal: str | None  # e.g. amy.y8@SCHOOL.INTERNAL (also on some rejections, for the log)
    reply: bytes | None  # the acceptor's answer (mutual authentication), for Proxy-Authenticate
    reason: str  # "ok", or why the token was rejected


def _rejected(reason: str, principal: str | None = None) -> NegotiateResult:
    return NegotiateResult(None, principal, None, reason)


class NegotiateAcceptor:
    """Accepts Kerberos tokens for the service keys in `keytab`.

    principal: accept only tickets for this service principal (HTTP/proxy.school.internal or
    HTTP/proxy.school.internal@REALM); None accepts a ticket for any key in the keytab (a proxy
    known by several names). realms: the client realms accepted (upper-cased); empty accepts any
    realm the KDC vouches for (including realms it trusts).
    """

    def __init__(self, keytab: str, principal: str | None = None, realms: tuple[str, ...] = ()) -> None:
        try:
            import gssapi  # noqa: PLC0415 - optional: only a policy with negotiate: true needs it
            import gssapi.raw as graw  # noqa: PLC0415
            from gssapi.raw import ext_cred_store  # noqa: F401, PLC0415 - acquire_cred_from: MIT or Heimdal
            from gssapi.raw.ext_rfc4178 import set_neg_mechs  # noqa: PLC0415
        except ImportError as exc:
            raise NegotiateUnavailable(
                "Kerberos sign-in (negotiate: true) needs python-gssapi: pip install 'esafety[kerberos]' "
                f"(it builds against MIT Kerberos: apt-get install libkrb5-dev) [{exc}]") from exc
        self._raw = graw
        self._GSSError: type[Exception] = gssapi.exceptions.GSSError
        self._bad_mech: type[Exception] = gssapi.exceptions.BadMechanismError
        path = keytab.removeprefix("FILE:")
        if not path:
            raise NegotiateUnavailable("negotiate: true needs keytab: (the proxy's HTTP/ service key)")
        try:
            with open(path, "rb") as f:  # krb5 says "nonexistent or empty" for a file it may not read
                first = f.read(1)
        except OSError as exc:
            raise NegotiateUnavailable(f"keytab {path} cannot be read: {exc.strerror} "
                                       f"(the proxy runs as uid {os.getuid()})") from exc
        if not first:
            raise NegotiateUnavailable(f"keytab {path} is empty (no service key exported to it)")
        if first != b"\x05":
            raise NegotiateUnavailable(f"keytab {path} is not a Kerberos keytab (export it with ktpass or "
                                       "kadmin ktadd)")
        oid = gssapi.OID.from_int_seq
        self._kerberos = frozenset({oid(_KRB5), oid(_MS_KRB5)})
        try:
            name = graw.import_name(principal.encode(), gssapi.NameType.kerberos_principal) if principal else None
            # Kerberos, and SPNEGO negotiating nothing but Kerberos: never IAKERB, whose acceptor
            # relays to the KDC (network I/O on the event loop), nor NTLM.
            creds = graw.acquire_cred_from({b"keytab": path.encode()}, name=name, usage="accept",
                                           mechs=[oid(_KRB5), oid(_SPNEGO)]).creds
            set_neg_mechs(creds, {oid(_KRB5)})
        except self._GSSError as exc:
            what = f"no key for {principal} in keytab {path}" if principal else f"keytab {path}"
            raise NegotiateUnavailable(f"{what}: {_why(exc)}") from exc
        self._creds: Any = creds
        self.keytab = path
        self.principal = principal
        self.realms = frozenset(r.upper() for r in realms)

    def accept(self, token: bytes) -> NegotiateResult:
        """One token (base64-decoded) -> who sent it, or the reason it was rejected. Never raises
        for what a client sends: a garbage, forged, expired, replayed or other service's token is
        a rejection."""
        if not token:
            return _rejected("empty token")
        if len(token) > MAX_TOKEN:
            return _rejected(f"token of {len(token)} bytes is larger than any Kerberos ticket")
        if token.startswith(_NTLMSSP):
            return _rejected("NTLM is not accepted, only Kerberos (the client has no ticket for the proxy: "
                             "is the device on the domain, and does it name the proxy by its DNS name?)")
        raw = self._raw
        try:
            # The raw call, which raises on failure. gssapi.SecurityContext.step() instead hands back
            # SPNEGO's reject token and defers the error to the context's next use: a replayed or
            # forged token would look accepted to a caller that did not look again.
            res = raw.accept_sec_context(token, acceptor_creds=self._creds)
        except self._bad_mech:
            return _rejected("no Kerberos in the client's offer (NTLM only?): only Kerberos is accepted")
        except self._GSSError as exc:
            return _rejected(f"ticket rejected: {_why(exc)}")
        if res.more_steps:
            # SPNEGO with no Kerberos ticket in the first token (an NTLM offer first, say): it would
            # take another round, and we accept Kerberos in one step or not at all.
            return _rejected("SPNEGO wants another round (the client offered no Kerberos ticket in its first "
                             "token, e.g. NTLM first): only Kerberos in one step is accepted")
        if res.mech not in self._kerberos:
            return _rejected(f"mechanism {res.mech.dotted_form} is not Kerberos")
        try:
            principal = raw.display_name(res.initiator_name).name.decode("utf-8")
        except (self._GSSError, UnicodeDecodeError) as exc:
            return _rejected(f"client name cannot be read: {exc}")
        return self._person(principal, res.token)

    def _person(self, principal: str, reply: bytes | None) -> NegotiateResult:
        name, at, realm = principal.rpartition("@")
        if not at or not name or not realm:
            return _rejected("client principal has no realm", principal)
        if "\\" in name:  # an escaped / or @ (enterprise name): not a plain sAMAccountName
            return _rejected("client principal is not a plain user name", principal)
        if "/" in name:  # host/pc1, amy/admin, WELLKNOWN/ANONYMOUS: a service or an alias, not a person
            return _rejected("client principal is a service or instance principal, not a person", principal)
        if self.realms and realm.upper() not in self.realms:
            return _rejected(f"realm {realm} is not accepted (realms: {', '.join(sorted(self.realms))})",
                             principal)
        return NegotiateResult(name.lower(), principal, reply or None, "ok")


_NO_DETAIL = ("Unknown error", "Success")  # minor texts that say nothing (the major one then does)


def _why(exc: Any) -> str:
    """The useful part of a GSS error: the Kerberos (minor) message, else the GSS (major) one."""
    try:
        minor = [m for m in exc.get_all_statuses(exc.min_code, False) if m and m not in _NO_DETAIL]
        if minor:
            return "; ".join(minor)
        major = "; ".join(m for m in exc.get_all_statuses(exc.maj_code, True) if m)
        if major.startswith("Unspecified GSS failure"):  # says only "see the minor code", which said nothing
            return "malformed or altered token (no further detail from GSS-API)"
        return major or str(exc)
    except Exception:  # the message lookup itself failed: the exception's own text will do
        return str(exc)
