"""Helpers for tests that talk to the real broker: produce, and wait with a deadline."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.settings import ConnectionSettings


async def produce(conn: ConnectionSettings, topic: str, records: list[tuple[str | None, bytes]],
                  headers: list[tuple[str, bytes]] | None = None) -> None:
    """Send (key, value) records to catalogue topic ``topic`` and wait for the broker's ack."""
    producer = AIOKafkaProducer(bootstrap_servers=conn.bootstrap_list, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send(conn.topic(topic), value=value,
                                key=key.encode() if key is not None else None, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


async def collect(conn: ConnectionSettings, topic: str, done: Callable[[list[Any]], bool],
                  *, timeout: float = 60.0) -> list[Any]:
    """Read ``topic`` from the beginning, JSON-decoding values, until ``done(records)`` holds
    or the deadline passes (then fail, showing what was seen)."""
    consumer = AIOKafkaConsumer(
        conn.topic(topic), bootstrap_servers=conn.bootstrap_list, group_id=None,
        auto_offset_reset="earliest", enable_auto_commit=False,
    )
    await consumer.start()
    seen: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while not done(seen):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"deadline passed on {topic}; saw {len(seen)}: {seen[-5:]}")
            batch = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for messages in batch.values():
                seen.extend(json.loads(m.value) for m in messages)
        return seen
    finally:
        await consumer.stop()


async def eventually(check: Callable[[], Any], *, timeout: float = 30.0) -> Any:
    """Await ``check()`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(0.2)


async def given_stock(conn: ConnectionSettings, sku: str, quantity: int) -> None:
    """Restock ``sku`` and wait until inventory publishes it on stock.levels.

    Adjustments and reservations arrive on different topics, so their relative order is
    not defined; a test that means "stock exists, then an order comes" must wait for it.
    """
    await produce(conn, "stock.adjustments", [(sku, json.dumps({
        "event_type": "StockAdjusted", "sku": sku, "delta": quantity, "reason": "restock",
        "source": "test"}).encode())])
    await collect(conn, "stock.levels", lambda seen: any(
        s["sku"] == sku and s["on_hand"] >= quantity for s in seen))
