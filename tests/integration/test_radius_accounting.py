"""`esafety radius run` as a real process, driven by FreeRADIUS's radclient: 802.1X accounting
(Start / Interim-Update / Stop / Accounting-On) becomes the client-IP table the proxy reads, on
SQLite and PostgreSQL; bad packets and a missing store lose nothing; and the proxy itself files
a pupil's requests under their name after a Start, and not after the Stop."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from esafety.identity import Identity, IdentityResolver
from esafety.identity.radius_packets import ACCT_STATUS_TYPE, START, USER_NAME, encode_request
from esafety.store.db import sessions, upgrade
from esafety.store.models import IpBinding, User
from tests.conftest import PG_ADMIN_URL, ROOT, drop_pg_database, free_port
from tests.integration.conftest import access_rows, wait_for
from tests.support.proxy import start_proxy

ESAFETY = str(Path(sys.executable).with_name("esafety"))
SECRET = "wlc-shared-secret"


def radclient() -> str:
    path = shutil.which("radclient")
    assert path, "radclient is missing: apt-get install freeradius-utils (scripts/install-system-deps.sh)"
    return path


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def radius_policy(tmp: Path, clients: tuple[str, ...] = ("127.0.0.1",)) -> Path:
    """policies/aup.yaml (and its lists) with identity.radius set: the secret in a file beside it."""
    shutil.copytree(ROOT / "policies" / "lists", tmp / "lists", dirs_exist_ok=True)
    doc = yaml.safe_load((ROOT / "policies" / "aup.yaml").read_text())
    if not isinstance(doc.get("identity"), dict):
        doc["identity"] = {}
    doc["identity"]["radius"] = {"secret_file": "radius.secret", "clients": list(clients)}
    (tmp / "radius.secret").write_text(SECRET + "\n")
    path = tmp / "aup.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


@dataclass
class RadiusUnderTest:
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log_path: Path
    database_url: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send(self, status: str, ip: str | None, session: str, user: str = "amy.y8", *, interval: int | None = None,
             nas: str = "127.0.0.1", secret: str = SECRET, timeout: int = 3, retries: int = 1,
             mac: str | None = None) -> subprocess.CompletedProcess[str]:
        """One Accounting-Request through radclient; returncode 0 when it got an Accounting-Response."""
        lines = [f'User-Name = "{user}"', f"Acct-Status-Type = {status}", f'Acct-Session-Id = "{session}"',
                 f"NAS-IP-Address = {nas}"]
        lines += [f"Framed-IP-Address = {ip}"] if ip else []
        lines += [f"Acct-Interim-Interval = {interval}"] if interval else []
        lines += [f'Calling-Station-Id = "{mac}"'] if mac else []
        return subprocess.run(self.radclient_argv(secret, timeout, retries), input="\n".join(lines) + "\n",
                              capture_output=True, text=True, timeout=timeout * retries + 30)

    def radclient_argv(self, secret: str = SECRET, timeout: int = 3, retries: int = 1) -> list[str]:
        return [radclient(), "-x", "-t", str(timeout), "-r", str(retries), f"127.0.0.1:{self.port}", "acct", secret]

    def counts(self) -> dict[tuple[str, str], float]:
        """esafety_radius_packets_total by (status, result), from the metrics endpoint."""
        body = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return {(s.labels["status"], s.labels["result"]): s.value
                for fam in text_string_to_metric_families(body) if fam.name == "esafety_radius_packets"
                for s in fam.samples if s.name.endswith("_total")}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_radius(tmp: Path, database_url: str, policy: Path | None = None) -> RadiusUnderTest:
    policy = policy or radius_policy(tmp)
    port, metrics_port = free_udp_port(), free_port()
    log_path = tmp / "radius.log"
    env = {**os.environ, "ESAFETY_POLICY": str(policy), "ESAFETY_DATABASE_URL": database_url,
           "ESAFETY_HOME": str(tmp / "home")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([ESAFETY, "radius", "run", "--listen", f"127.0.0.1:{port}",
                                 "--metrics-port", str(metrics_port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    r = RadiusUnderTest(proc, port, metrics_port, log_path, database_url)
    if not wait_for(lambda: proc.poll() is not None or "radius: listening on" in r.log(), timeout=30) \
            or proc.poll() is not None:
        r.stop()
        raise RuntimeError(f"esafety radius run did not start:\n{r.log()}")
    return r


@pytest.fixture
def radius(tmp_path: Path, database_url: str) -> Iterator[RadiusUnderTest]:
    r = start_radius(tmp_path, database_url)
    yield r
    r.stop()


def add_person(url: str, username: str, group: str, active: bool = True) -> None:
    with sessions(url)() as s:
        s.add(User(username=username, policy_group=group, source="roster", active=active))
        s.commit()


def binding(url: str, ip: str) -> IpBinding | None:
    with sessions(url)() as s:
        return s.get(IpBinding, ip)


def aware(t: datetime | None) -> datetime:
    assert t is not None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def answered(r: subprocess.CompletedProcess[str]) -> bool:
    return r.returncode == 0 and "Received Accounting-Response" in r.stdout


def test_start_interim_and_stop_make_extend_and_end_the_binding(radius: RadiusUnderTest) -> None:
    url = radius.database_url
    add_person(url, "amy.y8", "year8")
    before = datetime.now(UTC)
    r = radius.send("Start", "10.50.0.8", "S-1", "AMY.Y8@school.internal", interval=300, mac="3C-22-FB-12-34-56")
    assert answered(r), r.stdout + r.stderr + radius.log()
    b = binding(url, "10.50.0.8")
    assert b is not None and (b.username, b.source, b.session_id, b.nas) == ("amy.y8", "radius", "S-1", "127.0.0.1")
    assert b.device == "3c:22:fb:12:34:56"
    first_expiry = aware(b.expires_at)
    assert before + timedelta(seconds=600) <= first_expiry <= datetime.now(UTC) + timedelta(seconds=661)
    resolver = IdentityResolver(url, "unknown")
    resolver.refresh()
    assert resolver.resolve("10.50.0.8") == Identity("amy.y8", "year8", "3c:22:fb:12:34:56", "radius")

    assert answered(radius.send("Interim-Update", "10.50.0.8", "S-1", "SCHOOL\\\\amy.y8", interval=600))
    b = binding(url, "10.50.0.8")
    assert b is not None and aware(b.expires_at) > first_expiry + timedelta(seconds=500), "Interim-Update extends it"

    assert answered(radius.send("Stop", "10.50.0.8", "S-1"))
    assert binding(url, "10.50.0.8") is None
    resolver.refresh()
    assert resolver.resolve("10.50.0.8") == Identity(None, "unknown")

    # A Stop for an older session leaves the newer one.
    add_person(url, "ben.y9", "year9")
    assert answered(radius.send("Start", "10.50.0.9", "OLD", "amy.y8"))
    assert answered(radius.send("Start", "10.50.0.9", "NEW", "ben.y9"))  # the address was handed on
    assert answered(radius.send("Stop", "10.50.0.9", "OLD", "amy.y8"))  # amy's late Stop
    b = binding(url, "10.50.0.9")
    assert b is not None and (b.username, b.session_id) == ("ben.y9", "NEW")
    # Without an Acct-Interim-Interval the binding lasts identity.radius.binding (12 h by default).
    assert aware(b.expires_at) > datetime.now(UTC) + timedelta(hours=11)


def test_who_is_not_bound_is_still_answered(radius: RadiusUnderTest) -> None:
    url = radius.database_url
    add_person(url, "gone.y11", "year11", active=False)
    add_person(url, "cat.y7", "year7")
    add_person(url, "amy.y8", "year8")
    with sessions(url)() as s:  # an enrolled device's agent knows who is signed in: it stays
        s.add(IpBinding(ip="10.50.0.30", username="cat.y7", device="LAPTOP-3", source="agent",
                        expires_at=datetime.now(UTC) + timedelta(minutes=10)))
        s.commit()
    for user, ip in (("host/PC1.school.internal", "10.50.0.10"), ("nobody@school.internal", "10.50.0.11"),
                     ("gone.y11", "10.50.0.12")):
        assert answered(radius.send("Start", ip, f"S-{ip}", user)), user
        assert binding(url, ip) is None, user
    assert answered(radius.send("Start", "10.50.0.30", "S-30", "amy.y8"))
    b = binding(url, "10.50.0.30")
    assert b is not None and (b.username, b.source) == ("cat.y7", "agent")
    assert answered(radius.send("Start", None, "S-13", "cat.y7"))  # no address yet: nothing to bind
    counts = radius.counts()
    for result in ("machine", "unknown_user", "kept", "incomplete"):
        assert counts.get(("start", result), 0) >= 1, (result, counts)


def test_bad_packets_get_no_answer_and_the_server_keeps_answering(radius: RadiusUnderTest) -> None:
    url = radius.database_url
    add_person(url, "amy.y8", "year8")
    wrong = radius.send("Start", "10.50.2.1", "W", secret="not-the-secret", timeout=1)
    assert not answered(wrong) and "No reply" in wrong.stdout + wrong.stderr
    assert binding(url, "10.50.2.1") is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        for junk in (b"", b"\x04", bytes([4, 1, 0, 200]) + bytes(16),  # short; Length past the datagram
                     bytes([4, 1, 0, 23]) + bytes(16) + b"\x01\x00\x00",  # an attribute of length 0
                     bytes([1, 1, 0, 20]) + bytes(16), os.urandom(300)):  # an Access-Request; noise
            raw.sendto(junk, ("127.0.0.1", radius.port))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:  # a NAS not in identity.radius.clients
        stranger.bind(("127.0.0.2", 0))
        stranger.settimeout(1)
        stranger.sendto(encode_request(1, [(ACCT_STATUS_TYPE, START.to_bytes(4, "big")), (USER_NAME, b"amy.y8")],
                                       SECRET.encode()), ("127.0.0.1", radius.port))
        with pytest.raises(TimeoutError):
            stranger.recv(100)
    assert answered(radius.send("Start", "10.50.2.2", "G"))
    assert binding(url, "10.50.2.2") is not None
    assert radius.proc.poll() is None
    counts = radius.counts()
    assert counts.get(("unknown", "bad_authenticator"), 0) >= 1
    assert counts.get(("unknown", "malformed"), 0) >= 5
    assert counts.get(("unknown", "unknown_client"), 0) >= 1
    assert counts.get(("start", "ok"), 0) >= 1
    assert '"result": "malformed"' in radius.log() and "not in identity.radius.clients" in radius.log()


def test_retransmissions_apply_once_and_a_nas_reboot_ends_its_sessions(radius: RadiusUnderTest) -> None:
    url = radius.database_url
    add_person(url, "amy.y8", "year8")
    start = encode_request(42, [(ACCT_STATUS_TYPE, START.to_bytes(4, "big")), (USER_NAME, b"amy.y8"),
                                (8, bytes([10, 50, 3, 1])), (44, b"R-1"), (4, bytes([127, 0, 0, 1]))], SECRET.encode())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nas:
        nas.settimeout(5)
        nas.sendto(start, ("127.0.0.1", radius.port))
        first = nas.recv(100)
        assert binding(url, "10.50.3.1") is not None
        assert answered(radius.send("Stop", "10.50.3.1", "R-1"))
        nas.sendto(start, ("127.0.0.1", radius.port))  # the Start again, as if our answer were lost
        assert nas.recv(100) == first
    assert binding(url, "10.50.3.1") is None, "the repeated Start was not applied after the Stop"
    assert radius.counts().get(("start", "duplicate"), 0) == 1

    # The NAS restarted (Accounting-On): every session it reported is over; another NAS's are not.
    assert answered(radius.send("Start", "10.50.1.1", "A", nas="127.0.0.1"))
    assert answered(radius.send("Start", "10.50.1.2", "B", nas="127.0.0.1"))
    assert answered(radius.send("Start", "10.50.1.3", "C", nas="10.0.0.99"))  # another AP
    assert answered(radius.send("Accounting-On", None, "reboot"))
    assert binding(url, "10.50.1.1") is None and binding(url, "10.50.1.2") is None
    b = binding(url, "10.50.1.3")
    assert b is not None and b.nas == "10.0.0.99"


def _unmade_store(database_url: str, tmp: Path) -> str:
    """A store that is not there yet: an SQLite file with no schema, or a PostgreSQL database not created."""
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp / 'later' / 'esafety.db'}"
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/esafety_test_{uuid.uuid4().hex[:10]}"


def test_with_the_store_down_nothing_is_answered_and_the_retransmission_lands_later(
        tmp_path: Path, database_url: str) -> None:
    url = _unmade_store(database_url, tmp_path)
    r = start_radius(tmp_path, url)
    nas: subprocess.Popen[str] | None = None
    try:
        assert "the store is not reachable" in r.log()
        # The NAS (radclient) retransmits the same packet every second until it gets an answer.
        request = tmp_path / "start.txt"
        request.write_text('User-Name = "amy.y8"\nAcct-Status-Type = Start\nFramed-IP-Address = 10.50.4.1\n'
                           'Acct-Session-Id = "D-1"\nNAS-IP-Address = 127.0.0.1\n')
        with open(request) as stdin:
            nas = subprocess.Popen(r.radclient_argv(timeout=1, retries=40), stdin=stdin, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        assert wait_for(lambda: r.counts().get(("start", "store_error"), 0) >= 2, timeout=20), r.log()
        assert nas.poll() is None, "no answer while the store is down"
        assert r.proc.poll() is None, "the server survives"
        if url.startswith("postgresql"):
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"'))
            admin.dispose()
        upgrade(url)
        add_person(url, "amy.y8", "year8")
        out, _ = nas.communicate(timeout=60)
        assert nas.returncode == 0 and "Received Accounting-Response" in out, out
        b = binding(url, "10.50.4.1")
        assert b is not None and b.username == "amy.y8"
        assert r.counts().get(("start", "ok"), 0) == 1
    finally:
        if nas is not None and nas.poll() is None:
            nas.kill()
        r.stop()
        if url.startswith("postgresql"):
            drop_pg_database(url)


def test_the_proxy_files_a_radius_signed_in_pupils_requests_under_their_name(
        tmp_path: Path, database_url: str) -> None:
    add_person(database_url, "dan.y8", "year8")
    policy = radius_policy(tmp_path)
    r = start_radius(tmp_path, database_url, policy)
    p = start_proxy(tmp_path / "proxy", policy=policy, database_url=database_url)
    try:
        def last_user() -> str | None:
            with p.client() as c:
                c.get("https://radius-check.example.org/")
            rows = access_rows(p, "radius-check.example.org")
            return rows[-1].username if rows else "no row"

        assert answered(r.send("Start", "127.0.0.1", "P-1", "dan.y8@school.internal", interval=300))
        assert wait_for(lambda: last_user() == "dan.y8", timeout=15, interval=0.5), "the proxy refreshes its table"
        row = access_rows(p, "radius-check.example.org")[-1]
        assert row.policy_group == "year8" and row.client_ip == "127.0.0.1"
        assert answered(r.send("Stop", "127.0.0.1", "P-1", "dan.y8@school.internal"))
        assert wait_for(lambda: last_user() is None, timeout=15, interval=0.5), "after the Stop: unknown again"
        assert access_rows(p, "radius-check.example.org")[-1].policy_group == "unknown"
    finally:
        p.stop()
        r.stop()


def test_refuses_to_start_without_a_secret(tmp_path: Path, sqlite_url: str) -> None:
    policy = radius_policy(tmp_path)
    (tmp_path / "radius.secret").write_text("\n")
    env = {**os.environ, "ESAFETY_POLICY": str(policy), "ESAFETY_DATABASE_URL": sqlite_url}
    out = subprocess.run([ESAFETY, "radius", "run", "--listen", f"127.0.0.1:{free_udp_port()}", "--metrics-port", "0"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1 and f"the RADIUS shared secret file {tmp_path / 'radius.secret'} is empty" in out.stderr
    (tmp_path / "radius.secret").unlink()
    out = subprocess.run([ESAFETY, "radius", "run", "--metrics-port", "0"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 1 and "cannot read the RADIUS shared secret" in out.stderr
