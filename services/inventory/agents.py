"""Inventory's tasks: the batched hot path, the hold-expiry timer and the nightly
reconciliation. The rules live in domain.py, the partition state in book.py."""

from __future__ import annotations

import logging
from datetime import time as clock_time
from zoneinfo import ZoneInfo

from services.inventory import report
from services.inventory.app import app, hot, metrics, runtime, settings
from shared.timeutil import utc_now

log = logging.getLogger(__name__)


@app.task
async def stock_hot_path() -> None:
    """Runs for the worker's life. If it fails past its own retries, the worker stops: a
    restart rebuilds the books from the changelog and redelivers the uncommitted batch."""
    await hot.run()


@app.timer(interval=settings.expiry_scan_seconds)
async def expire_unpaid_holds() -> None:
    """Find owned SKUs with due unpaid holds and send each an ExpireHolds tick keyed by the
    SKU: the release then happens in the SKU's partition, once, and a restart or rebalance
    loses nothing because the deadlines live in the changelog."""
    await hot.tick_due_holds()


def _nightly() -> tuple[str, ZoneInfo]:
    at = clock_time.fromisoformat(settings.reconcile_at)
    return f"{at.minute} {at.hour} * * *", ZoneInfo(settings.reconcile_zone)


_cron, _zone = _nightly()


@app.crontab(_cron, timezone=_zone)
async def nightly_reconciliation() -> None:
    """Table vs ledger (and the WMS snapshot, when one is configured), once a night, on the
    worker that owns partition 0 so that one report is written per night."""
    if 0 not in hot.books:
        return
    settings.reconcile_dir.mkdir(parents=True, exist_ok=True)
    out = settings.reconcile_dir / f"reconcile-{utc_now().date().isoformat()}.csv"
    result = await report.reconcile(runtime.conn, settings.reconcile_wms, out)
    metrics.observe_reconciliation(result)
    log.info("event=nightly_reconciliation skus=%d differences=%d report=%s",
             result.skus_checked, len(result.differences), out)

