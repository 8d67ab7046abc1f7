"""Every SQL statement of the status-tracking service."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from shared.events import OrderStatusChanged


async def record_changes(pool: asyncpg.Pool, changes: Sequence[OrderStatusChanged]) -> None:
    """Append to the history and move the current status forward, once per change id."""
    if not changes:
        return
    async with pool.acquire() as con, con.transaction():
        for c in changes:
            inserted = await con.fetchval(
                "INSERT INTO status_history (event_id, order_id, from_status, to_status, at,"
                " cause_event_id, detail) VALUES ($1,$2,$3,$4,$5,$6,$7)"
                " ON CONFLICT (event_id) DO NOTHING RETURNING true",
                c.event_id, c.order_id, c.from_status, c.to_status, c.at, c.cause_event_id,
                c.detail,
            )
            if inserted:
                await con.execute(
                    "INSERT INTO orders (order_id, channel, channel_order_id, customer_id,"
                    " status, status_since) VALUES ($1,$2,$3,$4,$5,$6)"
                    " ON CONFLICT (order_id) DO UPDATE SET status = excluded.status,"
                    " status_since = excluded.status_since, updated_at = now()",
                    c.order_id, c.channel, c.channel_order_id, c.customer_id, c.to_status, c.at,
                )
