"""Every SQL statement of the notifier service."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.notifier.domain import InAppMessage


async def deliver_in_app(con: asyncpg.Connection, messages: Sequence[InAppMessage]) -> int:
    """Put each message in its customer's inbox once, in one statement; returns how many
    were new (a replayed message is already there)."""
    if not messages:
        return 0
    rows = await con.fetch(
        "INSERT INTO inbox (message_id, order_id, customer_id, status, title, body)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
        " $6::text[]) ON CONFLICT DO NOTHING RETURNING message_id",
        [m.message_id for m in messages], [m.order_id for m in messages],
        [m.customer_id for m in messages], [m.status.value for m in messages],
        [m.title for m in messages], [m.body for m in messages])
    return len(rows)
