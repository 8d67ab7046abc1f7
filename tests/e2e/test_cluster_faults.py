"""Fault test on the three-node Apache Kafka cluster: a broker stops and comes back while
numbered orders stream through the walking skeleton. Every order must reach orders.status
as exactly one distinct RESERVED change; duplicates on the wire are allowed, duplicated
effects are not.

Modelled on Kafka's own system tests: seeded input, a broker bounced mid-stream, then
exact checks of input set against output set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from support import collect, eventually, given_stock

from services import kafka_cluster
from shared.db import quote_ident
from shared.topics import ORDERS_RAW, ORDERS_STATUS

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres,
              pytest.mark.kafka_cluster]

ORDERS = 600
RATE = 40  # orders per second: the stream lasts 15 s, the broker is down in its middle
SKU = "SKU-FAULT"


async def _leader_of_first_raw_partition(system) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=system.conn.bootstrap_list)
    await admin.start()
    try:
        (topic,) = await admin.describe_topics([system.conn.topic(ORDERS_RAW)])
        return next(p["leader"] for p in topic["partitions"] if p["partition"] == 0)
    finally:
        await admin.close()


async def _send_numbered_orders(system, prefix: str) -> list[str]:
    producer = AIOKafkaProducer(
        bootstrap_servers=system.conn.bootstrap_list, acks="all", enable_idempotence=True,
        request_timeout_ms=60_000, retry_backoff_ms=200,
    )
    await producer.start()
    sent: list[str] = []
    try:
        started = time.monotonic()
        for n in range(ORDERS):
            order = f"{prefix}-{n:05d}"
            value = json.dumps({
                "order_id": order, "placed_at": "2026-11-24T10:15:00", "currency": "CNY",
                "customer": {"id": f"c-{n}"},
                "lines": [{"sku": SKU, "quantity": 1, "unit_price": "1.00"}],
            }).encode()
            await producer.send(system.conn.topic(ORDERS_RAW), value=value,
                                key=f"web:{order}".encode(), headers=[("channel", b"web")])
            sent.append(order)
            await asyncio.sleep(max(0.0, started + (n + 1) / RATE - time.monotonic()))
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def _bounce(broker, node: int, kill: bool) -> tuple[float, float]:
    """Stop ``node`` a third into the stream, start it again two thirds in."""
    await asyncio.sleep(ORDERS / RATE / 3)
    stopped = time.monotonic()
    await asyncio.to_thread(kafka_cluster.stop_node, node, broker.cluster.state_dir, kill=kill)
    await asyncio.sleep(ORDERS / RATE / 3)
    await asyncio.to_thread(kafka_cluster.start_node, node, broker.cluster.state_dir)
    return stopped, time.monotonic()


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
async def test_every_order_is_reserved_exactly_once_while_a_broker_restarts(
    system, broker, kill
):
    prefix = "K" if kill else "T"  # both runs share the module's system: distinct orders
    await given_stock(system.conn, SKU, ORDERS * 2)
    node = await _leader_of_first_raw_partition(system)

    sent, (down_at, up_at) = await asyncio.gather(
        _send_numbered_orders(system, prefix), _bounce(broker, node, kill))

    wanted = set(sent)

    def all_reserved(seen: list[dict]) -> bool:
        return wanted <= {s["channel_order_id"] for s in seen if s["to_status"] == "RESERVED"}

    records = await collect(system.conn, ORDERS_STATUS, all_reserved, timeout=240)
    ours = [r for r in records if r["channel_order_id"] in wanted]
    per_event = Counter(r["event_id"] for r in ours)
    distinct = {r["event_id"]: r for r in ours}
    reserved = Counter(r["channel_order_id"] for r in distinct.values()
                       if r["to_status"] == "RESERVED")
    submitted = Counter(r["channel_order_id"] for r in distinct.values()
                        if r["to_status"] == "SUBMITTED")
    wire_duplicates = sum(n - 1 for n in per_event.values())

    status, notifier, inventory = (quote_ident(system.conn.schema(s))
                                   for s in ("status", "notifier", "inventory"))
    ids = [r["order_id"] for r in distinct.values()]
    con = await asyncpg.connect(system.conn.database_url)
    try:
        async def counts() -> tuple[int, int, int]:
            history = await con.fetchval(
                f"SELECT count(*) FROM {status}.status_history WHERE order_id = ANY($1::text[])",
                ids)
            inbox = await con.fetchval(
                f"SELECT count(*) FROM {notifier}.inbox WHERE status = 'RESERVED'"
                " AND order_id = ANY($1::text[])", ids)
            units = await con.fetchval(
                f"SELECT coalesce(sum(reserved_delta), 0) FROM {inventory}.ledger"
                " WHERE sku = $1 AND order_id = ANY($2::text[])", SKU, ids)
            return history, inbox, units

        async def caught_up() -> tuple[int, int, int] | None:
            # Each service writes PostgreSQL on its own schedule, the notifier after it read
            # orders.status: wait until every count is reached, then check none overshoots.
            now = await counts()
            return now if min(now[0] - 2 * ORDERS, now[1] - ORDERS, now[2] - ORDERS) >= 0 \
                else None

        waited = time.monotonic()
        with contextlib.suppress(AssertionError):  # the exact checks below say what is off
            await eventually(caught_up, timeout=120)
        waited = time.monotonic() - waited
        await asyncio.sleep(2)  # anything still in flight would overshoot by now
        history, inbox, reserved_units = await counts()
    finally:
        await con.close()

    print(f"\n{'SIGKILL' if kill else 'SIGTERM'} node {node} (leader of {ORDERS_RAW}[0]), "
          f"down {up_at - down_at:.1f}s; "
          f"sent {len(sent)}, reserved {len(reserved)}, status records {len(ours)}, "
          f"distinct changes {len(distinct)}, duplicates on the wire {wire_duplicates}, "
          f"lost {len(wanted - set(reserved))}; PostgreSQL caught up {waited:.1f}s later")
    assert len(sent) == ORDERS
    assert set(reserved) == wanted and set(reserved.values()) == {1}
    assert set(submitted) == wanted and set(submitted.values()) == {1}
    assert history == 2 * ORDERS  # SUBMITTED and RESERVED, once each
    assert inbox == ORDERS  # one message per order, however often a change was delivered
    assert reserved_units == ORDERS  # no reservation applied twice
