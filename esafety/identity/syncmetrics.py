"""The esafety_identity_sync_* gauges, from the identity_syncs rows.

Imports and syncs run in other processes (a cron job, `esafety roster import`), so the dashboard,
which Prometheus scrapes, reads their outcome from the store. Dry runs are someone trying a file
out and do not count. A source with no rows (a school without a directory) exports nothing, so the
"no success for 2 days" alert does not fire for a source the school does not use.
"""

from __future__ import annotations

from datetime import UTC

from sqlalchemy import select
from sqlalchemy.orm import Session

from esafety import metrics
from esafety.identity.people import SOURCES
from esafety.identity.tables import IdentitySync


def collect_sync_metrics(session: Session) -> None:
    for source in SOURCES:
        real = select(IdentitySync).where(IdentitySync.source == source, IdentitySync.dry_run.is_(False))
        last = session.scalars(real.order_by(IdentitySync.started_at.desc(), IdentitySync.id.desc()).limit(1)).first()
        if last is None:
            continue
        metrics.IDENTITY_SYNC_LAST_OK.labels(source=source).set(1 if last.ok else 0)
        good = session.scalars(real.where(IdentitySync.ok.is_(True))
                               .order_by(IdentitySync.started_at.desc(), IdentitySync.id.desc()).limit(1)).first()
        if good is not None:
            at = good.finished_at or good.started_at
            metrics.IDENTITY_SYNC_LAST_SUCCESS.labels(source=source).set(
                (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())
