"""RADIUS accounting (RFC 2866) from the WiFi's 802.1X sign-ins -> the client-IP table.

The access points (or the school's RADIUS server, proxying accounting) send Accounting-Request
packets: Start when a person signs in and gets an address, Interim-Update every few minutes,
Stop when they leave, Accounting-On/Off when the NAS restarts. Each becomes an `ip_bindings` row
with source "radius" (Framed-IP-Address -> the person's username), so the proxy, which sees only
client IPs, applies that person's policy group.

    packets     esafety/identity/radius_packets.py: decode() -> AccountingRequest | Rejected, encoding
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
from esafety.identity.radius_packets import (
    ACCOUNTING_OFF,
    ACCOUNTING_ON,
    INTERIM_UPDATE,
    STATUS_NAMES,
    STOP,
    AccountingRequest,
    Rejected,
    account_name,
    decode,
    encode_response,
)
from esafety.policy.schema import RadiusSettings
from esafety.store.models import IpBinding, User

log = logging.getLogger("esafety.identity.radius")

SOURCE = "radius"
class RadiusConfigError(Exception):
    """The server cannot start: the message says what to fix."""


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
