"""Every SQL statement of the inventory service."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.inventory.domain import Movement


async def append_movements(pool: asyncpg.Pool, movements: Sequence[Movement]) -> None:
    """Append to the ledger; a movement already recorded (a replay) is skipped."""
    if not movements:
        return
    columns = list(zip(*((m.movement_id, m.sku, m.kind, m.on_hand_delta, m.reserved_delta,
                          m.order_id, m.line, m.reason, m.source, m.occurred_at)
                         for m in movements), strict=True))
    async with pool.acquire() as con:  # one statement per batch, however many rows
        await con.execute(
            "INSERT INTO ledger (movement_id, sku, kind, on_hand_delta, reserved_delta,"
            " order_id, line, reason, source, occurred_at)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::int[],"
            " $6::text[], $7::int[], $8::text[], $9::text[], $10::timestamptz[])"
            " ON CONFLICT (movement_id) DO NOTHING",
            *columns,
        )


async def ledger_totals(pool: asyncpg.Pool, sku: str) -> tuple[int, int]:
    """(on_hand, reserved) of a SKU recomputed from the ledger alone."""
    async with pool.acquire() as con:
        row = await con.fetchrow(
            "SELECT coalesce(sum(on_hand_delta), 0) AS on_hand,"
            " coalesce(sum(reserved_delta), 0) AS reserved FROM ledger WHERE sku = $1", sku,
        )
    return int(row["on_hand"]), int(row["reserved"])
