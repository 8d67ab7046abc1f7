"""Every SQL statement of the ingestion service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime

import asyncpg

from services.ingestion.channels.base import PaymentState
from shared.db import columns
from shared.events import OrderSubmitted
from shared.timeutil import business_day_bounds

#: Months whose partitions this process knows exist (created or found).
_months: set[tuple[int, int]] = set()


def month_of(instant: datetime) -> tuple[int, int]:
    utc = instant.astimezone(UTC)
    return utc.year, utc.month


def _bounds(year: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


async def ensure_month(con: asyncpg.Connection, instant: datetime) -> None:
    """Create the month partitions of orders and order_lines that ``instant`` falls in."""
    year, month = month_of(instant)
    if (year, month) in _months:
        return
    start, end = _bounds(year, month)
    async with con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock(hashtext('ingestion.partitions'))")
        for table in ("orders", "order_lines"):
            name = f"{table}_y{year:04d}m{month:02d}"
            exists = await con.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
            archived = await con.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", f"{table}_archive_y{year:04d}m{month:02d}")
            if not exists and not archived:
                await con.execute(
                    f'CREATE TABLE "{name}" PARTITION OF {table}'
                    f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')")
    _months.add((year, month))


async def save_orders(con: asyncpg.Connection,
                      orders: Sequence[tuple[OrderSubmitted, PaymentState]],
                      payments: Mapping[str, PaymentState]) -> int:
    """Insert a batch's new orders and their lines once (idempotent: an order stored before
    is left as it is), then set the payment state of ``payments``' orders; returns how many
    orders were new. The month partitions come first, in their own transaction, so a batch
    rolled back never leaves one half-known."""
    for month in {month_of(order.placed_at) for order, _ in orders}:
        await ensure_month(con, datetime(*month, 1, tzinfo=UTC))
    inserted: set[str] = set()
    if orders:
        # One statement (one round trip, atomic): the orders, and the lines of those that
        # are new. A crash cannot leave an order without its lines.
        rows = await con.fetch(
            "WITH new AS (INSERT INTO orders (order_id, channel, channel_order_id,"
            " customer_id, currency, total, payment, placed_at, event_id)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
            " $5::text[], $6::numeric[], $7::text[], $8::timestamptz[], $9::text[])"
            " ON CONFLICT DO NOTHING RETURNING order_id),"
            " lines AS (INSERT INTO order_lines (order_id, placed_at, line, sku, quantity,"
            " unit_price) SELECT l.o, l.p, l.n, l.s, l.q, l.u FROM unnest($10::text[],"
            " $11::timestamptz[], $12::int[], $13::text[], $14::int[], $15::numeric[])"
            " AS l(o, p, n, s, q, u) JOIN new ON new.order_id = l.o ON CONFLICT DO NOTHING)"
            " SELECT order_id FROM new",
            *columns([(o.order_id, o.channel.value, o.channel_order_id,
                        o.customer.customer_id, o.currency, o.total, payment.value,
                        o.placed_at, o.event_id) for o, payment in orders], 9),
            *columns([(o.order_id, o.placed_at, ln.line, ln.sku, ln.quantity, ln.unit_price)
                      for o, _ in orders for ln in o.lines], 6))
        inserted = {r["order_id"] for r in rows}
    if payments:
        # After the orders (it may update one inserted just now); on its own, since a
        # redelivered batch sets the same states again.
        await con.execute(
            "UPDATE orders SET payment = u.payment, updated_at = now()"
            " FROM unnest($1::text[], $2::text[]) AS u(order_id, payment)"
            " WHERE orders.order_id = u.order_id",
            list(payments), [p.value for p in payments.values()])
    return len(inserted)


async def orders_on_business_day(pool: asyncpg.Pool, day: date, zone: str) -> list[asyncpg.Record]:
    """Orders placed on calendar day ``day`` in ``zone`` (hot and archived), oldest first.

    The day is turned into a UTC interval first: "today's orders" for a merchant in
    Asia/Shanghai starts at 16:00 UTC the day before, not at UTC midnight.
    """
    start, end = business_day_bounds(day, zone)
    async with pool.acquire() as con:
        return await con.fetch(
            "SELECT * FROM all_orders WHERE placed_at >= $1 AND placed_at < $2"
            " ORDER BY placed_at, order_id", start, end)


async def archive_before(pool: asyncpg.Pool, cutoff: date) -> list[str]:
    """Move every month partition that ends on or before ``cutoff`` (UTC) from the hot
    tables to the archive tables, where ``all_orders`` still finds them. Returns the
    partitions moved."""
    limit = datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)
    moved: list[str] = []
    async with pool.acquire() as con, con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock(hashtext('ingestion.partitions'))")
        for table in ("orders", "order_lines"):
            rows = await con.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n"
                " ON n.oid = p.relnamespace WHERE p.relname = $1"
                " AND n.nspname = current_schema() AND c.relname ~ '_y[0-9]{4}m[0-9]{2}$'"
                " ORDER BY c.relname", table)
            for row in rows:
                name = row["relname"]
                year, month = int(name[-7:-3]), int(name[-2:])
                start, end = _bounds(year, month)
                if end > limit:
                    continue
                archived = f"{table}_archive_y{year:04d}m{month:02d}"
                await con.execute(f'ALTER TABLE {table} DETACH PARTITION "{name}"')
                await con.execute(f'ALTER TABLE "{name}" RENAME TO "{archived}"')
                await con.execute(
                    f'ALTER TABLE {table}_archive ATTACH PARTITION "{archived}"'
                    f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')")
                _months.discard((year, month))
                moved.append(archived)
    return moved
