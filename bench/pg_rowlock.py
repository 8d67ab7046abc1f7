"""The PostgreSQL row-lock design the inventory service replaces, as a benchmark contender.

An aiokafka consumer (group ``<prefix>bench-pg``) reads the same ``inventory.commands`` and
``stock.adjustments`` records as the service and gives the same answers on
``inventory.events``. Each ``ReserveStock`` runs on one of 16 asyncpg connections as
one statement (autocommit)::

    WITH upd AS (UPDATE stock SET qty = qty - $2 WHERE sku = $1 AND qty >= $2  -- $2 = 1 here
                   AND NOT EXISTS (<its reservation row>) RETURNING qty)
    INSERT INTO reservations (...) SELECT ..., <held if upd has a row else rejected>, ...
    ON CONFLICT (order_id, line) DO NOTHING RETURNING state

so concurrent commands for one SKU queue on that SKU's row lock, held only inside the
server for one statement and its commit: the strongest form of the design we could write
plainly. ``BENCH_PG_VARIANT=transaction`` runs the same as a client-side transaction
instead (BEGIN; INSERT; UPDATE; COMMIT: the lock is then held across two round trips).

What it records per reservation: the stock row's new ``qty`` (available) and one
``reservations`` row (order_id, line, sku, quantity, state held or rejected,
outcome_event_id, hold_until, reserved_at); a replayed command finds its row, rolls back
and repeats the stored answer. That is the information the service keeps in its table value
plus its ledger row. It publishes no ``StockLevel`` per reservation (the service does), only
one after each adjustment, which the harness uses as its readiness signal.

Offsets are committed after every record of a polled batch is applied and its answer
acknowledged by the broker (at-least-once, like the service).

Run: ``python -m bench.pg_rowlock`` with ``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL`` and
``ORDERSTREAM_*``; tables live in schema ``<prefix>bench_pg``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from datetime import timedelta

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared import codec
from shared.clients import tune_gc
from shared.db import quote_ident
from shared.events import (
    ReserveStock,
    StockAdjusted,
    StockLevel,
    StockRejected,
    StockReserved,
    derive_id,
)
from shared.settings import ConnectionSettings
from shared.timeutil import utc_now
from shared.topics import INVENTORY_COMMANDS, INVENTORY_EVENTS, STOCK_ADJUSTMENTS, STOCK_LEVELS

CONNECTIONS = 16
HOLD = timedelta(minutes=30)
log = logging.getLogger("bench.pg_rowlock")

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS stock (sku text PRIMARY KEY, qty integer NOT NULL CHECK (qty >= 0));
CREATE TABLE IF NOT EXISTS applied_adjustments (event_id text PRIMARY KEY);
CREATE TABLE IF NOT EXISTS reservations (
    order_id text NOT NULL, line integer NOT NULL, sku text NOT NULL,
    quantity integer NOT NULL, state text NOT NULL, outcome_event_id text NOT NULL,
    hold_until timestamptz, reserved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, line));
"""
#: One statement, one round trip: the row lock is held only inside the server. A command
#: already recorded (a replay) changes nothing (NOT EXISTS) and returns no row.
RESERVE_STATEMENT = """
WITH upd AS (
    UPDATE stock SET qty = qty - $2 WHERE sku = $1 AND qty >= $2
       AND NOT EXISTS (SELECT FROM reservations WHERE order_id = $3 AND line = $4)
    RETURNING qty)
INSERT INTO reservations (order_id, line, sku, quantity, state, outcome_event_id, hold_until)
SELECT $3, $4, $1, $2, CASE WHEN EXISTS (SELECT FROM upd) THEN 'held' ELSE 'rejected' END, $5, $6
ON CONFLICT (order_id, line) DO NOTHING RETURNING state"""
#: The same as a client-side transaction: BEGIN, INSERT, UPDATE, COMMIT (four round trips;
#: the lock is held from the UPDATE's round trip to the COMMIT's).
RECORD = ("INSERT INTO reservations (order_id, line, sku, quantity, state, outcome_event_id,"
          " hold_until) VALUES ($3, $4, $1, $2, 'held', $5, $6)"
          " ON CONFLICT (order_id, line) DO NOTHING RETURNING state")
RESERVE = "UPDATE stock SET qty = qty - $2 WHERE sku = $1 AND qty >= $2 RETURNING qty"
REJECTED = "UPDATE reservations SET state = 'rejected' WHERE order_id = $1 AND line = $2"
VARIANT = os.environ.get("BENCH_PG_VARIANT", "statement")  # statement | transaction


class _Replay(Exception):
    """The reservation row exists already: roll back, answer from the stored row."""


async def _apply(con: asyncpg.Connection, args: tuple) -> str | None:
    """Apply one reservation: its state (held/rejected), or None if it was recorded before."""
    if VARIANT == "statement":
        return await con.fetchval(RESERVE_STATEMENT, *args)
    try:
        async with con.transaction():
            if await con.fetchval(RECORD, *args) is None:
                raise _Replay
            if await con.fetchval(RESERVE, *args[:2]) is not None:
                return "held"
            await con.execute(REJECTED, *args[2:4])
            return "rejected"
    except _Replay:
        return None


async def reserve(pool: asyncpg.Pool, cmd: ReserveStock) -> StockReserved | StockRejected:
    outcome_id = derive_id("reserve-outcome", cmd.order_id, cmd.line)
    common = {"event_id": outcome_id, "correlation_id": cmd.correlation_id,
              "order_id": cmd.order_id, "line": cmd.line, "sku": cmd.sku,
              "quantity": cmd.quantity}
    hold_until = cmd.hold_until or utc_now() + HOLD
    async with pool.acquire() as con:
        state = await _apply(con, (cmd.sku, cmd.quantity, cmd.order_id, cmd.line, outcome_id,
                                   hold_until))
        if state is None:  # a replay: repeat the stored answer
            row = await con.fetchrow("SELECT state, hold_until FROM reservations"
                                     " WHERE order_id = $1 AND line = $2", cmd.order_id, cmd.line)
            state, hold_until = row["state"], row["hold_until"]
        if state == "held":
            return StockReserved(hold_until=hold_until, **common)
        available = await con.fetchval("SELECT qty FROM stock WHERE sku = $1", cmd.sku) or 0
    return StockRejected(reason="insufficient_stock", available=available, **common)


async def adjust(pool: asyncpg.Pool, cmd: StockAdjusted) -> StockLevel:
    async with pool.acquire() as con, con.transaction():
        if await con.fetchval("INSERT INTO applied_adjustments VALUES ($1) ON CONFLICT DO NOTHING"
                              " RETURNING event_id", cmd.event_id) is not None:
            await con.execute("INSERT INTO stock VALUES ($1, $2) ON CONFLICT (sku) DO UPDATE"
                              " SET qty = stock.qty + excluded.qty", cmd.sku, cmd.delta or 0)
        qty = await con.fetchval("SELECT qty FROM stock WHERE sku = $1", cmd.sku) or 0
        held = await con.fetchval("SELECT coalesce(sum(quantity), 0) FROM reservations"
                                  " WHERE sku = $1 AND state = 'held'", cmd.sku)
    return StockLevel(event_id=derive_id("level", cmd.event_id, cmd.sku), sku=cmd.sku,
                      on_hand=qty + held, reserved=held, available=qty, safety_stock=0,
                      sellable=qty > 0)


async def answer(conn: ConnectionSettings, pool: asyncpg.Pool, producer: AIOKafkaProducer,
                 cmd: ReserveStock, acks: list[asyncio.Future]) -> None:
    """Apply one command and queue its answer; ``acks`` collects the broker's acks."""
    outcome = await reserve(pool, cmd)
    acks.append(await producer.send(conn.topic(INVENTORY_EVENTS), key=cmd.order_id.encode(),
                                    value=codec.encode(outcome)))


async def run(conn: ConnectionSettings, stop: asyncio.Event) -> None:
    schema = conn.schema("bench_pg")
    setup = await asyncpg.connect(conn.database_url)
    try:
        await setup.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)};"
                            f" SET search_path = {quote_ident(schema)};" + SCHEMA_SQL)
    finally:
        await setup.close()
    pool = await asyncpg.create_pool(
        conn.database_url, min_size=CONNECTIONS, max_size=CONNECTIONS,
        server_settings={"search_path": quote_ident(schema), "TimeZone": "UTC"})
    names = {conn.topic(n): n for n in (INVENTORY_COMMANDS, STOCK_ADJUSTMENTS)}
    consumer = AIOKafkaConsumer(
        *names, bootstrap_servers=conn.bootstrap_list, group_id=conn.topic("bench-pg"),
        enable_auto_commit=False, auto_offset_reset="earliest",
        fetch_max_wait_ms=conn.kafka_fetch_max_wait_ms,
        session_timeout_ms=int(conn.kafka_session_timeout * 1000),
        rebalance_timeout_ms=int(conn.kafka_rebalance_timeout * 1000),
        heartbeat_interval_ms=int(conn.kafka_heartbeat_interval * 1000))
    producer = AIOKafkaProducer(bootstrap_servers=conn.bootstrap_list, acks="all", linger_ms=1)
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            records = [r for rs in batches.values() for r in rs]
            if not records:
                continue
            events = [codec.decode(names[r.topic], r.value) for r in records]
            # Adjustments first (rare), then every command of the batch on 16 connections.
            acks = []
            for cmd in events:
                if isinstance(cmd, StockAdjusted):
                    level = await adjust(pool, cmd)
                    acks.append(await producer.send(conn.topic(STOCK_LEVELS), key=cmd.sku.encode(),
                                                    value=codec.encode(level)))
            # Concurrently, except that a command repeated within the batch waits for its
            # first copy (two copies in flight at once could both pass NOT EXISTS).
            first, again, seen = [], [], set()
            for cmd in events:
                if isinstance(cmd, ReserveStock):
                    key = (cmd.order_id, cmd.line)
                    (again if key in seen else first).append(cmd)
                    seen.add(key)
            await asyncio.gather(*(answer(conn, pool, producer, c, acks) for c in first))
            for cmd in again:
                await answer(conn, pool, producer, cmd, acks)
            await asyncio.gather(*acks)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    conn = ConnectionSettings()

    async def _main() -> None:
        tune_gc()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(conn, stop)

    asyncio.run(_main())


if __name__ == "__main__":
    main()
