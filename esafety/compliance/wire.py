"""What agents send, validated once at the edge into typed objects (notes/agent-contract.md).

Unknown fields are ignored (a newer agent may send more); wrong types, bad values and oversize
parts are refused and the error names the field, e.g. `checks.3.status`. MAC addresses are
normalised to aa:bb:cc:dd:ee:ff; the all-zero and group addresses some interfaces report (loopback,
tunnels) are not device addresses and become null rather than refusing the report.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from esafety.registrations.macaddr import MacError, parse_mac

MAX_BODY = 256 * 1024
EVIDENCE_MAX_BYTES = 16 * 1024  # per check, as JSON
PLATFORMS = ("linux", "windows", "macos")
KINDS = ("snapshot", "diff", "heartbeat")
STATUSES = ("pass", "fail", "error", "not_applicable")


def _mac(v: str | None) -> str | None:
    if v is None or v == "":
        return None
    try:
        return parse_mac(v).value
    except MacError as exc:
        if "not a MAC address" in str(exc):
            raise ValueError(f"{v!r} is not a MAC address") from None
        return None  # all-zero / group: reported by loopback and tunnels, not a device address


def _ip(v: str) -> str:
    try:
        return str(ip_address(v.split("%", 1)[0]))  # fe80::1%eth0: the zone is the agent's business
    except ValueError:
        raise ValueError(f"{v!r} is not an IP address") from None


def _utc(v: datetime) -> datetime:
    return v if v.tzinfo else v.replace(tzinfo=UTC)


def _small_json(v: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(v, ensure_ascii=False, default=str).encode())
    if size > EVIDENCE_MAX_BYTES:
        raise ValueError(f"evidence is {size} bytes; the limit is {EVIDENCE_MAX_BYTES}")
    return v


Mac = Annotated[StrictStr | None, Field(max_length=32), AfterValidator(_mac)]
When = Annotated[datetime, AfterValidator(_utc)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=255)]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class EnrolIn(_In):
    token: StrictStr = Field(min_length=8, max_length=200)
    hostname: Name
    platform: Literal["linux", "windows", "macos"]
    os_version: StrictStr = Field(default="", max_length=200)
    agent_version: StrictStr = Field(default="", max_length=64)
    macs: list[Mac] = Field(default_factory=list, max_length=64)  # type: ignore[valid-type]

    def device_macs(self) -> list[str]:
        return sorted({m for m in self.macs if m})


class UserIn(_In):
    name: StrictStr = Field(min_length=1, max_length=120)
    terminal: StrictStr | None = Field(default=None, max_length=120)
    host: StrictStr | None = Field(default=None, max_length=255)
    started: When | None = None


class AddressIn(_In):
    ip: Annotated[StrictStr, Field(max_length=64), AfterValidator(_ip)]
    mac: Mac = None
    iface: StrictStr = Field(default="", max_length=64)


class CheckIn(_In):
    id: StrictStr = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")
    status: Literal["pass", "fail", "error", "not_applicable"]
    evidence: Annotated[dict[str, Any], AfterValidator(_small_json)] = Field(default_factory=dict)
    duration_ms: StrictInt = Field(default=0, ge=0, le=86_400_000)
    checked_at: When


class MonitorIn(_In):
    sha256: StrictStr = Field(pattern=r"^[0-9a-fA-F]{64}$")
    pid: StrictInt = Field(ge=0)


class ReportIn(_In):
    device_id: StrictStr = Field(min_length=1, max_length=32)
    seq: StrictInt = Field(ge=1, le=2**62)
    kind: Literal["snapshot", "diff", "heartbeat"]
    sent_at: When
    agent_version: StrictStr = Field(default="", max_length=64)
    hostname: Name
    users: list[UserIn] = Field(default_factory=list, max_length=64)
    addresses: list[AddressIn] = Field(default_factory=list, max_length=64)
    checks: list[CheckIn] = Field(default_factory=list, max_length=128)
    monitor: MonitorIn | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ReportIn:
        ids = [c.id for c in self.checks]
        if len(ids) != len(set(ids)):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"checks: check {dup!r} appears twice")
        if self.kind == "heartbeat" and self.checks:
            raise ValueError("checks: a heartbeat carries no checks")
        return self


class Malformed(Exception):
    """A body that is not a valid report; `field` names the first bad field ("" for the body)."""

    def __init__(self, field: str, detail: str):
        super().__init__(detail)
        self.field = field
        self.detail = detail


def _parse(model: type[_In], body: bytes) -> Any:
    if b"\\u0000" in body:  # PostgreSQL text cannot hold NUL; refuse it here rather than fail in the store
        raise Malformed("", "NUL characters (\\u0000) are not allowed in a report")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        loc = ".".join(str(x) for x in first.get("loc", ()))
        msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        if first.get("type") == "json_invalid":
            raise Malformed("", f"the body is not JSON: {msg}") from None
        if not loc and msg.startswith("checks:"):
            loc, msg = "checks", msg.removeprefix("checks: ")
        raise Malformed(loc, f"{loc}: {msg}" if loc else msg) from None


def parse_enrol(body: bytes) -> EnrolIn:
    return _parse(EnrolIn, body)  # type: ignore[no-any-return]


def parse_report(body: bytes) -> ReportIn:
    return _parse(ReportIn, body)  # type: ignore[no-any-return]
