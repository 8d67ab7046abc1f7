"""The batched inventory hot path through the real service: bad commands are dead-lettered
with their reason while the next command is still answered; a store sale reaches
stock.levels; a restarted worker rebuilds its books from the changelog, so a replayed
command gets its original answer and moves no stock."""

from __future__ import annotations

import base64
import uuid

import asyncpg
import pytest
from support import collect, given_stock, produce, running_system, settled

from shared.codec import encode
from shared.db import quote_ident
from shared.events import ConfirmReservation, ReserveStock, StockAdjusted
from shared.topics import (
    INVENTORY_COMMANDS,
    INVENTORY_EVENTS,
    ORDERS_DLQ,
    STOCK_ADJUSTMENTS,
    STOCK_LEVELS,
)

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]


@pytest.fixture(scope="module", params=["memory://", "rocksdb://"])
def inventory(request, stack_info, broker, tmp_path_factory):
    """The worker with each book store: memory (restore reads the whole changelog) and
    rocksdb (restore loads the local copy and reads only what came after it)."""
    env = {"ORDERSTREAM_INVENTORY_TABLE_STORE": request.param}
    with running_system(stack_info, broker, tmp_path_factory.mktemp("hot"), env,
                        services=("inventory",)) as system:
        yield system


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def reserve(order: str, sku: str, quantity: int = 1) -> bytes:
    return encode(ReserveStock(order_id=order, line=1, sku=sku, quantity=quantity,
                               correlation_id=order))


def answers_for(order: str):
    return lambda seen: [e for e in seen if e.get("order_id") == order]


async def test_bad_commands_are_dead_lettered_and_the_next_one_is_answered(inventory):
    conn = inventory.conn
    sku, other, good = unique("SKU"), unique("SKU"), unique("ord")
    await given_stock(conn, sku, 2)
    confirm_unknown = encode(ConfirmReservation(order_id=unique("ord"), line=1, sku=sku,
                                                correlation_id="c"))
    await produce(conn, INVENTORY_COMMANDS, [
        (sku, b"{not json"),
        (other, reserve(unique("ord"), sku)),  # keyed by another SKU: wrong partition risk
        (sku, confirm_unknown),
        (sku, reserve(good, sku)),
    ])
    answered = await collect(conn, INVENTORY_EVENTS, answers_for(good))
    assert [e["event_type"] for e in answered if e["order_id"] == good] == ["StockReserved"]

    def three(seen: list[dict]) -> bool:
        return len([r for r in seen if r["source_topic"] == conn.topic(INVENTORY_COMMANDS)
                    and _key(r) in (sku, other)]) >= 3

    dead = [r for r in await collect(conn, ORDERS_DLQ, three)
            if _key(r) in (sku, other)]
    reasons = {r["reason"]: r for r in dead}
    assert set(reasons) == {"invalid_json", "wrong_key", "unknown_reservation"}
    assert base64.b64decode(reasons["invalid_json"]["original_value"]) == b"{not json"
    assert base64.b64decode(reasons["unknown_reservation"]["original_value"]) == confirm_unknown
    assert all(r["service"] == "inventory" for r in dead)


async def test_a_store_sale_reaches_stock_levels(inventory):
    conn = inventory.conn
    sku = unique("SKU")
    await given_stock(conn, sku, 5)
    sale = StockAdjusted(sku=sku, delta=-1, reason="store_sale", source="pos")
    await produce(conn, STOCK_ADJUSTMENTS, [(sku, encode(sale))])
    levels = await collect(conn, STOCK_LEVELS, lambda seen: any(
        s["sku"] == sku and s["on_hand"] == 4 for s in seen))
    last = [s for s in levels if s["sku"] == sku][-1]
    assert (last["on_hand"], last["reserved"], last["available"]) == (4, 0, 4)


async def test_a_restarted_worker_restores_its_books_and_replays_change_nothing(inventory):
    conn = inventory.conn
    sku, first, second = unique("SKU"), unique("ord"), unique("ord")
    await given_stock(conn, sku, 1)
    await produce(conn, INVENTORY_COMMANDS, [(sku, reserve(first, sku))])
    before = [e for e in await collect(conn, INVENTORY_EVENTS, answers_for(first))
              if e["order_id"] == first]

    inventory.supervisor.kill("inventory")
    inventory.supervisor.restart("inventory")
    inventory.supervisor.wait_ready(120)
    restored = [line for line in (inventory.supervisor.log_dir / "inventory.log").read_text()
                .splitlines() if "event=stock_book_restored" in line]
    if inventory.supervisor.env["ORDERSTREAM_INVENTORY_TABLE_STORE"] == "rocksdb://":
        # The second start read its local copy: some partition came back with local records.
        assert any("local=0" not in line for line in restored[-4:]), restored

    # The same command again (a producer retry), and a new order for the sold-out SKU.
    await produce(conn, INVENTORY_COMMANDS, [(sku, reserve(first, sku)),
                                             (sku, reserve(second, sku))])
    seen = await collect(conn, INVENTORY_EVENTS, lambda s: any(
        e["order_id"] == second for e in s) and len(
        [e for e in s if e["order_id"] == first]) >= 2)
    firsts = [e for e in seen if e["order_id"] == first]
    assert {e["event_id"] for e in firsts} == {before[0]["event_id"]}
    assert {e["event_type"] for e in firsts} == {"StockReserved"}
    (refusal,) = [e for e in seen if e["order_id"] == second]
    assert (refusal["event_type"], refusal["reason"]) == ("StockRejected", "not_sellable")

    con = await asyncpg.connect(conn.database_url)
    try:
        rows = await settled(lambda: con.fetch(
            f"SELECT kind, order_id FROM {quote_ident(conn.schema('inventory'))}.ledger"
            " WHERE sku = $1 ORDER BY kind, order_id", sku), lambda r: len(r) >= 3)
    finally:
        await con.close()
    assert [(r["kind"], r["order_id"]) for r in rows] == [
        ("adjust", None), ("reject", second), ("reserve", first)]


def _key(rejected: dict) -> str | None:
    key = rejected.get("original_key")
    return base64.b64decode(key).decode() if key else None



