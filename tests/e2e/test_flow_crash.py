"""kill -9 of every service, one after the other, in the middle of a 20,000-order burst
through the whole flow; each is restarted at once. Proved by exact set comparison: every
order reaches RESERVED or REJECTED once on orders.status, no stock is taken twice, and no
customer gets a second message for the same status and channel. Kafka redelivers what was
not committed; effects must not repeat."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from support import collect, running_system, settled

from shared.codec import encode
from shared.db import quote_ident
from shared.events import StockAdjusted
from shared.topics import (
    NOTIFICATIONS_OUTCOMES,
    ORDERS_RAW,
    ORDERS_STATUS,
    ORDERS_SUBMITTED,
    STOCK_ADJUSTMENTS,
    STOCK_LEVELS,
)

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]

ORDERS, SKUS, STOCK_EACH = 20_000, 200, 90  # 18,000 units for 20,000 one-unit orders
PAID_SHARE = 0.8
#: each service is killed once its own output reaches this share of the orders
KILLS = (("ingestion", ORDERS_SUBMITTED, 0.2), ("inventory", ORDERS_STATUS, 0.35),
         ("status", ORDERS_STATUS, 0.55), ("notifier", NOTIFICATIONS_OUTCOMES, 0.7))
TERMINAL = {"RESERVED", "REJECTED"}


@pytest.fixture(scope="module")
def flow(stack_info, broker, tmp_path_factory):
    with running_system(stack_info, broker, tmp_path_factory.mktemp("flow-crash")) as system:
        yield system


def web_order(order_id: str, sku: str, paid: bool) -> bytes:
    return json.dumps({
        "order_id": order_id, "placed_at": "2026-11-24T10:15:00+08:00", "currency": "CNY",
        "customer": {"id": f"c-{order_id}"}, "paid": paid,
        "lines": [{"sku": sku, "quantity": 1, "unit_price": "9.90"}],
    }).encode()


async def _produce(conn, topic: str, records: list[tuple[str, bytes]],
                   headers: list[tuple[str, bytes]] | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=conn.bootstrap_list, acks="all",
                                linger_ms=10, max_batch_size=256 * 1024)
    await producer.start()
    try:
        for n, (key, value) in enumerate(records):
            await producer.send(conn.topic(topic), key=key.encode(), value=value,
                                headers=headers)
            if n % 500 == 499:
                await asyncio.sleep(0.05)  # a burst the services take in while it lasts
        await producer.flush()
    finally:
        await producer.stop()


async def _count(conn, topic: str, enough: int, keep: Any) -> None:
    await collect(conn, topic, lambda seen: sum(1 for s in seen if keep(s)) >= enough,
                  timeout=600)


async def test_kill_9_of_each_service_mid_burst_loses_nothing_and_repeats_nothing(flow):
    system = flow
    conn = system.conn
    run = uuid.uuid4().hex[:6]
    skus = [f"F{run}-{n:03d}" for n in range(SKUS)]
    # Given stock for 200 SKUs, 90 units each
    await _produce(conn, STOCK_ADJUSTMENTS, [(sku, encode(StockAdjusted(
        sku=sku, delta=STOCK_EACH, reason="restock", source="test"))) for sku in skus])
    await collect(conn, STOCK_LEVELS, lambda seen: {s["sku"] for s in seen} >= set(skus),
                  timeout=120)

    # When 20,000 one-line web orders (80% paid) arrive in a burst
    rng = random.Random(11)
    orders = {f"W{run}-{n:05d}": (rng.choice(skus), rng.random() < PAID_SHARE)
              for n in range(ORDERS)}
    sender = asyncio.create_task(_produce(
        conn, ORDERS_RAW, [(f"web:{o}", web_order(o, sku, paid))
                           for o, (sku, paid) in orders.items()], [("channel", b"web")]))
    # and each service is killed without warning while it works, and restarted at once
    kills: list[str] = []
    started = time.monotonic()
    for service, topic, share in KILLS:
        keep = ((lambda s: s.get("to_status") in TERMINAL) if topic == ORDERS_STATUS
                else (lambda s: True))
        await _count(conn, topic, int(ORDERS * share), keep)
        system.supervisor.kill(service)
        kills.append(f"{service} at {time.monotonic() - started:.1f}s")
        system.supervisor.restart(service)
    await sender
    await asyncio.to_thread(system.supervisor.wait_ready, 180)

    # Then every order reaches RESERVED or REJECTED, each once (one event id, one kind)
    def all_settled(seen: list[dict]) -> bool:
        return len({s["channel_order_id"] for s in seen if s["to_status"] in TERMINAL
                    and s["channel_order_id"] in orders}) >= ORDERS

    changes = await collect(conn, ORDERS_STATUS, all_settled, timeout=900)
    settled_at = time.monotonic() - started
    outcome: dict[str, set[tuple[str, str]]] = defaultdict(set)
    order_ids: dict[str, str] = {}
    for s in changes:
        if s["to_status"] in TERMINAL and s["channel_order_id"] in orders:
            outcome[s["channel_order_id"]].add((s["event_id"], s["to_status"]))
            order_ids[s["channel_order_id"]] = s["order_id"]
    assert set(outcome) == set(orders)
    twice = {o: ids for o, ids in outcome.items() if len(ids) != 1}
    assert not twice, f"{len(twice)} orders settled more than once, e.g. {list(twice.items())[:3]}"
    reserved = {o for o, ids in outcome.items() if next(iter(ids))[1] == "RESERVED"}
    wire_duplicates = sum(n - 1 for n in Counter(s["event_id"] for s in changes).values())

    # and no stock is taken twice: one ledger reserve per reserved order, none beyond stock
    demand = Counter(sku for sku, _ in orders.values())
    per_sku = Counter(orders[o][0] for o in reserved)
    assert all(per_sku[sku] == min(demand[sku], STOCK_EACH) for sku in skus)
    inventory = quote_ident(conn.schema("inventory"))
    notifier = quote_ident(conn.schema("notifier"))
    con = await asyncpg.connect(conn.database_url)
    try:
        async def reserves() -> dict[str, int]:
            rows = await con.fetch(
                f"SELECT order_id, count(*) AS n FROM {inventory}.ledger"
                f" WHERE kind = 'reserve' AND sku = ANY($1::text[]) GROUP BY order_id", skus)
            return {r["order_id"]: r["n"] for r in rows}

        ledger = await settled(reserves, lambda rows: len(rows) >= len(reserved))
        assert set(ledger) == {order_ids[o] for o in reserved}
        assert set(ledger.values()) == {1}

        # and no customer hears twice about one status on one channel
        async def inbox() -> list[asyncpg.Record]:
            return await con.fetch(f"SELECT order_id, status FROM {notifier}.inbox"
                                   f" WHERE order_id = ANY($1::text[])", list(order_ids.values()))

        rows = await settled(inbox, lambda rows: len(rows) >= ORDERS)
    finally:
        await con.close()
    assert Counter((r["order_id"], r["status"]) for r in rows) == Counter(
        (order_ids[o], next(iter(ids))[1]) for o, ids in outcome.items())
    told = await collect(conn, NOTIFICATIONS_OUTCOMES, lambda seen: len(
        {s["order_id"] for s in seen} & set(order_ids.values())) >= ORDERS, timeout=300)
    per_message: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for s in told:
        per_message[(s["order_id"], s["status"], s["channel"])].add(s["event_id"])
    assert all(len(ids) == 1 for ids in per_message.values())
    print(f"\nkilled {', '.join(kills)}; {ORDERS} orders settled in {settled_at:.1f}s: "
          f"{len(reserved)} reserved, {ORDERS - len(reserved)} rejected, "
          f"{wire_duplicates} duplicate records on orders.status (same ids)")
