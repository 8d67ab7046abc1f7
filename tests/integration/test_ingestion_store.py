"""Ingestion's storage on a real PostgreSQL: month partitions, archive, business days."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from services.ingestion import store
from services.ingestion.channels.base import PaymentState
from shared.db import Database
from shared.events import Customer, OrderLine, OrderSubmitted
from shared.migrations import migrate
from shared.timeutil import localize

pytestmark = pytest.mark.postgres

MIGRATIONS = Path(__file__).parents[2] / "services" / "ingestion" / "migrations"


@pytest.fixture
async def pool(stack_info):
    schema = f"t_{uuid.uuid4().hex[:10]}_ingestion"
    await migrate(stack_info.database_url, schema, MIGRATIONS)
    store._months.clear()  # partitions are per schema; this process cached another one's
    db = Database(stack_info.database_url, schema, max_size=2)
    try:
        yield await db.pool()
    finally:
        await db.close()
        store._months.clear()


async def save(pool, orders, payments) -> int:
    async with pool.acquire() as con:
        return await store.save_orders(con, orders, payments)


def order(n: int, placed_at: datetime, channel: str = "shopify") -> OrderSubmitted:
    return OrderSubmitted(
        order_id=f"o-{n}", channel=channel, channel_order_id=f"{channel}-{n}",
        customer=Customer(customer_id=f"c-{n}"),
        lines=(OrderLine(line=1, sku="SKU-1", quantity=1, unit_price=Decimal("9.90")),),
        currency="CNY", total=Decimal("9.90"), placed_at=placed_at,
    )


async def test_outage_orders_of_early_morning_shanghai_are_in_that_business_day(pool):
    """The outage: Shopify orders of 2026-01-20 00:00-08:00 Asia/Shanghai, sent as naive
    local times, were stored as UTC wall times and a scheduler asking for "today" missed
    them. Read in the channel's zone and queried by the merchant's business day, they are
    all there; asked for the UTC day instead, every one of them is missing."""
    wall = [datetime(2026, 1, 20, hour, 30) for hour in range(8)]  # noqa: DTZ001 - naive on purpose
    placed = [localize(w, "Asia/Shanghai") for w in wall]
    for n, at in enumerate(placed):
        await save(pool, [(order(n, at), PaymentState.PAID)], {})

    today = await store.orders_on_business_day(pool, date(2026, 1, 20), "Asia/Shanghai")
    assert [r["channel_order_id"] for r in today] == [f"shopify-{n}" for n in range(8)]
    assert all(r["placed_at"].date() == date(2026, 1, 19) for r in today)  # 16:30Z..23:30Z
    wrong_zone = await store.orders_on_business_day(pool, date(2026, 1, 20), "UTC")
    assert wrong_zone == []


@pytest.mark.parametrize(("zone", "day", "hours"), [
    ("America/New_York", date(2026, 3, 8), 23),   # spring forward
    ("America/New_York", date(2026, 11, 1), 25),  # fall back
    ("Europe/Berlin", date(2026, 3, 29), 23),
    ("Europe/Berlin", date(2026, 10, 25), 25),
])
async def test_business_day_on_a_dst_switch_keeps_every_order_of_that_local_day(
    pool, zone, day, hours
):
    start = localize(datetime(day.year, day.month, day.day), zone)  # noqa: DTZ001
    inside = [start + timedelta(minutes=30 + 60 * h) for h in range(hours)]  # each local hour
    outside = [start - timedelta(minutes=1), start + timedelta(hours=hours)]
    for n, at in enumerate(inside + outside):
        await save(pool, [(order(n, at, channel="web"), PaymentState.UNPAID)], {})
    found = await store.orders_on_business_day(pool, day, zone)
    assert len(found) == hours
    assert {r["placed_at"] for r in found} == set(inside)


async def test_orders_land_in_month_partitions_and_saving_twice_changes_nothing(pool):
    at = datetime(2026, 1, 31, 23, 59, tzinfo=UTC)
    assert await save(pool, [(order(1, at), PaymentState.UNPAID)], {}) == 1
    assert await save(pool, [(order(1, at), PaymentState.UNPAID)], {}) == 0
    async with pool.acquire() as con:
        where = await con.fetchval(
            "SELECT tableoid::regclass::text FROM orders WHERE order_id = 'o-1'")
        lines = await con.fetchval("SELECT count(*) FROM order_lines WHERE order_id = 'o-1'")
    assert where.endswith("orders_y2026m01") and lines == 1


async def test_archive_moves_old_months_out_of_the_hot_tables_and_keeps_them_queryable(pool):
    months = [datetime(2025, 10, 15, tzinfo=UTC), datetime(2025, 11, 15, tzinfo=UTC),
              datetime(2026, 1, 15, tzinfo=UTC)]
    for n, at in enumerate(months):
        await save(pool, [(order(n, at), PaymentState.PAID)], {})

    moved = await store.archive_before(pool, date(2025, 12, 1))

    assert sorted(moved) == ["order_lines_archive_y2025m10", "order_lines_archive_y2025m11",
                             "orders_archive_y2025m10", "orders_archive_y2025m11"]
    async with pool.acquire() as con:
        hot = await con.fetch("SELECT order_id FROM orders ORDER BY order_id")
        everything = await con.fetch(
            "SELECT order_id, archived FROM all_orders ORDER BY order_id")
    assert [r["order_id"] for r in hot] == ["o-2"]
    assert [(r["order_id"], r["archived"]) for r in everything] == [
        ("o-0", True), ("o-1", True), ("o-2", False)]
    # A late order for an archived month still lands somewhere queryable (the default).
    late_order = order(9, datetime(2025, 10, 20, tzinfo=UTC))
    await save(pool, [(late_order, PaymentState.PAID)], {})
    late = await store.orders_on_business_day(pool, date(2025, 10, 20), "UTC")
    assert [r["order_id"] for r in late] == ["o-9"]
    assert await store.archive_before(pool, date(2025, 12, 1)) == []  # nothing left to move
