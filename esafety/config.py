"""Runtime settings, read once from the environment (12-factor) with safe defaults for one school."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    policy_path: Path
    proxy_host: str
    proxy_port: int
    proxy_metrics_port: int
    # `--workers N`: worker i listens on 127.0.0.1:proxy_worker_port+i, haproxy on proxy_host:proxy_port.
    proxy_worker_port: int
    dashboard_host: str
    dashboard_port: int
    dashboard_url: str
    smtp_host: str
    smtp_port: int
    smtp_from: str
    # What happens to a group with no explicit `on_error` when deciding fails.
    fail_closed: bool

    @property
    def spool_dir(self) -> Path:
        return self.home / "spool"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def lists_dir(self) -> Path:
        """Imported lists (esafety lists import), merged into their categories."""
        return self.home / "lists"

    @property
    def confdir(self) -> Path:
        """mitmproxy's confdir: the esafety CA lives here."""
        return self.home / "ca"


def load_settings(env: dict[str, str] | None = None) -> Settings:
    e = os.environ if env is None else env
    home = Path(e.get("ESAFETY_HOME", str(PROJECT_ROOT / "var"))).resolve()
    dashboard_port = int(e.get("ESAFETY_DASHBOARD_PORT", "8000"))
    return Settings(
        home=home,
        database_url=e.get("ESAFETY_DATABASE_URL", f"sqlite:///{home / 'esafety.db'}"),
        policy_path=Path(e.get("ESAFETY_POLICY", str(PROJECT_ROOT / "policies" / "aup.yaml"))),
        proxy_host=e.get("ESAFETY_PROXY_HOST", "127.0.0.1"),
        proxy_port=(proxy_port := int(e.get("ESAFETY_PROXY_PORT", "8080"))),
        proxy_metrics_port=int(e.get("ESAFETY_PROXY_METRICS_PORT", "9180")),
        proxy_worker_port=int(e.get("ESAFETY_PROXY_WORKER_PORT", str(proxy_port + 1000))),
        dashboard_host=e.get("ESAFETY_DASHBOARD_HOST", "127.0.0.1"),
        dashboard_port=dashboard_port,
        dashboard_url=e.get("ESAFETY_DASHBOARD_URL", f"http://127.0.0.1:{dashboard_port}"),
        smtp_host=e.get("ESAFETY_SMTP_HOST", "127.0.0.1"),
        smtp_port=int(e.get("ESAFETY_SMTP_PORT", "25")),
        smtp_from=e.get("ESAFETY_SMTP_FROM", "esafety@localhost"),
        fail_closed=e.get("ESAFETY_FAIL_CLOSED", "1") != "0",
    )
