"""Who is behind a request. The people come from the school's roster (MIS export) and directory
(LDAP / Active Directory); the client-IP table from agents, WiFi registrations, RADIUS accounting
and the captive portal; proxy sign-in verifies Basic credentials (the store or an LDAP bind) and
Kerberos (Negotiate) tickets.

    resolver.py     the hot path: client IP / credentials -> Identity, from in-memory tables
    tables.py       identity_syncs: every roster import and directory sync, for the dashboard and metrics
    people.py       applying a list of people from one source to the users table (create, update, retire)
    roster.py       the MIS CSV export -> typed rows with file:line errors
    directory.py    LDAP / AD: paged search of users and groups, mapped to policy groups
    directory_bind.py  a password checked by binding as the person (proxy Basic, dashboard, portal)
    negotiate.py    Kerberos / SPNEGO acceptor (python-gssapi)
    radius.py       RADIUS accounting (Start / Interim-Update / Stop) -> client-IP bindings
    radius_packets.py  the RFC 2866 packets, decoded and encoded
    portal.py       signed tokens binding a client IP after a captive-portal sign-in
    syncmetrics.py  the last import / sync of each source, as gauges (the dashboard's collector)
"""

from esafety.identity.resolver import Identity, IdentityResolver

__all__ = ["Identity", "IdentityResolver"]
