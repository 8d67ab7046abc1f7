"""The notifier's dispatcher: sends due deliveries through their providers, outside the
partition loop, and applies receipts, timeouts, failovers, VIP follow-ups and the delivery
rate alert.

The consume loop only writes deliveries (``store.write_planned``); this task, one per worker,
claims the due ones (``FOR UPDATE SKIP LOCKED`` with a lease, so workers share the work and a
dead worker's claims come back), sends them concurrently (bounded), decides each next step
with the pure rules of ``dispatch.py``, publishes the outcomes on ``notifications.outcomes``
and only then records the round in one statement. A crash between a send and its record
leaves the delivery marked unknown: the next try asks the provider before sending again.
Retries never wait in the loop: a delivery due later simply is not claimed before then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.notifier import compose, dispatch, store
from services.notifier.metrics import NotifierMetrics
from services.notifier.providers.base import Failure, Provider, Receipt, SendResult
from services.notifier.settings import NotifierSettings
from shared.events import (
    Alert,
    Event,
    NotificationAttempted,
    NotificationDelivered,
    NotificationFailed,
    OrderStatus,
    Severity,
    derive_id,
)
from shared.policy import is_transient
from shared.runtime import Runtime
from shared.timeutil import utc_now
from shared.topics import NOTIFICATIONS_OUTCOMES, OPS_ALERTS

log = logging.getLogger(__name__)

#: the same alert for the same provider at most once per this many seconds
ALERT_EVERY = 600


@dataclass
class Round:
    """What one dispatcher round decided: rows to record and events to publish."""

    recorded: store.Recorded = field(default_factory=lambda: store.Recorded(
        [], [], [], [], [], []))
    outcomes: list[tuple[str, Event]] = field(default_factory=list)
    alerts: list[tuple[str, Event]] = field(default_factory=list)


class Dispatcher:
    def __init__(self, runtime: Runtime, providers: Mapping[str, Provider],
                 settings: NotifierSettings, metrics: NotifierMetrics,
                 clock: Callable[[], datetime] = utc_now,
                 publish: Callable[[str, list[tuple[str | None, Event]]], Any] | None = None
                 ) -> None:
        self.runtime = runtime
        self.providers = dict(providers)
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.publish = publish or runtime.publish_many
        by_channel: dict[str, list[str]] = {}
        for name, provider in self.providers.items():
            by_channel.setdefault(provider.channel, []).append(name)
        self.rules = settings.dispatch(by_channel)
        self.breakers = {name: dispatch.Breaker() for name in self.providers}
        self.wakeup = asyncio.Event()
        self._alerted: dict[tuple[str, str], float] = {}
        self._firing: dict[tuple[str, str], bool] = {}
        self._lease = timedelta(seconds=settings.lease_seconds)
        self._slots = asyncio.Semaphore(settings.dispatch_concurrency)

    def wake(self) -> None:
        self.wakeup.set()

    # --- the task ----------------------------------------------------------------------

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await asyncio.wait_for(self.wakeup.wait(), self.settings.dispatch_tick_seconds)
            except TimeoutError:
                pass
            self.wakeup.clear()
            try:
                busy = await self.round()
                backoff = 0.1
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("event=dispatch_round_failed")
                else:
                    log.warning("event=dispatch_round_retry error=%r", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if busy:
                self.wakeup.set()

    async def round(self) -> bool:
        """One round: apply receipts, then try every due delivery. True when there may be
        more to do at once."""
        now = self.clock()
        pool = await self.runtime.db.pool()
        work = Round()
        async with pool.acquire() as con:
            receipts = await store.matched_receipts(con, self.settings.dispatch_batch)
            for matched in receipts:
                try:
                    self._receipt(work, matched, now)
                except Exception:
                    log.exception("event=receipt_failed provider=%s", matched.provider)
            claimed = await store.claim(con, now, self.settings.dispatch_batch, self._lease)
        await asyncio.gather(*(self._bounded(work, c, now) for c in claimed))
        await self._finish(pool, work)
        return (len(claimed) >= self.settings.dispatch_batch
                or len(receipts) >= self.settings.dispatch_batch)

    async def _finish(self, pool: asyncpg.Pool, work: Round) -> None:
        """Publish the round's outcomes and alerts (acknowledged), then record it: a crash
        between the two re-decides the round and re-sends the same event ids."""
        if work.outcomes:
            await self.publish(NOTIFICATIONS_OUTCOMES, work.outcomes)
        if work.alerts:
            await self.publish(OPS_ALERTS, work.alerts)
        async with pool.acquire() as con:
            await store.record(con, work.recorded)
            for row in await store.reach(con, work.recorded.reached):
                self.metrics.reached.labels(row["trigger"]).inc()
                self.metrics.first_delivery_seconds.labels(row["trigger"]).observe(
                    max(0.0, (row["reached_at"] - row["at"]).total_seconds()))

    async def _bounded(self, work: Round, claimed: store.Claimed, now: datetime) -> None:
        async with self._slots:
            try:
                await self._try(work, claimed, now)
            except Exception:
                log.exception("event=dispatch_failed message_id=%s", claimed.message_id)

    # --- one delivery ------------------------------------------------------------------

    async def _try(self, work: Round, c: store.Claimed, now: datetime) -> None:
        if c.state == "sent":
            await self._receipt_due(work, c, now)
            return
        if c.was_unknown and not await self._found_out(work, c, now):
            return
        provider = self._provider_for(c, now)
        if provider is None:
            later = (None if _can_fail_over(c) else
                     dispatch.resting(c.channel, c.done, self.rules, self.breakers, now))
            if later is not None:
                self._update(work, c, "pending", later, c.provider, c.done, False, None,
                             "resting", now)
                return
            self._gave_up(work, c, "no_provider", now)
            return
        await self._send(work, c, provider, now)

    def _provider_for(self, c: store.Claimed, now: datetime) -> str | None:
        """The provider that tried last, while it may; else another by weight (a failover
        within the channel, counted)."""
        current = c.provider
        if (current in self.providers and current not in c.done
                and self.breakers[current].allows(now)):
            return current
        chosen = dispatch.choose(c.channel, c.message_id, c.done, self.rules, self.breakers,
                                 now)
        if chosen is not None and current is not None and chosen != current:
            self.metrics.failovers.labels(f"{c.channel}:{current}", f"{c.channel}:{chosen}",
                                          "provider").inc()
        return chosen

    async def _send(self, work: Round, c: store.Claimed, name: str, now: datetime) -> None:
        provider = self.providers[name]
        attempt = c.attempts + 1
        message = compose.outgoing(c.message_id, c.channel, name, c.payload)
        breaker = self.breakers[name]
        breaker.started(now)
        started = time.perf_counter()
        result = await provider.send(message)
        self.metrics.send_seconds.labels(c.channel, name).observe(
            time.perf_counter() - started)
        breaker.record(result, now, self.rules)
        self._observe_send(c.channel, name, result)
        step = dispatch.after_send(c.channel, name, result, attempt, c.done, c.message_id,
                                   self.rules, self.breakers, now,
                                   next_channel_waits=_can_fail_over(c))
        work.outcomes.append((c.order_id, NotificationAttempted(
            event_id=derive_id("attempt", c.message_id, attempt),
            correlation_id=c.order_id, order_id=c.order_id, status=OrderStatus(c.status),
            channel=c.channel, recipient=compose.mask(c.channel, c.recipient),
            attempt=attempt, message_id=c.message_id, provider=name)))
        result_state = ("delivered" if step.state == "delivered"
                        else "pending" if result.accepted else "failed")
        work.recorded.attempts.append(store.AttemptRow(
            c.message_id, attempt, c.channel, name, now, result.accepted, result.code,
            result.failure.value if result.failure else None, result.detail,
            result.provider_message_id, result_state))
        if step.alert is not None:
            self._alert(work, step.alert, c.channel, name, result, now)
        tried = replace(c, attempts=attempt, state="pending", provider=name)
        if step.state == "delivered":
            self._delivered(work, tried, name, result.provider_message_id, now)
        elif step.state == "failed":
            self._gave_up(work, tried, step.reason, now, provider=name, done=step.done,
                          failover=step.failover)
        else:
            self._update(work, tried, step.state, step.due_at, name, step.done, step.unknown,
                         result.provider_message_id, step.reason, now,
                         sent_at=now if step.state == "sent" else None)

    async def _receipt_due(self, work: Round, c: store.Claimed, now: datetime) -> None:
        """A sent message whose receipt did not come in time: ask the provider where it can
        be asked, else count it as not delivered (a late receipt can still say otherwise) and
        let a failover policy move on."""
        if c.provider in self.providers:
            try:
                receipt = await self._query(c, c.provider, now)
            except Exception as exc:  # noqa: BLE001 - no answer: as if no receipt
                log.warning("event=receipt_query_failed provider=%s error=%r", c.provider, exc)
                receipt = None
            if receipt is not None and receipt.final:
                self._apply_receipt(work, c, receipt.delivered, receipt.code, c.provider,
                                    c.provider_message_id or receipt.provider_message_id,
                                    timed_out=False, now=now)
                return
        provider = c.provider or "unknown"
        self.metrics.receipts.labels(c.channel, provider, "no_receipt").inc()
        if c.provider_message_id:
            work.recorded.results.append((provider, c.provider_message_id, "failed", now))
        work.recorded.updates.append(store.Update(
            c.message_id, "sent", None, c.provider, c.done, False, None, "no_receipt", True,
            None, False))
        work.outcomes.append((c.order_id, NotificationFailed(
            event_id=derive_id("no-receipt", c.message_id), correlation_id=c.order_id,
            order_id=c.order_id, status=OrderStatus(c.status), channel=c.channel,
            recipient=compose.mask(c.channel, c.recipient), reason="no_receipt",
            retryable=False, message_id=c.message_id, provider=provider)))
        self._failover(work, c, "no_receipt", now)

    async def _query(self, c: store.Claimed, name: str, now: datetime) -> Receipt | None:
        """What the provider knows of the message; raises when it gives no usable answer."""
        provider = self.providers[name]
        message = compose.outgoing(c.message_id, c.channel, name, c.payload)
        return await provider.query(message, c.provider_message_id,
                                    c.tried_at or c.sent_at or now)

    async def _found_out(self, work: Round, c: store.Claimed, now: datetime) -> bool:
        """Before sending again after a try whose fate is unknown (no answer, or a worker
        that died mid-send, maybe before it recorded which provider it used): providers do
        no dedupe, so ask each one that may have it first. True when it may be sent again
        now; otherwise the delivery's next step is recorded here."""
        asked = ([c.provider] if c.provider in self.providers else
                 [n for n, p in self.providers.items() if p.channel == c.channel])
        found: tuple[str, Receipt] | None = None
        for name in asked:
            try:
                receipt = await self._query(c, name, now)
            except Exception as exc:  # noqa: BLE001 - no usable answer: ask again later
                log.warning("event=receipt_query_failed provider=%s error=%r", name, exc)
                self._update(work, c, "pending", now + timedelta(seconds=dispatch.backoff(
                    c.message_id, c.attempts, self.rules)), c.provider, c.done, True,
                    None, "query_failed", now)
                return False
            if receipt is not None:
                found = (name, receipt)
                break
        wait = timedelta(seconds=self.rules.receipt_timeout.get(c.channel, 0.0))
        if found is not None:
            name, receipt = found
            if receipt.final:
                self._apply_receipt(work, replace(c, provider=name), receipt.delivered,
                                    receipt.code, name, c.provider_message_id
                                    or receipt.provider_message_id or None,
                                    timed_out=False, now=now)
            else:  # it went, no result yet: wait for its receipt
                self._update(work, c, "sent", now + wait, name, c.done, False,
                             receipt.provider_message_id or None, "", now, sent_at=now)
            return False
        tried = c.tried_at or now
        if now < tried + wait:
            # No record yet may only mean not reported yet: ask again once a report of a
            # message sent then would surely be there.
            self._update(work, c, "pending", tried + wait, c.provider, c.done, True, None,
                         "unknown", now)
            return False
        return True

    # --- receipts ------------------------------------------------------------------------

    def _receipt(self, work: Round, m: store.Matched, now: datetime) -> None:
        work.recorded.receipts_applied.append((m.provider, m.provider_message_id))
        if m.state == "delivered" or (m.state == "failed" and not m.delivered):
            return  # already final this way: a repeated push
        claimed = store.Claimed(
            message_id=m.message_id, notification_id=m.notification_id, order_id=m.order_id,
            status=m.status, channel=m.channel, recipient=m.recipient, payload={},
            state=m.state, provider=m.provider, done=m.done, attempts=0, was_unknown=False,
            provider_message_id=m.provider_message_id, sent_at=None, tried_at=None,
            policy=m.policy, chain=m.chain, payloads=m.payloads, at=m.notified_at)
        self._apply_receipt(work, claimed, m.delivered, m.code, m.provider,
                            m.provider_message_id, timed_out=m.timed_out, now=now)

    def _apply_receipt(self, work: Round, c: store.Claimed, delivered: bool, code: str,
                       provider: str, provider_message_id: str | None, *, timed_out: bool,
                       now: datetime) -> None:
        status = "delivered" if delivered else "failed"
        self.metrics.receipts.labels(c.channel, provider, status).inc()
        if provider_message_id:
            work.recorded.results.append((provider, provider_message_id, status, now))
        if delivered:
            self._delivered(work, c, provider, provider_message_id, now, counted=True)
            return
        if timed_out:
            # the failover happened at the timeout: only the record changes
            work.recorded.updates.append(store.Update(
                c.message_id, "failed", None, provider, c.done, False, provider_message_id,
                f"receipt:{code}"[:64], True, None, True))
            return
        self._gave_up(work, c, f"receipt:{code}"[:64], now, provider=provider,
                      provider_message_id=provider_message_id)

    # --- final states --------------------------------------------------------------------

    def _delivered(self, work: Round, c: store.Claimed, provider: str,
                   provider_message_id: str | None, now: datetime, *,
                   counted: bool = False) -> None:
        if not counted:
            self.metrics.receipts.labels(c.channel, provider, "delivered").inc()
        work.recorded.updates.append(store.Update(
            c.message_id, "delivered", None, provider, c.done, False, provider_message_id, "",
            False, now if c.state == "pending" else None, True, c.attempts or None))
        work.recorded.reached.append((c.notification_id, now))
        work.outcomes.append((c.order_id, NotificationDelivered(
            event_id=derive_id("outcome", c.message_id), correlation_id=c.order_id,
            order_id=c.order_id, status=OrderStatus(c.status), channel=c.channel,
            recipient=compose.mask(c.channel, c.recipient), message_id=c.message_id,
            provider=provider, provider_message_id=provider_message_id or "")))

    def _gave_up(self, work: Round, c: store.Claimed, reason: str, now: datetime, *,
                 provider: str | None = None, done: tuple[str, ...] | None = None,
                 failover: bool = True, provider_message_id: str | None = None) -> None:
        work.recorded.updates.append(store.Update(
            c.message_id, "failed", None, provider or c.provider, done or c.done, False,
            provider_message_id, reason, False, None, True, c.attempts or None))
        work.outcomes.append((c.order_id, NotificationFailed(
            event_id=derive_id("failed", c.message_id), correlation_id=c.order_id,
            order_id=c.order_id, status=OrderStatus(c.status), channel=c.channel,
            recipient=compose.mask(c.channel, c.recipient), reason=reason, retryable=False,
            message_id=c.message_id, provider=provider or c.provider or "")))
        if failover:
            self._failover(work, c, reason, now)

    def _failover(self, work: Round, c: store.Claimed, reason: str, now: datetime) -> None:
        target = _next_channel(c)
        if target is None:
            return
        work.recorded.new.append(compose.failover_delivery(
            c.notification_id, c.order_id, c.status, target, c.payloads, now))
        self.metrics.failovers.labels(c.channel, target, reason.split(":")[0]).inc()

    def _update(self, work: Round, c: store.Claimed, state: str, due: datetime | None,
                provider: str | None, done: tuple[str, ...], unknown: bool,
                provider_message_id: str | None, reason: str, now: datetime, *,
                sent_at: datetime | None = None) -> None:
        work.recorded.updates.append(store.Update(
            c.message_id, state, due, provider, done, unknown, provider_message_id, reason,
            False, sent_at, False, c.attempts or None))

    # --- metrics and alerts --------------------------------------------------------------

    def _observe_send(self, channel: str, provider: str, result: SendResult) -> None:
        reason = result.failure.value if result.failure else "none"
        outcome = "accepted" if result.accepted else "failed"
        self.metrics.attempts.labels(channel, provider, outcome, reason).inc()
        if result.failure in (Failure.THROTTLED, Failure.QUOTA):
            self.metrics.throttles.labels(channel, provider, reason).inc()
        if result.failure == Failure.QUOTA:
            self.metrics.provider_health.labels(provider, "quota").set(0)
        elif result.accepted:
            self.metrics.provider_health.labels(provider, "quota").set(1)

    def _alert(self, work: Round, kind: str, channel: str, provider: str,
               result: SendResult, now: datetime) -> None:
        key = (kind, provider)
        last = self._alerted.get(key)
        stamp = now.timestamp()
        if last is not None and stamp - last < ALERT_EVERY:
            return
        self._alerted[key] = stamp
        bucket = int(stamp // ALERT_EVERY)
        alert_key = f"{kind}:{channel}:{provider}"
        work.alerts.append((alert_key, Alert(
            event_id=derive_id("alert", alert_key, bucket), correlation_id=alert_key,
            alert_key=alert_key, kind=kind,
            severity=Severity.CRITICAL if kind == "channel_quota" else Severity.WARNING,
            subject=f"{channel} provider {provider}: {result.failure} ({result.code})",
            details={"channel": channel, "provider": provider, "code": result.code,
                     "detail": result.detail[:200]})))
        self.metrics.alerts.labels(kind).inc()

    # --- periodic work -------------------------------------------------------------------

    async def housekeeping(self) -> None:
        """Delivery rates and their alert, VIP follow-ups, gauges, provider health."""
        now = self.clock()
        pool = await self.runtime.db.pool()
        await self._rates(pool, now)
        await self._followups(pool, now)
        for row in await store.pending_count(pool):
            self.metrics.pending.labels(row["channel"]).set(row["pending"])
            self.metrics.retrying.labels(row["channel"]).set(row["retrying"])
        for name, breaker in self.breakers.items():
            self.metrics.provider_up.labels(self.providers[name].channel, name).set(
                1 if breaker.state(now) == "closed" else 0)

    async def check_providers(self) -> None:
        """Each provider's own health answer, where it has one: SMTP login, WeChat token."""
        for name, provider in self.providers.items():
            check = getattr(provider, "check", None)
            if check is not None:
                what = "token" if provider.channel == "wechat" else "login"
                self.metrics.provider_health.labels(name, what).set(1 if await check() else 0)

    async def _rates(self, pool: asyncpg.Pool, now: datetime) -> None:
        since = now - timedelta(seconds=self.settings.rate_window_seconds)
        alerts: list[tuple[str | None, Event]] = []
        seen = set()
        for row in await store.results_since(pool, since):
            key = (row["channel"], row["provider"])
            seen.add(key)
            total = row["delivered"] + row["failed"]
            ratio = row["delivered"] / total if total else 1.0
            self.metrics.delivery_ratio.labels(*key).set(ratio)
            firing = total >= self.settings.rate_min_volume and ratio < self.settings.rate_threshold
            alert = self._rate_change(key, firing, ratio, total, now)
            if alert is not None:
                alerts.append(alert)
        for key in [k for k, on in self._firing.items() if on and k not in seen]:
            alert = self._rate_change(key, False, 1.0, 0, now)
            if alert is not None:
                alerts.append(alert)
        if alerts:
            await self.publish(OPS_ALERTS, alerts)

    def _rate_change(self, key: tuple[str, str], firing: bool, ratio: float, volume: int,
                     now: datetime) -> tuple[str, Event] | None:
        if self._firing.get(key, False) == firing:
            return None
        self._firing[key] = firing
        channel, provider = key
        alert_key = f"delivery_rate:{channel}:{provider}"
        state = "firing" if firing else "resolved"
        if firing:
            self.metrics.alerts.labels("delivery_rate").inc()
        return (alert_key, Alert(
            event_id=derive_id("alert", alert_key, state, int(now.timestamp() // 60)),
            correlation_id=alert_key, alert_key=alert_key, kind="delivery_rate",
            severity=Severity.CRITICAL if firing else Severity.INFO,
            subject=(f"{channel} delivery rate via {provider} is {ratio:.1%} "
                     f"(below {self.settings.rate_threshold:.0%})" if firing
                     else f"{channel} delivery rate via {provider} recovered"),
            details={"state": state, "channel": channel, "provider": provider,
                     "ratio": round(ratio, 4), "volume": volume,
                     "window_seconds": self.settings.rate_window_seconds}))

    async def _followups(self, pool: asyncpg.Pool, now: datetime) -> None:
        async with pool.acquire() as con:
            due = await store.claim_followups(con, now, 200)
        if not due:
            return
        alerts: list[tuple[str | None, Event]] = []
        for row in due:
            key = f"vip_followup:{row['order_id']}:{row['status']}"
            alerts.append((key, Alert(
                event_id=derive_id("alert", key), correlation_id=row["order_id"],
                alert_key=key, kind="vip_followup", severity=Severity.WARNING,
                subject=f"VIP customer not reached about order {row['order_id']} "
                        f"({row['status']})",
                details={"order_id": row["order_id"], "status": row["status"],
                         "trigger": row["trigger"], "channels": list(row["chain"]),
                         "since": row["at"].isoformat()})))
        try:
            await self.publish(OPS_ALERTS, alerts)
        except Exception:
            await store.unraise_followups(pool, [r["notification_id"] for r in due])
            raise
        self.metrics.alerts.labels("vip_followup").inc(len(alerts))


def _next_channel(c: store.Claimed) -> str | None:
    """The channel a failover policy moves to after this delivery's (the chain's channels
    get their deliveries in order, so every one up to this is taken)."""
    if c.policy != "failover" or c.channel not in c.chain:
        return None
    return dispatch.next_channel(c.chain, c.chain[:c.chain.index(c.channel) + 1])


def _can_fail_over(c: store.Claimed) -> bool:
    return _next_channel(c) is not None
