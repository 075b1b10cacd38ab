"""What the server tells every agent with each reply: intervals and the check settings, from the
policy's `compliance:` section (defaults when no policy is loaded)."""

from __future__ import annotations

from typing import Any

from esafety.compliance.rollup import Timing
from esafety.policy.schema import Compliance, Policy


def compliance_of(policy: Policy | None) -> Compliance:
    return policy.compliance if policy is not None else Compliance()


def timing_of(policy: Policy | None) -> Timing:
    return Timing.from_policy(compliance_of(policy))


def reply_settings(policy: Policy | None) -> dict[str, Any]:
    c = compliance_of(policy)
    return {
        "heartbeat_seconds": c.heartbeat_seconds,
        "check_seconds": c.check_seconds,
        "settings": {
            "listening_allow": list(c.listening_allow),
            "admin_allow": list(c.admin_allow),
            "p2p_names": list(c.p2p_names),
            "vpn_names": list(c.vpn_names),
            "monitor_sha256": c.monitor_sha256,
            "check_timeout_seconds": c.check_timeout_seconds,
        },
    }
