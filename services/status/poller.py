"""The carrier poller: asks the tracking API about parcels with no news for a while.

Callbacks carry most news; polling fills the gaps they leave (a dropped push, a carrier
whose push broke). Each worker runs one loop; PostgreSQL hands out due parcels with
``FOR UPDATE SKIP LOCKED`` and a lease, so two workers never ask about one parcel at once and
a worker that dies mid-poll leaves the parcel due again when its lease ends.

Each carrier has its own rate limit (a token bucket). A throttled answer pauses that carrier
for the provider's ``Retry-After`` (or a backoff); an exhausted quota pauses it for long. A
failed query brings the parcel's next poll closer (backoff from the tick up to the interval)
rather than waiting a whole interval (the first retries at the next tick, then doubling).
Scans go to ``fulfilment.events`` with the same ids a
callback would give them: whichever arrives first is applied, the other is a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.status import store
from services.status.carriers import (
    CarrierError,
    CarrierQuotaExhausted,
    CarrierThrottled,
    Kuaidi100Client,
    NoTrackingYet,
)
from services.status.metrics import StatusMetrics
from services.status.settings import StatusSettings
from services.status.tracking import news, scan_event
from shared.policy import is_transient
from shared.runtime import Runtime
from shared.timeutil import utc_now
from shared.topics import FULFILMENT_EVENTS

log = logging.getLogger(__name__)

SOURCE = "poller:kuaidi100"
#: How long a claimed parcel is kept from other workers while its query runs.
LEASE = timedelta(minutes=2)
#: Without a Retry-After, a throttled carrier pauses this long (doubling while it persists).
THROTTLE_PAUSE = 1.0
QUOTA_PAUSE = 600.0


@dataclass
class TokenBucket:
    """``rate`` queries per second on average, bursts up to ``burst``."""

    rate: float
    burst: float = 1.0
    tokens: float = field(default=1.0)
    at: float = field(default_factory=time.monotonic)
    paused_until: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def take(self) -> None:
        async with self.lock:  # one waiter at a time keeps the queue fair
            while True:
                now = time.monotonic()
                if now < self.paused_until:
                    await asyncio.sleep(self.paused_until - now)
                    continue
                self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
                self.at = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self.tokens) / self.rate)

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)


class Poller:
    def __init__(self, runtime: Runtime, settings: StatusSettings, metrics: StatusMetrics,
                 client: Kuaidi100Client | None = None) -> None:
        self.runtime = runtime
        self.settings = settings
        self.metrics = metrics
        self.client = client
        self.buckets: dict[str, TokenBucket] = {}
        self.throttled: dict[str, int] = {}  # consecutive throttled answers per carrier

    def _client(self) -> Kuaidi100Client | None:
        if self.client is None and self.settings.kuaidi100_url:
            self.client = Kuaidi100Client(
                self.settings.kuaidi100_url, self.settings.kuaidi100_customer,
                self.settings.kuaidi100_key, timeout=self.settings.poll_timeout_seconds)
        return self.client

    def _bucket(self, carrier: str) -> TokenBucket:
        bucket = self.buckets.get(carrier)
        if bucket is None:
            rate = self.settings.carrier_rate(carrier)
            bucket = self.buckets[carrier] = TokenBucket(rate=rate, burst=max(1.0, rate))
        return bucket

    async def run(self) -> None:
        client = self._client()
        if client is None:
            log.info("event=poller_off reason=no_tracking_api_configured")
            return
        try:
            while True:
                try:
                    claimed = await self.tick()
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    log.warning("event=poll_tick_failed error=%r", exc)
                    claimed = 0
                if claimed < self.settings.poll_batch:  # a full batch: more may be due now
                    await asyncio.sleep(self.settings.poll_tick_seconds)
        finally:
            await client.close()

    async def tick(self) -> int:
        """Claim the due parcels, ask about each, publish the scans, book the next polls."""
        pool = await self.runtime.db.pool()
        due = await store.claim_due_polls(pool, self.settings.poll_batch, LEASE)
        if not due:
            return 0
        slots = asyncio.Semaphore(self.settings.poll_concurrency)
        results = await asyncio.gather(*(self._poll(p, slots) for p in due))
        await store.polled(pool, results)
        return len(due)

    async def _poll(self, parcel: store.DueParcel, slots: asyncio.Semaphore
                    ) -> tuple[str, datetime, str | None]:
        client = self.client
        assert client is not None
        carrier = parcel.carrier
        bucket = self._bucket(carrier)
        async with slots:
            await bucket.take()
            started = time.perf_counter()
            try:
                scans = await client.track(carrier, parcel.tracking_number)
            except NoTrackingYet:
                scans = []
            except CarrierError as exc:
                return self._failed(parcel, bucket, exc)
            finally:
                self.metrics.poll_seconds.labels(carrier).observe(time.perf_counter() - started)
        self.throttled.pop(carrier, None)
        now = utc_now()
        fresh = news(scans, parcel.last_scan_at)
        if fresh:
            events = [scan_event(s, parcel.order_id, SOURCE, now) for s in fresh]
            await self.runtime.publish_many(
                FULFILMENT_EVENTS, [(parcel.order_id, e) for e in events])
        self.metrics.polls.labels(carrier, "scans" if fresh else "no_scans").inc()
        return parcel.order_id, now + self.settings.poll_interval, None

    def _failed(self, parcel: store.DueParcel, bucket: TokenBucket, exc: CarrierError
                ) -> tuple[str, datetime, str | None]:
        carrier = parcel.carrier
        self.metrics.polls.labels(carrier, "error").inc()
        self.metrics.poll_errors.labels(carrier, exc.kind).inc()
        if isinstance(exc, CarrierThrottled):
            times = self.throttled[carrier] = self.throttled.get(carrier, 0) + 1
            bucket.pause(exc.retry_after or THROTTLE_PAUSE * 2 ** min(times - 1, 6))
        elif isinstance(exc, CarrierQuotaExhausted):
            bucket.pause(QUOTA_PAUSE)
            log.error("event=carrier_quota_exhausted carrier=%s pause_s=%d", carrier,
                      QUOTA_PAUSE)
        # Sooner than a whole interval: a single timeout or error is most often just that
        # query, so the first three retries come at the next tick; then 2, 4, 8 ... ticks,
        # up to the interval (the carrier's own rate limit and pauses protect it meanwhile).
        ticks = 2 ** min(max(0, parcel.attempts - 2), 16)
        backoff = timedelta(seconds=self.settings.poll_tick_seconds * ticks)
        if not exc.retriable:
            backoff = self.settings.poll_interval
        log.info("event=poll_failed carrier=%s tracking=%s order=%s kind=%s error=%s",
                 carrier, parcel.tracking_number, parcel.order_id, exc.kind, str(exc)[:200])
        return (parcel.order_id, utc_now() + min(backoff, self.settings.poll_interval),
                f"{exc.kind}: {str(exc)[:200]}")
