"""Ingestion's stream adapter: decode, normalise, dedupe, store, emit."""

from __future__ import annotations

import logging

from services.ingestion import domain, store
from services.ingestion.app import app, raw_orders, runtime, seen_orders, settings
from shared.codec import InvalidRecord, parse_json
from shared.runtime import Record
from shared.topics import ORDERS_SUBMITTED

log = logging.getLogger(__name__)


async def ingest(record: Record) -> None:
    channel = domain.channel_of(record.headers, record.key)
    order = domain.normalise(
        channel, parse_json(record.raw), zone=settings.channel_zones.get(channel, "UTC")
    )
    key = domain.dedupe_key(channel, order.channel_order_id)
    if record.key != key:
        # The dedupe table is co-partitioned with orders.raw only if the key is this one.
        raise InvalidRecord("wrong_key", f"orders.raw key must be {key!r}, got {record.key!r}")
    if seen_orders.get(key) is not None:
        log.info("event=duplicate_order channel=%s channel_order_id=%s", channel,
                 order.channel_order_id)
        return
    await store.save_order(await runtime.db.pool(), order)
    await runtime.send(ORDERS_SUBMITTED, order.order_id, order)
    seen_orders[key] = {"order_id": order.order_id, "event_id": order.event_id}  # after emit


@app.agent(raw_orders, concurrency=1)
async def ingest_orders(stream):
    await runtime.consume(stream, ingest)
