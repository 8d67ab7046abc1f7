"""Every SQL statement of the notifier service."""

from __future__ import annotations

import asyncpg

from services.notifier.domain import InAppMessage


async def deliver_in_app(pool: asyncpg.Pool, msg: InAppMessage) -> bool:
    """Put the message in the customer's inbox once; False if it was already there."""
    async with pool.acquire() as con:
        inserted = await con.fetchval(
            "INSERT INTO inbox (message_id, order_id, customer_id, status, title, body)"
            " VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT DO NOTHING RETURNING true",
            msg.message_id, msg.order_id, msg.customer_id, msg.status.value, msg.title,
            msg.body,
        )
    return bool(inserted)
