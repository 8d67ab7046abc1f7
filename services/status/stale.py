"""Stale orders: an order past its status deadline raises one ``ops.alerts`` record, and one
more only if it is still stale after the repeat interval; operators get a digest through the
robot webhook and e-mail.

The deadline of every order is a column (``orders.deadline_at``, written with the order), so
finding stale orders is one indexed query. Each worker runs the check; ``FOR UPDATE SKIP
LOCKED`` gives each stale order to one of them. The alert is published (and acknowledged)
before the order is marked alerted, in one transaction: a crash between the two republishes
the same alert under the same id, which consumers drop as a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from services.status import store
from services.status.metrics import StatusMetrics
from services.status.notices import MailSender, OperatorNotices, StaleNotice, WeComRobot
from services.status.settings import StatusSettings
from shared.events import Alert, OrderStatus, Severity, derive_id
from shared.policy import is_transient
from shared.runtime import Runtime
from shared.timeutil import utc_now
from shared.topics import OPS_ALERTS

log = logging.getLogger(__name__)

BATCH = 500


def stale_alert(row: Any, now: datetime) -> Alert:
    """The alert for one stale order row; its id is stable for the same stale episode and
    repeat number, so a republished alert is a duplicate, not a second alert."""
    status, since, deadline = row["status"], row["status_since"], row["deadline_at"]
    count = row["alerts"] + 1
    late = now - deadline
    subject = (f"order {row['order_id']} ({row['channel']}) stuck in {status} since "
               f"{since.isoformat()}, {int(late.total_seconds() // 60)} min past its deadline")
    return Alert(
        event_id=derive_id("stale-alert", row["order_id"], status, deadline.isoformat(), count),
        correlation_id=row["order_id"],
        alert_key=f"stale_order:{row['order_id']}",
        kind="stale_order",
        severity=Severity.WARNING,
        subject=subject[:256],
        details={
            "order_id": row["order_id"], "channel": row["channel"], "status": status,
            "since": since.isoformat(), "deadline": deadline.isoformat(),
            "last_scan_at": row["last_scan_at"].isoformat() if row["last_scan_at"] else None,
            "carrier": row["carrier"], "tracking_number": row["tracking_number"],
            "alert_number": count,
        },
    )


def orphan_alert(row: Any) -> Alert:
    return Alert(
        event_id=derive_id("orphan-alert", row["order_id"]),
        correlation_id=row["order_id"],
        alert_key=f"orphan_news:{row['order_id']}",
        kind="orphan_news",
        severity=Severity.WARNING,
        subject=(f"{row['events']} fulfilment/payment event(s) since {row['since'].isoformat()} "
                 f"for order {row['order_id']}, which was never submitted")[:256],
        details={"order_id": row["order_id"], "since": row["since"].isoformat(),
                 "events": row["events"]},
    )


def build_notices(settings: StatusSettings) -> OperatorNotices | None:
    robot = WeComRobot(settings.notice_webhook) if settings.notice_webhook else None
    mail = None
    if settings.notice_email_to:
        mail = MailSender(settings.smtp_host, settings.smtp_port, settings.notice_email_from,
                          settings.notice_email_to, username=settings.smtp_username,
                          password=settings.smtp_password, starttls=settings.smtp_starttls)
    if robot is None and mail is None:
        return None
    return OperatorNotices(robot=robot, mail=mail, zone=ZoneInfo(settings.merchant_zone))


class StaleMonitor:
    def __init__(self, runtime: Runtime, settings: StatusSettings, metrics: StatusMetrics,
                 notices: OperatorNotices | None = None) -> None:
        self.runtime = runtime
        self.settings = settings
        self.metrics = metrics
        self.notices = notices if notices is not None else build_notices(settings)
        self._pending: list[StaleNotice] = []
        self._sending: asyncio.Task[None] | None = None

    async def tick(self) -> None:
        try:
            await self._tick()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("event=stale_check_failed error=%r", exc)

    async def _tick(self) -> None:
        pool = await self.runtime.db.pool()
        raised: list[StaleNotice] = []
        while True:
            now = utc_now()
            async with store.stale_batch(pool, BATCH, self.settings.stale_repeat) as (rows, done):
                if rows:
                    alerts = [stale_alert(r, now) for r in rows]
                    await self.runtime.publish_many(OPS_ALERTS,
                                                    [(a.alert_key, a) for a in alerts])
                    await done()
            for r in rows:
                self.metrics.stale_alerts.labels(r["status"]).inc()
                raised.append(StaleNotice(
                    order_id=r["order_id"], channel=r["channel"], status=r["status"],
                    since=r["status_since"], deadline=r["deadline_at"],
                    alert_count=r["alerts"] + 1, tracking_number=r["tracking_number"],
                    carrier=r["carrier"]))
            if len(rows) < BATCH:
                break
        async with store.orphan_batch(pool, self.settings.orphan_after) as (rows, done):
            if rows:
                await self.runtime.publish_many(
                    OPS_ALERTS, [(a.alert_key, a) for a in map(orphan_alert, rows)])
                await done()
        counts = await store.stale_counts(pool)
        for status in OrderStatus:
            self.metrics.stale.labels(status.value).set(counts.get(status.value, 0))
        self.metrics.waiting.set(await pool.fetchval("SELECT count(*) FROM waiting_orders"))
        if raised:
            log.info("event=stale_alerts raised=%d", len(raised))
            self._notify(raised)

    def _notify(self, notices: list[StaleNotice]) -> None:
        """Hand the digest to the operators in the background: a slow robot or mail server
        must not hold up the next check. Notices raised meanwhile join the next digest."""
        if self.notices is None:
            return
        self._pending.extend(notices)
        if self._sending is None or self._sending.done():
            self._sending = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        assert self.notices is not None
        while self._pending:
            batch, self._pending = self._pending, []
            result = await self.notices.notify(batch, utc_now())
            for channel, outcome in (("robot", result.wecom), ("email", result.email)):
                if outcome.configured:
                    self.metrics.notices.labels(channel, "sent").inc(outcome.sent)
                    self.metrics.notices.labels(channel, "failed").inc(outcome.failed_total)
