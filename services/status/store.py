"""Every SQL statement of the status-tracking service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.status.domain import HistoryNote, OrderState, Waiting
from shared.db import Statement, columns
from shared.events import FulfilmentEvent, OrderStatusChanged


@dataclass(frozen=True)
class Schedule:
    """When the poller and the stale monitor should look at an order next."""

    next_poll_at: datetime | None
    deadline_at: datetime | None


def via_of(source: str) -> str:
    """How a fulfilment event came in, for the carrier-event log and metrics."""
    if source.startswith("poller:"):
        return "poll"
    if source == "wms" or source.startswith("wms:"):
        return "wms"
    return "callback"


@dataclass(frozen=True)
class Written:
    """What one decision writes: the order's new state (and when to look at it next), its
    status changes, history notes and carrier events. ``created``: the order was submitted
    by this decision (news waiting for it is taken)."""

    state: OrderState | Waiting | None
    schedule: Schedule | None
    changes: Sequence[OrderStatusChanged] = ()
    notes: Sequence[HistoryNote] = ()
    scans: Sequence[FulfilmentEvent] = ()
    created: bool = False


async def record_all(con: asyncpg.Connection, decisions: Sequence[Written]) -> None:
    """Write a batch of decisions as one statement (one round trip, atomic), one part per
    table: history (changes and notes, in the order they were decided: ``seq`` follows it),
    carrier events, the current rows, waiting orders. Replays write nothing twice (ids), and
    an older version never overwrites a newer row; of several decisions about one order only
    the last state is written."""
    history: list[tuple[Any, ...]] = []
    for d in decisions:
        history.extend((c.event_id, c.order_id, c.from_status, c.to_status, c.at,
                        c.cause_event_id, c.detail, True, c.to_status, c.tracking_number)
                       for c in d.changes)
        history.extend((n.event_id, n.order_id, n.status, n.status, n.at, n.cause_event_id,
                        n.detail, False, n.reported, None) for n in d.notes)
    scans = [(s.event_id, s.order_id, s.event_type, s.source, via_of(s.source), s.carrier,
              s.tracking_number, s.location, getattr(s, "detail", "") or "", s.scanned_at,
              s.occurred_at) for d in decisions for s in d.scans]
    last: dict[str, Written] = {}
    created: set[str] = set()
    for d in decisions:
        if d.state is not None:
            last[d.state.order_id] = d
            if d.created:
                created.add(d.state.order_id)
    current = [(d.state, d.schedule) for d in last.values() if isinstance(d.state, OrderState)]
    waiting = [d.state for d in last.values() if isinstance(d.state, Waiting)]
    statement = Statement()
    if history:
        statement.add(
            "INSERT INTO status_history (event_id, order_id, from_status, to_status, at,"
            " cause_event_id, detail, applied, reported, tracking_number)"
            " SELECT e, o, f, t, a, c, d, ap, r, tn FROM unnest({}::text[], {}::text[],"
            " {}::text[], {}::text[], {}::timestamptz[], {}::text[], {}::text[],"
            " {}::boolean[], {}::text[], {}::text[])"
            " WITH ORDINALITY AS u(e, o, f, t, a, c, d, ap, r, tn, n)"
            " ORDER BY n ON CONFLICT (event_id) DO NOTHING",
            *columns(history, 10))
    if scans:
        statement.add(
            "INSERT INTO carrier_events (event_id, order_id, event_type, source, via,"
            " carrier, tracking_number, location, detail, scanned_at, received_at)"
            " SELECT * FROM unnest({}::text[], {}::text[], {}::text[], {}::text[],"
            " {}::text[], {}::text[], {}::text[], {}::text[], {}::text[],"
            " {}::timestamptz[], {}::timestamptz[]) ON CONFLICT (event_id) DO NOTHING",
            *columns(scans, 11))
    if current:
        statement.add(_UPSERT_CURRENT, *columns(
            [(s.order_id, s.channel, s.channel_order_id, s.customer_id, s.status,
              s.status_since, s.version, s.paid, s.placed_at, s.carrier, s.tracking_number,
              s.last_scan_at, s.last_news_at, when.next_poll_at if when else None,
              when.deadline_at if when else None) for s, when in current], 15))
    if created:
        # Disjoint from ``waiting``: an order that was created is never waiting again.
        statement.add("DELETE FROM waiting_orders WHERE order_id = ANY({}::text[])",
                      list(created))
    if waiting:
        statement.add(
            "INSERT INTO waiting_orders (order_id, since, events)"
            " SELECT * FROM unnest({}::text[], {}::timestamptz[], {}::int[])"
            " ON CONFLICT (order_id) DO UPDATE SET events = excluded.events",
            [w.order_id for w in waiting], [w.since for w in waiting],
            [len(w.events) for w in waiting])
    await statement.execute(con)


_UPSERT_CURRENT = (
    "INSERT INTO orders (order_id, channel, channel_order_id, customer_id, status,"
    " status_since, version, paid, placed_at, carrier, tracking_number, last_scan_at,"
    " last_news_at, next_poll_at, deadline_at)"
    " SELECT * FROM unnest({}::text[], {}::text[], {}::text[], {}::text[], {}::text[],"
    " {}::timestamptz[], {}::int[], {}::boolean[], {}::timestamptz[], {}::text[],"
    " {}::text[], {}::timestamptz[], {}::timestamptz[], {}::timestamptz[],"
    " {}::timestamptz[])"
    " ON CONFLICT (order_id) DO UPDATE SET status = excluded.status,"
    " status_since = excluded.status_since, version = excluded.version,"
    " paid = excluded.paid, carrier = excluded.carrier,"
    " tracking_number = excluded.tracking_number, last_scan_at = excluded.last_scan_at,"
    " last_news_at = excluded.last_news_at, next_poll_at = excluded.next_poll_at,"
    " poll_attempts = CASE WHEN orders.last_news_at IS DISTINCT FROM excluded.last_news_at"
    "   THEN 0 ELSE orders.poll_attempts END,"
    " deadline_at = excluded.deadline_at,"
    " alerted_at = CASE WHEN orders.deadline_at IS DISTINCT FROM excluded.deadline_at"
    "   THEN NULL ELSE orders.alerted_at END,"
    " alerts = CASE WHEN orders.status IS DISTINCT FROM excluded.status"
    "   THEN 0 ELSE orders.alerts END,"
    " updated_at = now()"
    " WHERE orders.version < excluded.version"
)


# --- the carrier poller --------------------------------------------------------------------


@dataclass(frozen=True)
class DueParcel:
    order_id: str
    carrier: str
    tracking_number: str
    attempts: int
    last_scan_at: datetime | None  # the newest scan the order has (as far as rows know)


async def claim_due_polls(pool: asyncpg.Pool, limit: int, lease: timedelta
                          ) -> list[DueParcel]:
    """Take up to ``limit`` parcels due for a poll, oldest first, and push their next poll
    ``lease`` ahead so no other worker takes them meanwhile (a crashed poll retries then)."""
    rows = await pool.fetch(
        "WITH due AS (SELECT order_id FROM orders WHERE next_poll_at <= now()"
        "   ORDER BY next_poll_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
        " UPDATE orders o SET next_poll_at = now() + $2::interval FROM due"
        " WHERE o.order_id = due.order_id"
        " RETURNING o.order_id, o.carrier, o.tracking_number, o.poll_attempts,"
        " o.last_scan_at",
        limit, lease,
    )
    return [DueParcel(r["order_id"], r["carrier"], r["tracking_number"], r["poll_attempts"],
                      r["last_scan_at"])
            for r in rows if r["carrier"] and r["tracking_number"]]


async def polled(pool: asyncpg.Pool, results: Sequence[tuple[str, datetime, str | None]]
                 ) -> None:
    """After a poll: (order_id, next poll, error or None). News that arrived meanwhile moved
    ``next_poll_at`` past the lease already; that later time is kept."""
    await pool.executemany(
        "UPDATE orders SET next_poll_at = CASE WHEN next_poll_at IS NULL THEN NULL"
        "   ELSE $2::timestamptz END,"
        " last_poll_at = now(), last_poll_error = $3,"
        " poll_attempts = CASE WHEN $3::text IS NULL THEN 0 ELSE poll_attempts + 1 END"
        " WHERE order_id = $1",
        results,
    )


@dataclass(frozen=True)
class Parcel:
    carrier: str | None
    tracking_number: str | None
    last_scan_at: datetime | None


async def parcel_of(pool: asyncpg.Pool, order_id: str) -> Parcel | None:
    """The parcel the order is known to ship with, and its newest scan; None: no such order."""
    row = await pool.fetchrow(
        "SELECT carrier, tracking_number, last_scan_at FROM orders WHERE order_id = $1",
        order_id)
    return None if row is None else Parcel(row["carrier"], row["tracking_number"],
                                           row["last_scan_at"])


async def order_for_parcel(pool: asyncpg.Pool, carrier: str, tracking_number: str
                           ) -> tuple[str, datetime | None] | None:
    """(order id, its newest scan) of the order shipping this parcel, if any."""
    row = await pool.fetchrow(
        "SELECT order_id, last_scan_at FROM orders WHERE tracking_number = $1 AND carrier = $2"
        " ORDER BY status_since DESC LIMIT 1", tracking_number, carrier)
    return None if row is None else (row["order_id"], row["last_scan_at"])



# --- stale orders --------------------------------------------------------------------------


@asynccontextmanager
async def stale_batch(pool: asyncpg.Pool, limit: int, repeat: timedelta
                      ) -> AsyncIterator[tuple[list[asyncpg.Record], Any]]:
    """Stale orders not alerted on within ``repeat``, locked for this transaction. The caller
    publishes the alerts, then calls the yielded ``done()``; a crash in between leaves them
    due, and the republished alerts carry the same ids."""
    async with pool.acquire() as con, con.transaction():
        rows = await con.fetch(
            "SELECT order_id, channel, status, status_since, deadline_at, alerts,"
            " carrier, tracking_number, last_scan_at FROM orders"
            " WHERE deadline_at <= now()"
            " AND (alerted_at IS NULL OR alerted_at <= now() - $2::interval)"
            " ORDER BY deadline_at LIMIT $1 FOR UPDATE SKIP LOCKED",
            limit, repeat,
        )

        async def done() -> None:
            await con.execute(
                "UPDATE orders SET alerted_at = now(), alerts = alerts + 1"
                " WHERE order_id = ANY($1::text[])", [r["order_id"] for r in rows])

        yield rows, done


async def stale_counts(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT status, count(*) AS n FROM orders WHERE deadline_at <= now() GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


@asynccontextmanager
async def orphan_batch(pool: asyncpg.Pool, older_than: timedelta, limit: int = 500
                       ) -> AsyncIterator[tuple[list[asyncpg.Record], Any]]:
    """News waiting longer than ``older_than`` for an order never submitted, not alerted."""
    async with pool.acquire() as con, con.transaction():
        rows = await con.fetch(
            "SELECT order_id, since, events FROM waiting_orders"
            " WHERE since <= now() - $1::interval AND alerted_at IS NULL"
            " ORDER BY since LIMIT $2 FOR UPDATE SKIP LOCKED", older_than, limit)

        async def done() -> None:
            await con.execute("UPDATE waiting_orders SET alerted_at = now()"
                              " WHERE order_id = ANY($1::text[])",
                              [r["order_id"] for r in rows])

        yield rows, done


# --- the query API -------------------------------------------------------------------------


async def order(pool: asyncpg.Pool, order_id: str
                ) -> tuple[asyncpg.Record | None, list[asyncpg.Record], list[asyncpg.Record]]:
    """The current row, its history (oldest first) and its carrier events."""
    async with pool.acquire() as con:
        current = await con.fetchrow(
            "SELECT *, deadline_at <= now() AS stale FROM orders WHERE order_id = $1", order_id)
        if current is None:
            return None, [], []
        history = await con.fetch(
            "SELECT * FROM status_history WHERE order_id = $1 ORDER BY seq",
            order_id)
        scans = await con.fetch(
            "SELECT * FROM carrier_events WHERE order_id = $1"
            " ORDER BY coalesce(scanned_at, received_at), recorded_at", order_id)
    return current, history, scans


async def orders(pool: asyncpg.Pool, *, status: str | None, channel: str | None,
                 stale: bool | None, limit: int, after: str | None) -> list[asyncpg.Record]:
    """Current rows matching the filters, by order id (``after``: the last id of the previous
    page)."""
    return await pool.fetch(
        "SELECT *, coalesce(deadline_at <= now(), false) AS stale FROM orders"
        " WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR channel = $2)"
        " AND ($3::boolean IS NULL OR coalesce(deadline_at <= now(), false) = $3)"
        " AND ($4::text IS NULL OR order_id > $4)"
        " ORDER BY order_id LIMIT $5",
        status, channel, stale, after, limit,
    )
