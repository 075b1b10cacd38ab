"""The running policy for the dashboard, reloaded when the file changes; a bad file keeps the old one."""

from __future__ import annotations

import logging
import threading
from typing import Any

from esafety.policy.loader import PolicyInvalid, load_policy
from esafety.policy.schema import Policy

log = logging.getLogger("esafety.dashboard")
_lock = threading.Lock()


def current_policy(app: Any) -> Policy | None:
    path = app.state.settings.policy_path
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return getattr(app.state, "policy", None)
    with _lock:
        if getattr(app.state, "policy_mtime", None) != mtime:
            try:
                app.state.policy = load_policy(path)
            except (PolicyInvalid, OSError) as exc:
                log.warning("policy not (re)loaded; keeping the previous one", extra={"fields": {"error": str(exc)}})
                app.state.policy = getattr(app.state, "policy", None)
            app.state.policy_mtime = mtime
        return getattr(app.state, "policy", None)
