"""Every SQL statement of the ingestion service."""

from __future__ import annotations

import asyncpg

from shared.events import OrderSubmitted


async def save_order(pool: asyncpg.Pool, order: OrderSubmitted) -> bool:
    """Insert the order and its lines once; returns False when it was already stored."""
    async with pool.acquire() as con, con.transaction():
        inserted = await con.fetchval(
            "INSERT INTO orders (order_id, channel, channel_order_id, customer_id, currency,"
            " total, paid, placed_at, event_id) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"
            " ON CONFLICT DO NOTHING RETURNING true",
            order.order_id, order.channel.value, order.channel_order_id,
            order.customer.customer_id, order.currency, order.total, order.paid,
            order.placed_at, order.event_id,
        )
        if inserted:
            await con.executemany(
                "INSERT INTO order_lines (order_id, line, sku, quantity, unit_price)"
                " VALUES ($1,$2,$3,$4,$5)",
                [(order.order_id, ln.line, ln.sku, ln.quantity, ln.unit_price)
                 for ln in order.lines],
            )
        return bool(inserted)
