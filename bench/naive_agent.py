"""The naive Faust agent, kept as the reference point for the hot-SKU benchmark.

One event at a time: read the SKU's counts from a Faust table, decide, write the table,
``await topic.send(...)`` the answer. This is the shape ``FINDINGS.md`` measured at about
3,750 reservations/s for one hot SKU; the inventory service has to beat it.

It reads and answers exactly like the inventory service (same prefixed topics, same
``shared.codec`` JSON, ``StockReserved`` / ``StockRejected`` keyed by order id, a
``StockLevel`` after each stock adjustment), but records less: the table value is only
``{"on_hand", "reserved"}`` per SKU — no per-reservation memory (so no idempotent
replay), no ledger in PostgreSQL, no ``StockLevel`` per reservation.

Run: ``python -m bench.naive_agent`` with the usual ``KAFKA_BOOTSTRAP_SERVERS`` and
``ORDERSTREAM_*`` variables; app id ``<prefix>bench-naive``, no web server.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import faust

from shared import codec, transport
from shared.clients import tune_gc
from shared.events import (
    ReserveStock,
    StockAdjusted,
    StockLevel,
    StockRejected,
    StockReserved,
    derive_id,
)
from shared.kafka_admin import ensure_topics
from shared.settings import ConnectionSettings
from shared.topics import INVENTORY_COMMANDS, INVENTORY_EVENTS, STOCK_ADJUSTMENTS, STOCK_LEVELS

conn = ConnectionSettings()
app = transport.App(
    conn.topic("bench-naive"),
    broker=[f"kafka://{server}" for server in conn.bootstrap_list],
    store="memory://",
    datadir=str((conn.data_dir / conn.topic("bench-naive")).resolve()),
    web_enabled=False,
    topic_partitions=conn.topic_partitions,
    topic_replication_factor=conn.topic_replication,
    topic_disable_leader=True,
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=conn.kafka_session_timeout,
    broker_rebalance_timeout=conn.kafka_rebalance_timeout,
    broker_heartbeat_interval=conn.kafka_heartbeat_interval,
    producer_acks=-1,
    key_serializer="raw",
    value_serializer="raw",
)
# The same consumer fetch wait as the services (Faust alone would wait 1500 ms per fetch).
app.transport_type = transport.transport_class(fetch_max_wait_ms=conn.kafka_fetch_max_wait_ms)

inputs = app.topic(conn.topic(INVENTORY_COMMANDS), conn.topic(STOCK_ADJUSTMENTS),
                   key_serializer="raw", value_serializer="raw")
answers = app.topic(conn.topic(INVENTORY_EVENTS), key_serializer="raw", value_serializer="raw")
levels = app.topic(conn.topic(STOCK_LEVELS), key_serializer="raw", value_serializer="raw")
#: sku -> {"on_hand": int, "reserved": int}
stock = app.Table("stock", partitions=conn.topic_partitions,
                  schema=faust.Schema(key_serializer="json", value_serializer="json"))
_catalogue_name = {conn.topic(n): n for n in (INVENTORY_COMMANDS, STOCK_ADJUSTMENTS)}


@app.agent(inputs, concurrency=1)
async def reserve(stream: faust.StreamT) -> None:
    async for event in stream.events():
        message = event.message
        cmd = codec.decode(_catalogue_name[message.topic], message.value)
        counts = stock.get(cmd.sku) or {"on_hand": 0, "reserved": 0}
        if isinstance(cmd, StockAdjusted):
            counts = {**counts, "on_hand": counts["on_hand"] + (cmd.delta or 0)}
            stock[cmd.sku] = counts
            available = counts["on_hand"] - counts["reserved"]
            level = StockLevel(event_id=derive_id("level", cmd.event_id, cmd.sku), sku=cmd.sku,
                               on_hand=counts["on_hand"], reserved=counts["reserved"],
                               available=available, safety_stock=0, sellable=available > 0)
            await levels.send(key=cmd.sku.encode(), value=codec.encode(level))
        elif isinstance(cmd, ReserveStock):
            common = {"event_id": derive_id("reserve-outcome", cmd.order_id, cmd.line),
                      "correlation_id": cmd.correlation_id, "order_id": cmd.order_id,
                      "line": cmd.line, "sku": cmd.sku, "quantity": cmd.quantity}
            available = counts["on_hand"] - counts["reserved"]
            if available >= cmd.quantity:
                stock[cmd.sku] = {**counts, "reserved": counts["reserved"] + cmd.quantity}
                answer = StockReserved(**common)
            else:
                answer = StockRejected(reason="insufficient_stock", available=available, **common)
            await answers.send(key=cmd.order_id.encode(), value=codec.encode(answer))


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    Path(app.conf.datadir).mkdir(parents=True, exist_ok=True)
    changelog = stock.changelog_topic.get_topic_name()
    asyncio.run(ensure_topics(conn, changelogs=[changelog]))
    tune_gc()
    faust.Worker(app, loglevel="warn", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
