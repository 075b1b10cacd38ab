"""A real OpenLDAP slapd for one test (or one module): a school's directory on 127.0.0.1:<free port>.

    dc=school,dc=test
      ou=Pupils   30 pupils (inetOrgPerson: uid, cn, displayName, mail, employeeNumber = DfE UPN)
      ou=Staff    4 staff
      ou=Groups   groupOfNames: cn=Year 7 / Year 8 / Year 9 (10 pupils each), cn=Staff
      ou=Service  cn=esafety, the read-only service account esafety binds as

The ACLs are a school's: the service account and each person may read, anonymous may only
authenticate. The service account may read at most 10 entries per search unless it pages (the
way AD caps a search at MaxPageSize), so a sync that did not page would miss people.
slapd logs at `-d stats`, one line per search result page, to `log_path` (see `pages_sent`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import ldap3
from ldap3.core.exceptions import LDAPException

from tests.conftest import free_port

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA = Path("/etc/ldap/schema")
MODULES = Path("/usr/lib/ldap")
SUFFIX = "dc=school,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "root-secret"
SERVICE_DN = f"cn=esafety,ou=Service,{SUFFIX}"
SERVICE_PW = "service-secret"
PUPILS = f"ou=Pupils,{SUFFIX}"
STAFF = f"ou=Staff,{SUFFIX}"
GROUPS = f"ou=Groups,{SUFFIX}"
SERVICE_LIMIT = 10  # entries per search for the service account unless it pages

_FIRST = ("Amelia", "Oliver", "Isla", "George", "Ava", "Harry", "Mia", "Noah", "Ivy", "Leo",
          "Freya", "Arthur", "Grace", "Oscar", "Lily", "Jack", "Rosie", "Theo", "Ella", "Alfie",
          "Evie", "Finley", "Poppy", "Archie", "Sophia", "Henry", "Willow", "Charlie", "Daisy", "Jacob")
_LAST = ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel", "Wright",
         "Evans", "Thomas", "Roberts", "Khan", "Walker", "Hughes", "Green", "Lewis", "Edwards", "Hall",
         "Clarke", "Jackson", "Wood", "Turner", "Hill", "Moore", "Cooper", "Ward", "King", "Baker")


@dataclass(frozen=True)
class Person:
    uid: str
    given: str
    surname: str
    ou: str  # "Pupils" | "Staff"
    password: str
    upn: str | None  # DfE unique pupil number (employeeNumber); None for staff

    @property
    def dn(self) -> str:
        return f"uid={self.uid},ou={self.ou},{SUFFIX}"

    @property
    def display_name(self) -> str:
        return f"{self.given} {self.surname}"

    @property
    def mail(self) -> str:
        return f"{self.uid}@school.test"


def _upn(i: int) -> str:
    """A valid DfE UPN: its check letter, then 12 digits."""
    from esafety.identity.roster import UPN_LETTERS, upn_problem

    digits = f"{801000000000 + i:012d}"
    return next(c + digits for c in UPN_LETTERS if upn_problem(c + digits) is None)


def default_people() -> tuple[dict[str, list[Person]], list[Person]]:
    """{group cn: members} and every person. Pupil i is in Year 7 + i // 10 (7, 8, 9)."""
    groups: dict[str, list[Person]] = {"Year 7": [], "Year 8": [], "Year 9": [], "Staff": []}
    people = []
    for i in range(30):
        p = Person(f"{_FIRST[i].lower()}.{_LAST[i].lower()}", _FIRST[i], _LAST[i], "Pupils", f"pupil-pw-{i}", _upn(i))
        groups[f"Year {7 + i // 10}"].append(p)
        people.append(p)
    for i, (g, s) in enumerate((("Sarah", "Head"), ("Tom", "Teacher"), ("Priya", "Bursar"), ("Dan", "Tech"))):
        p = Person(f"{g[0].lower()}{s.lower()}", g, s, "Staff", f"staff-pw-{i}", None)
        groups["Staff"].append(p)
        people.append(p)
    return groups, people


def ssha(password: str) -> str:
    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()  # noqa: S324 - slapd's scheme


def _ldif_person(p: Person) -> str:
    lines = [f"dn: {p.dn}", "objectClass: inetOrgPerson", f"uid: {p.uid}", f"cn: {p.display_name}",
             f"givenName: {p.given}", f"sn: {p.surname}", f"displayName: {p.display_name}", f"mail: {p.mail}",
             f"userPassword: {ssha(p.password)}"]
    if p.upn:
        lines.append(f"employeeNumber: {p.upn}")
    return "\n".join(lines) + "\n"


def _ldif(groups: dict[str, list[Person]], people: list[Person]) -> str:
    parts = [f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: school\no: Test School\n"]
    for ou in ("Pupils", "Staff", "Groups", "Service"):
        parts.append(f"dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}\n")
    parts.append(f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
                 f"cn: esafety\nuserPassword: {ssha(SERVICE_PW)}\n")
    parts.extend(_ldif_person(p) for p in people)
    for cn, members in groups.items():
        # groupOfNames needs one member at least: an empty group holds the service account.
        member_lines = "".join(f"member: {m.dn}\n" for m in members) or f"member: {SERVICE_DN}\n"
        parts.append(f"dn: cn={cn},{GROUPS}\nobjectClass: groupOfNames\ncn: {cn}\n{member_lines}")
    return "\n".join(parts)


# The few Active Directory attributes esafety reads, so a test can hold AD-shaped entries
# (`add_ad_user`): sAMAccountName, userAccountControl, memberOf on the user, objectCategory.
# Debian's msuser.schema is "for information only" and does not load as it is.
AD_SCHEMA = """
attributetype ( 1.3.6.1.4.1.99999.1.1 NAME 'sAMAccountName' EQUALITY caseIgnoreMatch
    SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.2 NAME 'userAccountControl' EQUALITY integerMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.3 NAME 'memberOf' EQUALITY distinguishedNameMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )
attributetype ( 1.3.6.1.4.1.99999.1.4 NAME 'objectCategory' EQUALITY caseIgnoreMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.99999.2.1 NAME 'user' SUP top AUXILIARY
    MAY ( sAMAccountName $ userAccountControl $ memberOf $ objectCategory $ displayName $ mail $ employeeNumber ) )
"""


def _config(work: Path, port: int, tls: bool = False) -> str:
    schemas = "".join(f"include {SCHEMA / name}.schema\n" for name in ("core", "cosine", "inetorgperson", "nis"))
    schemas += f"include {work / 'ad.schema'}\n"
    if tls:
        schemas += (f"TLSCACertificateFile {work / 'ca.pem'}\nTLSCertificateFile {work / 'server.pem'}\n"
                    f"TLSCertificateKeyFile {work / 'server.key'}\n")
    return f"""{schemas}
pidfile {work / 'slapd.pid'}
argsfile {work / 'slapd.args'}
modulepath {MODULES}
moduleload back_mdb

access to dn.base="" by * read
access to dn.base="cn=Subschema" by * read
access to attrs=userPassword
    by anonymous auth
    by * none
access to *
    by dn.exact="{SERVICE_DN}" read
    by self read
    by anonymous auth
    by * none

database mdb
maxsize 67108864
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PW}
directory {work / 'data'}
index objectClass eq
index uid,member eq
limits dn.exact="{SERVICE_DN}" size.soft={SERVICE_LIMIT} size.hard={SERVICE_LIMIT}
    size.pr={SERVICE_LIMIT} size.prtotal=unlimited
"""


def make_certificates(work: Path, host: str = "127.0.0.1") -> Path:
    """A test CA (work/ca.pem) and a server certificate for `host` signed by it (server.pem, server.key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey,
             ca: bool) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                                critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("esafety test directory CA", ca_key, "esafety test directory CA", ca_key, True)
    (work / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server = cert(host, server_key, "esafety test directory CA", ca_key, False)
    (work / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (work / "server.key").write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return work / "ca.pem"


@dataclass
class Slapd:
    work: Path
    port: int
    groups: dict[str, list[Person]]
    people: list[Person]
    proc: subprocess.Popen[bytes] | None = None
    _log_offset: int = field(default=0)
    ldaps_port: int | None = None  # with tls: also ldaps:// here (and StartTLS on the plain port)

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        assert self.ldaps_port, "started without tls"
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def ca(self) -> Path:
        return self.work / "ca.pem"

    @property
    def log_path(self) -> Path:
        return self.work / "slapd.log"

    @property
    def conf(self) -> Path:
        return self.work / "slapd.conf"

    def group_dn(self, cn: str) -> str:
        return f"cn={cn},{GROUPS}"

    def person(self, uid: str) -> Person:
        return next(p for p in self.people if p.uid == uid)

    # -- process -------------------------------------------------------------------------------------

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "slapd is already running"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed in stop()
        # -d stats: one line per operation and per search result page, in the foreground.
        urls = f"{self.url}/" + (f" {self.ldaps_url}/" if self.ldaps_port else "")
        self.proc = subprocess.Popen([SLAPD, "-d", "stats", "-h", urls, "-f", str(self.conf)],
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                with self.admin():
                    return
            except (OSError, LDAPException):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"slapd did not answer on {self.url}:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def mark_log(self) -> None:
        """Start counting `pages_sent` from here."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since_mark(self) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)
            return f.read().decode(errors="replace")

    def pages_sent(self) -> list[int]:
        """Entries in each search result slapd sent since mark_log() (one number per page, paged or not)."""
        return [int(n) for n in re.findall(r"SEARCH RESULT tag=101 err=\d+ .*?nentries=(\d+)", self.log_since_mark())]

    # -- changes during a test -----------------------------------------------------------------------

    def admin(self) -> ldap3.Connection:
        conn = ldap3.Connection(ldap3.Server(self.url, get_info=ldap3.NONE, connect_timeout=5), ROOT_DN, ROOT_PW,
                                auto_bind=ldap3.AUTO_BIND_NO_TLS, receive_timeout=10, raise_exceptions=True)
        return conn

    def add_person(self, person: Person, groups: tuple[str, ...] = ()) -> None:
        attrs: dict[str, object] = {"uid": person.uid, "cn": person.display_name, "givenName": person.given,
                                    "sn": person.surname, "displayName": person.display_name, "mail": person.mail,
                                    "userPassword": ssha(person.password)}
        if person.upn:
            attrs["employeeNumber"] = person.upn
        with self.admin() as c:
            c.add(person.dn, ["inetOrgPerson"], attrs)
        self.people.append(person)
        for g in groups:
            self.add_member(g, person.dn)

    def delete(self, dn: str) -> None:
        with self.admin() as c:
            for cn in self.groups:  # as AD does: a deleted account leaves its groups
                self._remove_member(c, cn, dn)
            c.delete(dn)
        self.people = [p for p in self.people if p.dn != dn]

    def move(self, dn: str, new_ou: str) -> str:
        """Move an entry to another OU (e.g. a leaver to ou=Service, outside the synced bases); its new DN."""
        rdn = dn.split(",", 1)[0]
        with self.admin() as c:
            c.modify_dn(dn, rdn, new_superior=f"ou={new_ou},{SUFFIX}")
        return f"{rdn},ou={new_ou},{SUFFIX}"

    def add_member(self, group_cn: str, dn: str) -> None:
        with self.admin() as c:
            c.modify(self.group_dn(group_cn), {"member": [(ldap3.MODIFY_ADD, [dn])]})

    def remove_member(self, group_cn: str, dn: str) -> None:
        with self.admin() as c:
            self._remove_member(c, group_cn, dn)

    def _remove_member(self, c: ldap3.Connection, group_cn: str, dn: str) -> None:
        c.search(self.group_dn(group_cn), "(objectClass=groupOfNames)", ldap3.BASE, attributes=["member"])
        members = [str(m) for m in c.entries[0].member.values] if c.entries else []
        if not any(m.lower() == dn.lower() for m in members):
            return
        if len(members) == 1:  # groupOfNames must keep a member
            c.modify(self.group_dn(group_cn), {"member": [(ldap3.MODIFY_REPLACE, [SERVICE_DN])]})
        else:
            c.modify(self.group_dn(group_cn), {"member": [(ldap3.MODIFY_DELETE, [dn])]})

    def add_ou(self, ou: str) -> str:
        dn = f"ou={ou},{SUFFIX}"
        with self.admin() as c:
            c.add(dn, ["organizationalUnit"], {"ou": ou})
        return dn

    def add_ad_user(self, ou: str, sam: str, display_name: str, password: str, *, uac: int = 512,
                    member_of: tuple[str, ...] = (), category: str = "person") -> str:
        """An AD-shaped account (objectClass user, sAMAccountName, userAccountControl, memberOf on
        the user as AD keeps it); uac 514 is a disabled account. Its DN."""
        dn = f"cn={display_name},ou={ou},{SUFFIX}"
        attrs: dict[str, object] = {"cn": display_name, "sn": display_name.split()[-1], "sAMAccountName": sam,
                                    "userAccountControl": str(uac), "objectCategory": category,
                                    "displayName": display_name, "userPassword": ssha(password)}
        if member_of:
            attrs["memberOf"] = list(member_of)
        with self.admin() as c:
            c.add(dn, ["organizationalPerson", "user"], attrs)
        return dn

    def set_password(self, dn: str, password: str) -> None:
        with self.admin() as c:
            c.modify(dn, {"userPassword": [(ldap3.MODIFY_REPLACE, [ssha(password)])]})

    def modify(self, dn: str, **attrs: str) -> None:
        with self.admin() as c:
            c.modify(dn, {k: [(ldap3.MODIFY_REPLACE, [v])] for k, v in attrs.items()})


def start_slapd(work: Path, tls: bool = False) -> Slapd:
    """A directory with the default school in `work` (created), started and answering. With tls,
    StartTLS on its port and ldaps:// on a second one, with a certificate from work/ca.pem."""
    for binary in (SLAPD, SLAPADD):
        if not Path(binary).exists():  # fail, not skip: CI installs slapd (scripts/install-system-deps.sh)
            raise RuntimeError(f"{binary} is missing: apt-get install slapd ldap-utils")
    work.mkdir(parents=True, exist_ok=True)
    if (work / "data").exists():
        shutil.rmtree(work / "data")
    (work / "data").mkdir()
    groups, people = default_people()
    port = free_port()
    server = Slapd(work, port, groups, people, ldaps_port=free_port() if tls else None)
    (work / "ad.schema").write_text(AD_SCHEMA)
    if tls:
        make_certificates(work)
    server.conf.write_text(_config(work, port, tls))
    (work / "school.ldif").write_text(_ldif(groups, people))
    r = subprocess.run([SLAPADD, "-q", "-f", str(server.conf), "-l", str(work / "school.ldif")],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"slapadd failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    server.start()
    return server


def running_slapd(work: Path) -> Iterator[Slapd]:
    """For a fixture: `yield from running_slapd(tmp)` starts the directory and stops it afterwards."""
    server = start_slapd(work)
    try:
        yield server
    finally:
        server.stop()


GROUP_MAPPINGS = """
      - {dn: "cn=Staff,ou=Groups,dc=school,dc=test", group: staff}
      - {dn: "cn=Year 7,ou=Groups,dc=school,dc=test", group: year7}
      - {dn: "CN=Year 8, OU=Groups, DC=school, DC=test", group: year8}
      - {dn: "cn=Year 9,ou=Groups,dc=school,dc=test", group: year9}"""


def directory_policy(tmp: Path, server: Slapd, *, page_size: int = 5, bind_password: str = SERVICE_PW,
                     directory_extra: str = "", identity_extra: str = "") -> Path:
    """tmp/aup.yaml: the default policy with an identity.directory section for `server` (uid, the
    four groups: Staff first, so a teacher who is also in a year group is staff; Year 8's DN pasted
    with spaces, as people do), and the service account's password in tmp/bind.secret."""
    from tests.support.policy import policy_with

    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "bind.secret").write_text(bind_password + "\n")
    (tmp / "bind.secret").chmod(0o600)
    extra = "".join(f"\n    {line}" for line in directory_extra.strip().splitlines())
    return policy_with(tmp, f"""
identity:
  directory:
    url: {server.url}
    bind_dn: "{SERVICE_DN}"
    bind_password_file: bind.secret
    user_bases: ["{PUPILS}", "{STAFF}"]
    username_attribute: uid
    upn_attribute: employeeNumber
    page_size: {page_size}
    timeout: 5s
    groups:{GROUP_MAPPINGS}{extra}
{identity_extra}""")


def sync_directory(policy: Path, database_url: str, *args: str) -> str:
    """`esafety directory sync` in this process (no second start-up); its stdout. Asserts exit 0."""
    import io
    from contextlib import redirect_stdout
    from unittest import mock

    from esafety.cli import main

    env = {"ESAFETY_POLICY": str(policy), "ESAFETY_DATABASE_URL": database_url,
           "ESAFETY_HOME": str(policy.parent / "home")}
    out = io.StringIO()
    with mock.patch.dict(os.environ, env), redirect_stdout(out):
        code = main(["directory", "sync", *args])
    assert code == 0, out.getvalue()
    return out.getvalue()
