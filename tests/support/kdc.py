"""A real MIT Kerberos KDC (Debian's krb5-kdc) for one test module, on 127.0.0.1:<free port>.

    realm ESAFETY.TEST, KDC on TCP and UDP at 127.0.0.1:<port>
    HTTP/localhost@ESAFETY.TEST   the proxy's service principal, its keys exported to `keytab`
    <user>@ESAFETY.TEST           people with passwords (start_kdc(users=...), add_user)

Everything lives in one temp folder (krb5.conf, kdc.conf, the database, the keytab, ticket caches,
the acceptor's replay cache): nothing is read from or written to /etc or the packaged service.
`localhost` works without DNS: no canonicalisation, no reverse lookups. Setting up takes ~0.2 s
(kdb5_util create, one kadmin.local batch, krb5kdc -n in the foreground).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_port

REALM = "ESAFETY.TEST"
SERVICE = "HTTP/localhost"  # the proxy's principal: clients ask for HTTP/<the proxy's name>
KRB5KDC = "/usr/sbin/krb5kdc"
KDB5_UTIL = "/usr/sbin/kdb5_util"
KADMIN_LOCAL = "/usr/sbin/kadmin.local"  # Debian package krb5-admin-server
KINIT = "/usr/bin/kinit"
_MASTER_PASSWORD = "kdc-master-secret"


class KdcError(RuntimeError):
    pass


def _need(path: str, package: str) -> None:
    if not Path(path).exists():  # a failure, not a skip: CI installs these (scripts/install-system-deps.sh)
        raise KdcError(f"{path} is missing: apt-get install {package}")


@dataclass
class Kdc:
    root: Path
    port: int
    proc: subprocess.Popen[bytes]
    keytab: Path  # the keys of SERVICE (and of any service added with keytab=None)
    users: dict[str, str] = field(default_factory=dict)

    @property
    def krb5_conf(self) -> Path:
        return self.root / "krb5.conf"

    @property
    def log_path(self) -> Path:
        return self.root / "kdc.log"

    @property
    def rcache_dir(self) -> Path:
        return self.root / "rcache"

    def env(self) -> dict[str, str]:
        """What a Kerberos client or acceptor needs to find this realm (merge into os.environ)."""
        return {"KRB5_CONFIG": str(self.krb5_conf), "KRB5_KDC_PROFILE": str(self.root / "kdc.conf")}

    def acceptor_env(self) -> dict[str, str]:
        """For the proxy: the realm, the keytab, and a replay cache of its own in the temp folder."""
        return {**self.env(), "KRB5_KTNAME": f"FILE:{self.keytab}", "KRB5RCACHEDIR": str(self.rcache_dir)}

    def client_env(self, ccache: Path) -> dict[str, str]:
        """For a client (curl): the realm and the ticket cache kinit filled."""
        return {**self.env(), "KRB5CCNAME": f"FILE:{ccache}"}

    def _run(self, cmd: list[str], stdin: str = "") -> str:
        r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30,
                           env={**os.environ, **self.env()})
        if r.returncode != 0:
            raise KdcError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
        return r.stdout + r.stderr

    def kadmin(self, *queries: str) -> str:
        """Run kadmin.local queries in one process (it exits 0 even when a query fails: check what you need)."""
        return self._run([KADMIN_LOCAL, "-r", REALM], "\n".join(queries) + "\n")

    def principals(self) -> set[str]:
        out = self._run([KADMIN_LOCAL, "-r", REALM, "-q", "listprincs"])
        return {line.strip() for line in out.splitlines() if line.strip().endswith("@" + REALM)}

    def add_user(self, name: str, password: str) -> None:
        self.kadmin(_addprinc(name, password))
        if f"{name}@{REALM}" not in self.principals():
            raise KdcError(f"could not add {name}")
        self.users[name] = password

    def add_service(self, principal: str, keytab: Path | None = None) -> Path:
        """A service principal with a random key, exported to `keytab` (default: the shared one)."""
        path = keytab or self.keytab
        out = self.kadmin(f"addprinc -randkey {principal}", f"ktadd -k {path} {principal}")
        if not path.exists() or "added to keytab" not in out:
            raise KdcError(f"could not export {principal} to {path}:\n{out}")
        return path

    def add_service_key(self, principal: str, keytab: Path) -> None:
        """A new random key for an existing service (kvno + 1), added to `keytab` beside the old ones."""
        out = self.kadmin(f"ktadd -k {keytab} {principal}")
        if "added to keytab" not in out:
            raise KdcError(f"could not rotate the key of {principal}:\n{out}")

    def kinit(self, user: str, password: str | None = None) -> Path:
        """Get `user` a ticket-granting ticket; returns the ticket cache (a file of its own)."""
        ccache = self.root / f"{user.replace('/', '_')}.ccache"
        pw = self.users.get(user, "") if password is None else password
        self._run([KINIT, "-c", f"FILE:{ccache}", f"{user}@{REALM}"], pw + "\n")
        return ccache

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def initiate(ccache: Path, service: str = "HTTP@localhost", spnego: bool = True) -> bytes:
    """The first token a client sends for `service` (GSS host-based name) with the tickets in
    `ccache`: SPNEGO with Kerberos inside, as browsers and curl send it, or bare Kerberos.
    KRB5_CONFIG must be in os.environ (the ticket for the service comes from the KDC)."""
    import gssapi  # noqa: PLC0415 - only the Kerberos tests need it

    creds = gssapi.Credentials(usage="initiate", store={"ccache": f"FILE:{ccache}"})
    mech = gssapi.OID.from_int_seq("1.3.6.1.5.5.2" if spnego else "1.2.840.113554.1.2.2")
    ctx = gssapi.SecurityContext(name=gssapi.Name(service, gssapi.NameType.hostbased_service), creds=creds,
                                 usage="initiate", mech=mech)
    token = ctx.step()
    assert token
    return token


def _addprinc(name: str, password: str) -> str:
    if '"' in password or "\n" in password:  # kadmin's command line quotes with "..."
        raise ValueError("a test password without double quotes or newlines, please")
    return f'addprinc -pw "{password}" {name}'


def _write_config(root: Path, port: int) -> None:
    (root / "krb5.conf").write_text(f"""\
[libdefaults]
    default_realm = {REALM}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    forwardable = false

[realms]
    {REALM} = {{
        kdc = 127.0.0.1:{port}
    }}

[domain_realm]
    localhost = {REALM}
""")
    (root / "kdc.conf").write_text(f"""\
[kdcdefaults]
    kdc_listen = 127.0.0.1:{port}
    kdc_tcp_listen = 127.0.0.1:{port}

[realms]
    {REALM} = {{
        database_name = {root / "db" / "principal"}
        key_stash_file = {root / "db" / "stash"}
        acl_file = {root / "db" / "kadm5.acl"}
        max_life = 10h
    }}

[logging]
    kdc = FILE:{root / "kdc.log"}
""")
    (root / "db").mkdir()
    (root / "db" / "kadm5.acl").write_text("")
    (root / "rcache").mkdir()


def start_kdc(tmp: Path, users: dict[str, str] | None = None) -> Kdc:
    """A KDC with SERVICE in `tmp/http.keytab` and `users` (name -> password), ready for kinit."""
    for path, package in ((KRB5KDC, "krb5-kdc"), (KDB5_UTIL, "krb5-kdc"), (KADMIN_LOCAL, "krb5-admin-server"),
                          (KINIT, "krb5-user")):
        _need(path, package)
    root = tmp / "kdc"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    port = free_port()
    _write_config(root, port)
    env = {**os.environ, "KRB5_CONFIG": str(root / "krb5.conf"), "KRB5_KDC_PROFILE": str(root / "kdc.conf")}
    subprocess.run([KDB5_UTIL, "-r", REALM, "create", "-s", "-P", _MASTER_PASSWORD], env=env, check=True,
                   capture_output=True, timeout=30)
    with open(root / "krb5kdc.out", "wb") as out:
        proc = subprocess.Popen([KRB5KDC, "-n", "-r", REALM], env=env, stdout=out, stderr=subprocess.STDOUT)
    kdc = Kdc(root, port, proc, root / "http.keytab")
    try:
        kdc.add_service(SERVICE)
        people = users or {}
        if people:
            kdc.kadmin(*(_addprinc(name, pw) for name, pw in people.items()))
            missing = {f"{n}@{REALM}" for n in people} - kdc.principals()
            if missing:
                raise KdcError(f"could not add {sorted(missing)}")
            kdc.users.update(people)
        _wait_listening(kdc)
    except BaseException:
        kdc.stop()
        raise
    return kdc


def _wait_listening(kdc: Kdc, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if kdc.proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", kdc.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    out = (kdc.root / "krb5kdc.out").read_text(errors="replace")
    log = kdc.log_path.read_text(errors="replace") if kdc.log_path.exists() else ""
    kdc.stop()
    raise KdcError(f"krb5kdc did not start on 127.0.0.1:{kdc.port}:\n{out}\n{log}")
