"""The shared batched loop on the real broker and PostgreSQL: a batch is written once, sent,
saved and committed; a record that is bad, or whose row the database refuses, becomes one
dead letter and the rest go on; a restarted loop picks up its state and its offsets."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from support import collect, eventually, produce

from shared import codec
from shared.batchloop import BatchLoop, Effects
from shared.events import NotificationDelivered, OrderStatus, OrderStatusChanged
from shared.policy import Record
from shared.runtime import Runtime
from shared.settings import ServiceSettings
from shared.state import KeyedState
from shared.topics import NOTIFICATIONS_OUTCOMES, ORDERS_DLQ, ORDERS_STATUS

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


class LoopSettings(ServiceSettings):
    http_port: int = 1


class Counter:
    """Counts each order's changes in its state, writes one row per change (the database
    refuses a negative count: orders named neg-* are written as -1) and tells one outcome."""

    def state_key(self, record: Record) -> str | None:
        return record.value.order_id

    def handle(self, record: Record, table: MutableMapping[str, Any],
               effects: Effects) -> None:
        change = record.value
        seen = table.get(change.order_id, 0) + 1
        effects.write((change.event_id, change.order_id,
                       -1 if change.order_id.startswith("neg") else seen))
        effects.emit(NOTIFICATIONS_OUTCOMES, change.order_id, NotificationDelivered(
            event_id=f"outcome-{change.event_id}", correlation_id=change.order_id,
            order_id=change.order_id, status=change.to_status, channel="inapp",
            recipient="x***"))
        table[change.order_id] = seen

    async def write(self, con: asyncpg.Connection, rows: list[tuple]) -> None:
        await con.executemany("INSERT INTO counted (event_id, order_id, n) VALUES ($1,$2,$3)"
                               " ON CONFLICT DO NOTHING", rows)


def change(order_id: str, n: int) -> tuple[str, bytes]:
    return order_id, codec.encode(OrderStatusChanged(
        event_id=f"{order_id}-{n}", order_id=order_id, correlation_id=order_id,
        from_status=OrderStatus.SUBMITTED, to_status=OrderStatus.RESERVED,
        at=datetime(2026, 1, 20, tzinfo=UTC), cause_event_id="c", channel="web",
        channel_order_id=order_id, customer_id="cust-1"))


@pytest.fixture
def runtime(stack_info, broker, tmp_path: Path, monkeypatch) -> Runtime:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    state_sql = (Path(__file__).parents[2] / "services" / "status" / "migrations"
                 / "0003_stream_state.sql").read_text()
    (migrations / "0001_counted.sql").write_text(
        state_sql + "CREATE TABLE counted (event_id text PRIMARY KEY, order_id text NOT NULL,"
        " n int NOT NULL CHECK (n > 0));\n")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", stack_info.kafka_bootstrap_servers)
    monkeypatch.setenv("DATABASE_URL", stack_info.database_url)
    monkeypatch.setenv("ORDERSTREAM_TOPIC_PREFIX", f"t{uuid.uuid4().hex[:10]}.")
    monkeypatch.setenv("ORDERSTREAM_TOPIC_PARTITIONS", "2")
    monkeypatch.setenv("ORDERSTREAM_TOPIC_REPLICATION", str(broker.replication))
    return Runtime("loop", LoopSettings(), migrations)


def state() -> KeyedState[int]:
    return KeyedState("counts", encode=json.dumps, decode=json.loads)


async def test_a_batch_is_decided_written_sent_saved_and_committed_with_bad_records_apart(
        runtime: Runtime) -> None:
    # Given a loop over orders.status with a state of per-order counts
    await runtime.prepare()
    conn = runtime.conn
    loop = BatchLoop(runtime, Counter(), [ORDERS_STATUS], state=state(), batch_max=500)
    task = asyncio.create_task(loop.run())
    try:
        # When 300 changes arrive, with one undecodable record and one the database refuses
        good = [change(f"o{n % 50}", n) for n in range(300)]
        await produce(conn, ORDERS_STATUS, [*good[:100], ("o1", b"{oops"), change("neg-1", 0),
                                            *good[100:]])
        # Then every good change is told once, and the two bad records are one letter each
        outcomes = await collect(conn, NOTIFICATIONS_OUTCOMES, lambda s: len(s) >= 300)
        letters = await collect(conn, ORDERS_DLQ, lambda s: len(s) >= 2)
        assert sorted(d["reason"] for d in letters) == ["invalid_json", "write_failed"]
        assert sorted(o["event_id"] for o in outcomes) == sorted(
            f"outcome-o{n % 50}-{n}" for n in range(300))
        pool = await runtime.db.pool()

        async def written() -> Any:
            rows = await pool.fetch("SELECT order_id, max(n) AS n, count(*) AS c FROM counted"
                                    " GROUP BY order_id")
            return len(rows) == 50 and rows

        rows = await eventually(written)
        assert {r["order_id"]: (r["n"], r["c"]) for r in rows} == {
            f"o{k}": (6, 6) for k in range(50)}
        saved = await eventually(lambda: pool.fetch(
            "SELECT key, value FROM stream_state WHERE name = 'counts' AND value = '6'"))
        assert len(saved) == 50
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # When the loop restarts (same group) and more changes arrive
    again = BatchLoop(runtime, Counter(), [ORDERS_STATUS], state=state())
    task = asyncio.create_task(again.run())
    try:
        await produce(conn, ORDERS_STATUS, [change("o7", 1000)])
        # Then it goes on from the committed offsets and the saved state: one more outcome,
        # and o7's count continues at 7
        outcomes = await collect(conn, NOTIFICATIONS_OUTCOMES, lambda s: any(
            o["event_id"] == "outcome-o7-1000" for o in s))
        assert len(outcomes) == 301
        assert await eventually(lambda: pool.fetchval(
            "SELECT n FROM counted WHERE event_id = 'o7-1000'")) == 7
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.db.close()


async def test_the_state_round_trips_through_postgres_and_the_cache_stays_bounded(
        runtime: Runtime) -> None:
    await runtime.prepare()
    pool = await runtime.db.pool()
    try:
        s: KeyedState[int] = KeyedState("n", encode=json.dumps, decode=json.loads,
                                        max_cached=10)
        assert await s.load(pool, [(0, f"k{i}") for i in range(25)]) == 25  # all absent
        for i in range(25):
            s.view(i % 2)[f"k{i}"] = i
        assert await s.save(pool) == 25
        assert len(list(s.view(0))) + len(list(s.view(1))) == 10  # the newest ten
        fresh: KeyedState[int] = KeyedState("n", encode=json.dumps, decode=json.loads)
        await fresh.load(pool, [(0, f"k{i}") for i in range(30)])
        assert {k: fresh.view(0).get(k) for k in ("k0", "k24", "k29")} == {
            "k0": 0, "k24": 24, "k29": None}
    finally:
        await runtime.db.close()
