"""Ingestion's stream handler: read the channel record, decide against what was seen, emit,
store, remember. The rules live in domain.py; the batching in shared/batchloop.py."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, MutableMapping
from datetime import datetime

import asyncpg
from pydantic import ValidationError

from services.ingestion import domain, store
from services.ingestion.metrics import IngestionMetrics
from shared.batchloop import Effects
from shared.codec import InvalidRecord
from shared.metrics import children
from shared.policy import Record
from shared.topics import ORDERS_SUBMITTED, PAYMENTS_EVENTS

log = logging.getLogger(__name__)


class IngestHandler:
    """One ``orders.raw`` record → at most one ``OrderSubmitted`` or payment update, with the
    dedupe table (``channel:channel_order_id`` → :class:`domain.Seen`) as its state."""

    def __init__(self, zones: Mapping[str, str], metrics: IngestionMetrics,
                 clock: Callable[[], datetime]) -> None:
        self.zones = zones
        self.metrics = metrics
        self.clock = clock
        self._received = children(metrics.received)
        self._rejected = children(metrics.rejected)
        self._age = children(metrics.order_age)
        self._outcomes = children(metrics.outcomes)

    def state_key(self, record: Record) -> str | None:
        # The dedupe table is co-partitioned with orders.raw only under this key; a record
        # whose key is not its order's is refused in handle() before the table is touched.
        return record.key

    def handle(self, record: Record, table: MutableMapping[str, domain.Seen],
               effects: Effects) -> None:
        channel = record.headers.get("channel") or "unknown"
        try:
            channel = domain.channel_of(record.headers, record.key)
            self._received(channel).inc()
            order = domain.read(channel, record.raw, zone=self.zones.get(channel, "UTC"))
            key = domain.dedupe_key(channel, order.channel_order_id)
            if record.key != key:
                raise InvalidRecord("wrong_key",
                                    f"orders.raw key must be {key!r}, got {record.key!r}")
        except InvalidRecord as exc:
            self._rejected(channel, exc.reason).inc()
            raise
        except ValidationError:
            self._rejected(channel, "invalid_event").inc()
            raise
        decision = domain.decide(table.get(key), order)
        if decision.submitted is not None:
            effects.write(("order", decision.submitted, order.payment))
            effects.emit(ORDERS_SUBMITTED, decision.submitted.order_id, decision.submitted)
            self._age(channel).observe(
                (self.clock() - order.placed_at).total_seconds())
        for payment in decision.payments:
            effects.write(("payment", payment.order_id, order.payment))
            effects.emit(PAYMENTS_EVENTS, payment.order_id, payment)
        if decision.seen is not None:
            table[key] = decision.seen  # last: a redelivery before the save re-decides
        self._outcomes(channel, decision.outcome).inc()
        if record.timestamp:
            self.metrics.lag.observe(max(0.0, time.time() - record.timestamp))
        if decision.outcome != "accepted":
            log.info("event=order_%s channel=%s channel_order_id=%s", decision.outcome,
                     channel, order.channel_order_id)

    async def write(self, con: asyncpg.Connection, rows: list[tuple]) -> None:
        orders = [(order, payment) for kind, order, payment in rows if kind == "order"]
        payments = {order_id: payment for kind, order_id, payment in rows
                    if kind == "payment"}  # the last state of an order in the batch wins
        await store.save_orders(con, orders, payments)
