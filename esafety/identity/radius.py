"""RADIUS accounting (RFC 2866) from the WiFi's 802.1X sign-ins -> the client-IP table.

The access points (or the school's RADIUS server, proxying accounting) send Accounting-Request
packets: Start when a person signs in and gets an address, Interim-Update every few minutes,
Stop when they leave, Accounting-On/Off when the NAS restarts. Each becomes an `ip_bindings` row
with source "radius" (Framed-IP-Address -> the person's username), so the proxy, which sees only
client IPs, applies that person's policy group.

    codec       decode() -> AccountingRequest | Rejected; encode_request(), encode_response()
    bindings    RadiusBindings.apply(): one packet's effect on ip_bindings, in one transaction
    server      AccountingServer: the asyncio UDP protocol; answers only once the effect is stored

Rules the NAS relies on: a packet is answered (Accounting-Response) only after its effect is
stored, so if the store is down nothing is answered and the NAS retransmits; a retransmission
(same NAS, identifier and authenticator) is answered again without being applied twice; a packet
the server will never be able to use (unknown person, machine sign-in, no address) is still
answered, or the NAS would retry it forever. Packets are decoded here with no dictionary files.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import signal
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Delete, delete, func, select
from sqlalchemy.orm import Session

from esafety import metrics
from esafety.policy.schema import RadiusSettings
from esafety.store.models import IpBinding, User

log = logging.getLogger("esafety.identity.radius")

SOURCE = "radius"
ACCOUNTING_REQUEST, ACCOUNTING_RESPONSE = 4, 5
HEADER, MAX_PACKET = 20, 4096  # RFC 2865 section 3

# Attribute types (RFC 2865, 2866, 3162) read here.
USER_NAME, NAS_IP_ADDRESS, FRAMED_IP_ADDRESS = 1, 4, 8
CALLING_STATION_ID, NAS_IDENTIFIER = 31, 32
ACCT_STATUS_TYPE, ACCT_SESSION_ID, ACCT_INTERIM_INTERVAL = 40, 44, 85
FRAMED_IPV6_ADDRESS = 168

START, STOP, INTERIM_UPDATE, ACCOUNTING_ON, ACCOUNTING_OFF = 1, 2, 3, 7, 8
STATUS_NAMES = {START: "start", STOP: "stop", INTERIM_UPDATE: "interim_update", ACCOUNTING_ON: "accounting_on",
                ACCOUNTING_OFF: "accounting_off"}
_INTEGERS = {ACCT_STATUS_TYPE: "Acct-Status-Type", ACCT_INTERIM_INTERVAL: "Acct-Interim-Interval"}
_IPV4 = {NAS_IP_ADDRESS: "NAS-IP-Address", FRAMED_IP_ADDRESS: "Framed-IP-Address"}
_TEXT = {USER_NAME: "User-Name", CALLING_STATION_ID: "Calling-Station-Id", NAS_IDENTIFIER: "NAS-Identifier",
         ACCT_SESSION_ID: "Acct-Session-Id"}
# Framed-IP-Address values that are instructions to the NAS, not an address (RFC 2865 5.8).
_NOT_AN_ADDRESS = {"255.255.255.255", "255.255.255.254", "0.0.0.0"}


class RadiusConfigError(Exception):
    """The server cannot start: the message says what to fix."""


# -- codec -----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AccountingRequest:
    """One Accounting-Request whose authenticator checked out, with the attributes used here."""

    identifier: int
    authenticator: bytes
    status: int  # Acct-Status-Type
    user_name: str | None = None
    nas_ip: str | None = None
    nas_identifier: str | None = None
    framed_ip: str | None = None
    framed_ipv6: str | None = None
    calling_station_id: str | None = None
    session_id: str | None = None
    interim_interval: int | None = None  # seconds

    @property
    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status, "other")

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(a for a in (self.framed_ip, self.framed_ipv6) if a)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A datagram that is not a usable Accounting-Request: never answered."""

    result: str  # malformed | bad_authenticator
    reason: str


def _authenticator(header: bytes, auth: bytes, attributes: bytes, secret: bytes) -> bytes:
    return hashlib.md5(header + auth + attributes + secret, usedforsecurity=False).digest()


def encode_request(identifier: int, attributes: Sequence[tuple[int, bytes]], secret: bytes) -> bytes:
    """An Accounting-Request with its Request Authenticator (for tests and tools)."""
    body = b"".join(bytes((t, len(v) + 2)) + v for t, v in attributes)
    header = bytes((ACCOUNTING_REQUEST, identifier)) + (HEADER + len(body)).to_bytes(2, "big")
    return header + _authenticator(header, bytes(16), body, secret) + body


def encode_response(request: AccountingRequest, secret: bytes) -> bytes:
    """Accounting-Response (no attributes): MD5(Code+ID+Length+RequestAuth+Attributes+Secret)."""
    header = bytes((ACCOUNTING_RESPONSE, request.identifier)) + HEADER.to_bytes(2, "big")
    return header + _authenticator(header, request.authenticator, b"", secret)


def decode(data: bytes, secret: bytes) -> AccountingRequest | Rejected:
    """Check a datagram is an Accounting-Request signed with `secret` and read it. Never raises."""
    if len(data) < HEADER:
        return Rejected("malformed", f"{len(data)} octets, shorter than a RADIUS header ({HEADER})")
    code, identifier, length = data[0], data[1], int.from_bytes(data[2:4], "big")
    if code != ACCOUNTING_REQUEST:
        return Rejected("malformed", f"code {code} is not Accounting-Request ({ACCOUNTING_REQUEST})")
    if not HEADER <= length <= MAX_PACKET:
        return Rejected("malformed", f"Length field {length} is outside {HEADER}..{MAX_PACKET}")
    if length > len(data):
        return Rejected("malformed", f"truncated: Length says {length} octets, the datagram has {len(data)}")
    packet = data[:length]  # octets past Length are padding (RFC 2865 section 3)
    attributes: list[tuple[int, bytes]] = []
    i = HEADER
    while i < length:
        if i + 2 > length:
            return Rejected("malformed", f"truncated attribute header at octet {i}")
        kind, size = packet[i], packet[i + 1]
        if size < 2 or i + size > length:
            return Rejected("malformed", f"attribute {kind} at octet {i} has length {size}, "
                                         f"{length - i} octets left")
        attributes.append((kind, packet[i + 2:i + size]))
        i += size
    expected = _authenticator(packet[:4], bytes(16), packet[HEADER:], secret)
    if not hmac.compare_digest(expected, packet[4:HEADER]):
        return Rejected("bad_authenticator", "Request Authenticator does not match (wrong shared secret?)")
    return _typed(identifier, packet[4:HEADER], attributes)


def _typed(identifier: int, authenticator: bytes, attributes: list[tuple[int, bytes]]) -> AccountingRequest | Rejected:
    ints: dict[int, int] = {}
    addresses: dict[int, str] = {}
    texts: dict[int, str] = {}
    for kind, raw in attributes:
        if kind in ints or kind in addresses or kind in texts:
            continue  # the first of a repeated attribute counts, as in FreeRADIUS's own lookups
        if kind in _INTEGERS or kind in _IPV4:
            if len(raw) != 4:
                return Rejected("malformed", f"{(_INTEGERS | _IPV4)[kind]} is {len(raw)} octets, not 4")
            if kind in _INTEGERS:
                ints[kind] = int.from_bytes(raw, "big")
            else:
                addresses[kind] = str(ipaddress.IPv4Address(raw))
        elif kind == FRAMED_IPV6_ADDRESS:
            if len(raw) != 16:
                return Rejected("malformed", f"Framed-IPv6-Address is {len(raw)} octets, not 16")
            addresses[kind] = str(ipaddress.IPv6Address(raw))
        elif kind in _TEXT:
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError:
                return Rejected("malformed", f"{_TEXT[kind]} is not UTF-8 text")
            if "\x00" in value:
                return Rejected("malformed", f"{_TEXT[kind]} contains a NUL")
            texts[kind] = value.strip()
    if ACCT_STATUS_TYPE not in ints:
        return Rejected("malformed", "no Acct-Status-Type")
    framed = addresses.get(FRAMED_IP_ADDRESS)
    return AccountingRequest(
        identifier=identifier, authenticator=authenticator, status=ints[ACCT_STATUS_TYPE],
        user_name=texts.get(USER_NAME) or None, nas_ip=addresses.get(NAS_IP_ADDRESS),
        nas_identifier=texts.get(NAS_IDENTIFIER) or None,
        framed_ip=None if framed in _NOT_AN_ADDRESS else framed, framed_ipv6=addresses.get(FRAMED_IPV6_ADDRESS),
        calling_station_id=texts.get(CALLING_STATION_ID) or None, session_id=texts.get(ACCT_SESSION_ID) or None,
        interim_interval=ints.get(ACCT_INTERIM_INTERVAL) or None)


def account_name(user_name: str) -> str | None:
    r"""The users-table name an 802.1X identity stands for, lower case; None for a machine sign-in.

    jsmith@school.internal, SCHOOL\jsmith, JSmith -> jsmith; host/PC1.school.internal, PC1$ -> None."""
    name = user_name.strip()
    if name.lower().startswith("host/") or name.endswith("$"):
        return None
    name = name.rsplit("\\", 1)[-1].split("@", 1)[0].strip().lower()
    return name or None


# -- bindings --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Outcome:
    # ok | unknown_user | machine | kept (an agent or static binding holds the address) |
    # incomplete (no Framed-IP-Address or Acct-Session-Id) | ignored (a status type not used here)
    result: str
    user: str | None = None
    changed: int = 0  # rows written or removed


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)  # SQLite hands back naive UTC


class RadiusBindings:
    """The effect of accounting packets on ip_bindings. Blocking (database I/O): call from a worker thread."""

    def __init__(self, database_url: str, binding_seconds: int):
        self.database_url = database_url
        self.binding_seconds = binding_seconds

    def apply(self, req: AccountingRequest, nas: str, now: datetime | None = None) -> Outcome:
        if req.status not in STATUS_NAMES:
            return Outcome("ignored")  # nothing to store: answer at once
        from esafety.store.db import sessions  # noqa: PLC0415 - an engine per URL, made on first use

        now = now or datetime.now(UTC)
        nas, session_id = nas[:64], (req.session_id or "")[:128]  # as the columns hold them
        with sessions(self.database_url)() as s, s.begin():
            if req.status in (ACCOUNTING_ON, ACCOUNTING_OFF):  # the NAS restarted: its sessions are over
                return Outcome("ok", changed=self._drop(s, delete(IpBinding).where(IpBinding.nas == nas)))
            if not session_id:
                return Outcome("incomplete")
            if req.status == STOP:  # only this session's binding: a newer session may hold the address now
                q = delete(IpBinding).where(IpBinding.session_id == session_id, IpBinding.nas == nas)
                if req.addresses:
                    q = q.where(IpBinding.ip.in_(req.addresses))
                return Outcome("ok", changed=self._drop(s, q))
            return self._bind(s, req, session_id, nas, now)

    @staticmethod
    def _drop(s: Session, q: Delete) -> int:
        """Run a delete of bindings, limited to this source's: nothing here removes an agent's or IT's."""
        r = s.execute(q.where(IpBinding.source == SOURCE))
        return int(r.rowcount or 0)  # type: ignore[attr-defined]

    def _bind(self, s: Session, req: AccountingRequest, session_id: str, nas: str, now: datetime) -> Outcome:
        if not req.addresses:
            return Outcome("incomplete")  # many NASes send Start before DHCP: the Interim-Update has it
        name = account_name(req.user_name or "")
        user = s.scalars(select(User.username).where(func.lower(User.username) == name, User.active.is_(True))
                         .order_by(User.id)).first() if name else None
        if user is None:
            # The address now belongs to a session nobody can be named for: a binding another
            # session left there would put someone else's name on this traffic.
            changed = self._drop(s, delete(IpBinding).where(IpBinding.ip.in_(req.addresses)))
            return Outcome("machine" if name is None else "unknown_user", changed=changed)
        ttl = 2 * req.interim_interval + 60 if req.interim_interval else self.binding_seconds
        expires, device = now + timedelta(seconds=ttl), _device(req.calling_station_id)
        changed = 0
        for ip in req.addresses:
            b = s.get(IpBinding, ip)
            if b is None:
                s.add(IpBinding(ip=ip, username=user, device=device, source=SOURCE, updated_at=now,
                                expires_at=expires, session_id=session_id, nas=nas))
            elif b.source == "static" or (b.source == "agent" and (b.expires_at is None or _aware(b.expires_at) > now)):
                continue  # IT's word, or an enrolled device's agent, which knows who is signed in
            else:
                b.username, b.device, b.source, b.updated_at, b.expires_at = user, device, SOURCE, now, expires
                b.session_id, b.nas = session_id, nas
            changed += 1
        return Outcome("ok" if changed else "kept", user=user, changed=changed)

    def sweep(self, now: datetime | None = None) -> int:
        """Delete expired radius bindings (the proxy already ignores them; this keeps the table small)."""
        from esafety.store.db import sessions  # noqa: PLC0415

        with sessions(self.database_url)() as s, s.begin():
            return self._drop(s, delete(IpBinding).where(IpBinding.expires_at < (now or datetime.now(UTC))))

    def probe(self) -> None:
        from esafety.store.db import sessions  # noqa: PLC0415

        with sessions(self.database_url)() as s:
            s.execute(select(IpBinding.ip).limit(1)).all()


def _device(calling_station_id: str | None) -> str | None:
    """The client's MAC (Calling-Station-Id) as the registrations spell it, when it is one."""
    if not calling_station_id:
        return None
    from esafety.registrations.macaddr import MacError, parse_mac  # noqa: PLC0415

    try:
        return parse_mac(calling_station_id).value
    except MacError:
        return calling_station_id[:120]


# -- server ----------------------------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    secret: bytes
    clients: tuple[Network, ...]
    binding_seconds: int

    @classmethod
    def from_settings(cls, settings: RadiusSettings, listen: str | None = None) -> ServerConfig:
        """Typed, checked settings, or RadiusConfigError saying what to fix."""
        host, port = parse_listen(listen or settings.listen)
        if not settings.secret_file:
            raise RadiusConfigError("identity.radius.secret_file is not set: put the shared secret in a file "
                                    "readable only by esafety and name it in the policy")
        secret = read_secret(Path(settings.secret_file))
        if not settings.clients:
            raise RadiusConfigError("identity.radius.clients is empty: list the NAS addresses or ranges "
                                    "(access points, WiFi controller) allowed to send accounting")
        clients = tuple(ipaddress.ip_network(c, strict=False) for c in settings.clients)
        return cls(host, port, secret, clients, settings.binding_seconds)


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.strip().rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RadiusConfigError(f"listen is HOST:PORT (e.g. 0.0.0.0:1813 or [::]:1813), not '{listen}'")
    return host, int(port)


def read_secret(path: Path) -> bytes:
    try:
        secret = path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise RadiusConfigError(f"cannot read the RADIUS shared secret {path}: {exc.strerror}") from exc
    if not secret.strip():
        raise RadiusConfigError(f"the RADIUS shared secret file {path} is empty")
    return secret


class _Throttle:
    """At most one log line per key per `every` seconds: a flood of junk must not flood the logs."""

    def __init__(self, every: float = 10.0):
        self.every = every
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, key: str) -> int | None:
        """None: stay quiet; else log now, saying how many were held back since the last line."""
        now = time.monotonic()
        if now - self._last.get(key, -self.every) < self.every:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)


Applier = Callable[[AccountingRequest, str], Outcome]


class AccountingServer(asyncio.DatagramProtocol):
    """Receives on the event loop; store writes run one at a time, in arrival order, on a worker
    thread (a Stop must not overtake its Start), so a slow store never holds up receiving."""

    ANSWER_SECONDS = 60.0  # how long an answer is kept for retransmissions (a NAS retries for ~30 s)
    MAX_ANSWERS = 50_000
    MAX_PENDING = 2_000  # beyond this the store is not keeping up: drop, the NAS retransmits

    def __init__(self, secret: bytes, clients: Sequence[Network], apply: Applier, executor: ThreadPoolExecutor):
        self.secret, self.clients, self.apply, self.executor = secret, tuple(clients), apply, executor
        self.transport: asyncio.DatagramTransport | None = None
        self._answers: OrderedDict[tuple[str, int, bytes], tuple[float, bytes]] = OrderedDict()
        self._pending: set[tuple[str, int, bytes]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._quiet = _Throttle()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def allowed(self, host: str) -> bool:
        try:
            a = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped:
            a = a.ipv4_mapped  # an IPv4 NAS reaching a dual-stack socket
        return any(a in n for n in self.clients)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        host = str(addr[0])
        if not self.allowed(host):
            self._drop("unknown", "unknown_client", f"{host} is not in identity.radius.clients", host)
            return
        parsed = decode(data, self.secret)
        if isinstance(parsed, Rejected):
            self._drop("unknown", parsed.result, parsed.reason, host)
            return
        key = (host, parsed.identifier, parsed.authenticator)
        answer = self._answer(key)
        if answer is not None or key in self._pending:
            # A retransmission: answer again (or, still being stored, let the first answer do).
            metrics.RADIUS_PACKETS.labels(status=parsed.status_name, result="duplicate").inc()
            if answer is not None:
                self._send(answer, addr)
            return
        if len(self._pending) >= self.MAX_PENDING:
            self._drop(parsed.status_name, "overloaded", f"{len(self._pending)} packets waiting on the store", host)
            return
        self._pending.add(key)
        task = asyncio.get_running_loop().create_task(self._handle(parsed, key, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, req: AccountingRequest, key: tuple[str, int, bytes], addr: tuple[str | object, ...]) \
            -> None:
        nas = req.nas_ip or req.nas_identifier or key[0]
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(self.executor, self.apply, req, nas)
        except Exception as exc:  # the store is down or refused: no answer, so the NAS sends it again
            metrics.RADIUS_PACKETS.labels(status=req.status_name, result="store_error").inc()
            held = self._quiet("store_error")
            if held is not None:
                log.warning("radius accounting not stored; not answered, the NAS will retransmit", extra={"fields": {
                    "status": req.status_name, "nas": nas, "error": str(exc).splitlines()[0][:300],
                    "held_back": held}})
            return
        finally:
            self._pending.discard(key)
        answer = encode_response(req, self.secret)
        self._remember(key, answer)
        self._send(answer, addr)
        metrics.RADIUS_PACKETS.labels(status=req.status_name, result=outcome.result).inc()
        # Interim-Updates arrive every few minutes per device: only sign-ins and sign-outs at info.
        log.log(logging.DEBUG if req.status == INTERIM_UPDATE else logging.INFO, "radius accounting", extra={"fields": {
            "status": req.status_name, "result": outcome.result, "nas": nas, "session": req.session_id,
            "ip": ",".join(req.addresses) or None, "user": outcome.user, "changed": outcome.changed}})

    def _drop(self, status: str, result: str, reason: str, host: str) -> None:
        metrics.RADIUS_PACKETS.labels(status=status, result=result).inc()
        held = self._quiet(result)  # one key per result: spoofed sources must not grow the table
        if held is not None:
            log.warning("radius packet dropped", extra={"fields": {
                "result": result, "reason": reason, "client": host, "held_back": held}})

    def _send(self, answer: bytes, addr: tuple[str | object, ...]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(answer, addr)

    def _answer(self, key: tuple[str, int, bytes]) -> bytes | None:
        hit = self._answers.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def _remember(self, key: tuple[str, int, bytes], answer: bytes) -> None:
        now = time.monotonic()
        self._answers[key] = (now + self.ANSWER_SECONDS, answer)
        while self._answers:
            first = next(iter(self._answers.values()))
            if first[0] > now and len(self._answers) <= self.MAX_ANSWERS:
                break
            self._answers.popitem(last=False)

    async def drain(self, timeout: float = 10.0) -> None:
        """Let packets already being stored finish (and be answered) before stopping."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)


SWEEP_SECONDS = 600.0


async def serve(config: ServerConfig, database_url: str, ready: Callable[[str, int], None] | None = None) -> None:
    """Run until SIGTERM/SIGINT. Raises OSError when the address cannot be bound."""
    loop = asyncio.get_running_loop()
    store = RadiusBindings(database_url, config.binding_seconds)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="radius-store")
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await loop.run_in_executor(executor, store.probe)
    except Exception as exc:  # not fatal: packets wait unanswered (and are retransmitted) until it is back
        log.warning("the store is not reachable; accounting goes unanswered until it is",
                    extra={"fields": {"error": str(exc).splitlines()[0][:300]}})
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: AccountingServer(config.secret, config.clients, store.apply, executor),
        local_addr=(config.host, config.port))
    host, port = transport.get_extra_info("sockname")[:2]
    log.info("radius accounting listening", extra={"fields": {
        "listen": f"{host}:{port}", "clients": [str(c) for c in config.clients]}})
    if ready:
        ready(host, port)
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), SWEEP_SECONDS)
            except TimeoutError:
                try:
                    await loop.run_in_executor(executor, store.sweep)
                except Exception as exc:
                    log.warning("expired radius bindings not swept", extra={"fields": {"error": str(exc)[:300]}})
    finally:
        await protocol.drain()  # what is in flight is stored and answered, then nothing more is read
        transport.close()
        executor.shutdown(wait=False, cancel_futures=True)
