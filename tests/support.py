"""Helpers for tests that talk to the real broker: produce, wait with a deadline, and run
services as processes on their own topic prefix."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.stack import StackInfo, free_port
from services.supervisor import SERVICES, Supervisor
from shared.kafka_admin import ensure_topics
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


async def settled(read: Callable[[], Any], ok: Callable[[Any], bool], *,
                  timeout: float = 30.0) -> Any:
    """``await read()`` until ``ok(result)``, and return the result; at the deadline return
    the last result anyway, for the test's own assertions to say what is off.

    For PostgreSQL effects that trail the topic a test just read: a service sends its
    answers and writes its rows concurrently (inventory) or one after the other, and commits
    the input's offset only after both, so a row can appear a moment after its answer."""
    deadline = time.monotonic() + timeout
    while True:
        result = await read()
        if ok(result) or time.monotonic() > deadline:
            return result
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


@dataclass(frozen=True)
class System:
    conn: ConnectionSettings
    supervisor: Supervisor

    def port(self, service: str) -> int:
        return next(c.port for c in self.supervisor.children if c.name == service)


@contextmanager
def running_system(stack_info: StackInfo, broker: Any, work: Path,
                   extra_env: dict[str, str] | None = None,
                   extra_workers: dict[str, int] | None = None,
                   services: tuple[str, ...] = SERVICES,
                   ports: dict[str, int] | None = None) -> Iterator[System]:
    """The four services on their own topic prefix, group ids and schemas (on ``ports``
    where given: a test whose simulators call a service back needs its port first)."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    conn = ConnectionSettings(
        kafka_bootstrap_servers=stack_info.kafka_bootstrap_servers,
        database_url=stack_info.database_url,
        topic_prefix=prefix,
        topic_partitions=4,
        topic_replication=broker.replication,
    )
    asyncio.run(ensure_topics(conn))
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": stack_info.kafka_bootstrap_servers,
        "DATABASE_URL": stack_info.database_url,
        "ORDERSTREAM_TOPIC_PREFIX": prefix,
        "ORDERSTREAM_TOPIC_PARTITIONS": "4",
        "ORDERSTREAM_TOPIC_REPLICATION": str(broker.replication),
        "ORDERSTREAM_DATA_DIR": str(work / "data"),
        **(extra_env or {}),
    }
    supervisor = Supervisor(
        env, work / "logs", services=services,
        ports={name: (ports or {}).get(name) or free_port() for name in services},
        workers={service: [free_port() for _ in range(n)]
                 for service, n in (extra_workers or {}).items()})
    supervisor.start()
    try:
        supervisor.wait_ready(timeout=120)
        yield System(conn, supervisor)
    finally:
        supervisor.stop()
