"""Who is behind a request. The people come from the school's roster (MIS export) and directory
(LDAP / Active Directory); the client-IP table from agents, WiFi registrations, RADIUS accounting
and the captive portal; proxy sign-in verifies Basic credentials (the store or an LDAP bind) and
Kerberos (Negotiate) tickets.

    resolver.py     the hot path: client IP / credentials -> Identity, from in-memory tables
    tables.py       identity_syncs: every roster import and directory sync, for the dashboard and metrics
    people.py       applying a list of people from one source to the users table (create, update, retire)
    roster.py       the MIS CSV export -> typed rows with file:line errors
    directory.py    LDAP / AD: paged search of users and groups, mapped to policy groups; the bind check
    negotiate.py    Kerberos / SPNEGO acceptor (python-gssapi)
    radius.py       RADIUS accounting (Start / Interim-Update / Stop) -> client-IP bindings
    portal.py       signed tokens binding a client IP after a captive-portal sign-in
"""

from esafety.identity.resolver import Identity, IdentityResolver

__all__ = ["Identity", "IdentityResolver"]
