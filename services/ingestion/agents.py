"""Ingestion's stream adapter: read the channel record, decide, store, emit, remember."""

from __future__ import annotations

import logging
import time

from pydantic import ValidationError

from services.ingestion import domain, store
from services.ingestion.app import app, metrics, raw_orders, runtime, seen_orders, settings
from shared.codec import InvalidRecord
from shared.runtime import Record
from shared.timeutil import utc_now
from shared.topics import ORDERS_SUBMITTED, PAYMENTS_EVENTS

log = logging.getLogger(__name__)


async def ingest(record: Record) -> None:
    channel = record.headers.get("channel") or "unknown"
    try:
        channel = domain.channel_of(record.headers, record.key)
        metrics.received.labels(channel).inc()
        order = domain.read(channel, record.raw, zone=settings.channel_zones.get(channel, "UTC"))
        key = domain.dedupe_key(channel, order.channel_order_id)
        if record.key != key:
            # The dedupe table is co-partitioned with orders.raw only if the key is this one.
            raise InvalidRecord("wrong_key", f"orders.raw key must be {key!r}, got {record.key!r}")
    except InvalidRecord as exc:
        metrics.rejected.labels(channel, exc.reason).inc()
        raise
    except ValidationError:
        metrics.rejected.labels(channel, "invalid_event").inc()
        raise
    saved = seen_orders.get(key)
    decision = domain.decide(domain.Seen.model_validate(saved) if saved else None, order)
    pool = await runtime.db.pool()
    if decision.submitted is not None:
        await store.save_order(pool, decision.submitted, order.payment)
        await runtime.send(ORDERS_SUBMITTED, decision.submitted.order_id, decision.submitted)
        metrics.order_age.labels(channel).observe(
            (utc_now() - order.placed_at).total_seconds())
    for payment in decision.payments:
        await store.set_payment(pool, payment.order_id, order.payment)
        await runtime.send(PAYMENTS_EVENTS, payment.order_id, payment)
    if decision.seen is not None:
        seen_orders[key] = decision.seen.model_dump(mode="json")  # last: a replay re-decides
    metrics.outcomes.labels(channel, decision.outcome).inc()
    if record.timestamp:
        metrics.lag.observe(max(0.0, time.time() - record.timestamp))
    if decision.outcome != "accepted":
        log.info("event=order_%s channel=%s channel_order_id=%s", decision.outcome, channel,
                 order.channel_order_id)


@app.agent(raw_orders, concurrency=1)
async def ingest_orders(stream):
    await runtime.consume(stream, ingest)
