"""Every SQL statement of the notifier service."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from shared.db import Statement, columns


@dataclass(frozen=True)
class NewDelivery:
    """A delivery row to create (once: its id comes from order, status and channel)."""

    message_id: str
    notification_id: str
    order_id: str
    status: str
    channel: str
    recipient: str
    payload: dict[str, Any]
    state: str                      # pending
    due_at: datetime | None


@dataclass(frozen=True)
class PlanRow:
    """What the consume loop writes for one planned notification."""

    notification_id: str
    order_id: str
    customer_id: str
    status: str
    trigger: str
    policy: str
    chain: tuple[str, ...]
    payloads: dict[str, Any]
    vip: bool
    at: datetime
    followup_due: datetime | None
    deliveries: tuple[NewDelivery, ...]
    inbox: tuple[str, str, str] | None  # (message_id, title, body)


def _deliveries_part(statement: Statement, rows: Sequence[NewDelivery]) -> None:
    statement.add(
        "INSERT INTO deliveries (message_id, notification_id, order_id, status, channel,"
        " recipient, payload, state, due_at, final_at)"
        " SELECT m, n, o, s, c, r, p::jsonb, st, d, CASE WHEN st = 'delivered' THEN now() END"
        " FROM unnest({}::text[], {}::text[], {}::text[], {}::text[], {}::text[], {}::text[],"
        " {}::text[], {}::text[], {}::timestamptz[]) AS u(m, n, o, s, c, r, p, st, d)"
        " ON CONFLICT DO NOTHING",
        *columns([(d.message_id, d.notification_id, d.order_id, d.status, d.channel,
                   d.recipient, json.dumps(d.payload, ensure_ascii=False), d.state, d.due_at)
                  for d in rows], 9))


async def write_planned(con: asyncpg.Connection, rows: Sequence[PlanRow]) -> None:
    """Notifications, their first deliveries and in-app messages, in one statement; a
    replayed batch writes nothing new. A customer the app alone can reach gets the inbox
    row only: there is nothing to send, follow up or count in the reach."""
    if not rows:
        return
    statement = Statement()
    sent = [r for r in rows if r.chain]
    if sent:
        statement.add(
            "INSERT INTO notifications (notification_id, order_id, customer_id, status,"
            " trigger, policy, chain, payloads, vip, at, followup_due)"
            " SELECT n, o, c, s, t, p, string_to_array(ch, ','), pl::jsonb, v, a, f"
            " FROM unnest({}::text[], {}::text[], {}::text[], {}::text[], {}::text[],"
            " {}::text[], {}::text[], {}::text[], {}::boolean[], {}::timestamptz[],"
            " {}::timestamptz[]) AS u(n, o, c, s, t, p, ch, pl, v, a, f)"
            " ON CONFLICT DO NOTHING",
            *columns([(r.notification_id, r.order_id, r.customer_id, r.status, r.trigger,
                       r.policy, ",".join(r.chain), json.dumps(r.payloads, ensure_ascii=False),
                       r.vip, r.at, r.followup_due) for r in sent], 11))
        _deliveries_part(statement, [d for r in sent for d in r.deliveries])
    inbox = [(r.inbox[0], r.order_id, r.customer_id, r.status, r.inbox[1], r.inbox[2])
             for r in rows if r.inbox is not None]
    if inbox:
        statement.add(
            "INSERT INTO inbox (message_id, order_id, customer_id, status, title, body)"
            " SELECT * FROM unnest({}::text[], {}::text[], {}::text[], {}::text[], {}::text[],"
            " {}::text[]) ON CONFLICT DO NOTHING", *columns(inbox, 6))
    await statement.execute(con)


# --- the dispatcher ------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A delivery a dispatcher holds for one try (or one receipt check), with its
    notification's plan."""

    message_id: str
    notification_id: str
    order_id: str
    status: str
    channel: str
    recipient: str
    payload: dict[str, Any]
    state: str
    provider: str | None
    done: tuple[str, ...]
    attempts: int
    was_unknown: bool
    provider_message_id: str | None
    sent_at: datetime | None
    tried_at: datetime | None
    policy: str
    chain: tuple[str, ...]
    payloads: dict[str, Any]
    at: datetime


_CLAIM = """
WITH due AS (
    SELECT message_id, unknown FROM deliveries
    WHERE state IN ('pending', 'sent') AND due_at <= $1 AND NOT timed_out
      AND (lease_until IS NULL OR lease_until < $1)
    ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
UPDATE deliveries d SET lease_until = $1 + $3::interval,
    unknown = d.unknown OR d.state = 'pending',
    tried_at = CASE WHEN d.state = 'pending' AND NOT due.unknown THEN $1 ELSE d.tried_at END
FROM due JOIN notifications n ON true
WHERE d.message_id = due.message_id AND n.notification_id = d.notification_id
RETURNING d.message_id, d.notification_id, d.order_id, d.status, d.channel, d.recipient,
    d.payload, d.state, d.provider, d.done, d.attempts, due.unknown AS was_unknown,
    d.provider_message_id, d.sent_at, d.tried_at, n.policy, n.chain, n.payloads, n.at
"""


async def claim(con: asyncpg.Connection, now: datetime, limit: int, lease: timedelta
                ) -> list[Claimed]:
    """Take up to ``limit`` due deliveries for ``lease``: no other worker touches them until
    then. A pending one is marked unknown (and its try's time kept) until its answer is
    recorded: if this worker dies meanwhile, the next one knows the try's fate is unknown.
    Tries are counted when their answer is recorded."""
    rows = await con.fetch(_CLAIM, now, limit, lease)
    return [Claimed(
        message_id=r["message_id"], notification_id=r["notification_id"],
        order_id=r["order_id"], status=r["status"], channel=r["channel"],
        recipient=r["recipient"], payload=json.loads(r["payload"]), state=r["state"],
        provider=r["provider"], done=tuple(r["done"]), attempts=r["attempts"],
        was_unknown=r["was_unknown"], provider_message_id=r["provider_message_id"],
        sent_at=r["sent_at"], tried_at=r["tried_at"], policy=r["policy"],
        chain=tuple(r["chain"]),
        payloads=json.loads(r["payloads"]), at=r["at"]) for r in rows]


@dataclass(frozen=True)
class Update:
    """A delivery's new state after a try, a receipt or a timeout."""

    message_id: str
    state: str
    due_at: datetime | None
    provider: str | None
    done: tuple[str, ...]
    unknown: bool
    provider_message_id: str | None
    reason: str
    timed_out: bool
    sent_at: datetime | None
    final: bool
    attempts: int | None = None     # the tries made so far, when this update made one


@dataclass(frozen=True)
class AttemptRow:
    message_id: str
    attempt: int
    channel: str
    provider: str
    at: datetime
    accepted: bool
    code: str
    failure: str | None
    detail: str
    provider_message_id: str | None
    result: str


@dataclass
class Recorded:
    """Everything one dispatcher round writes, in one statement."""

    updates: list[Update]
    attempts: list[AttemptRow]
    results: list[tuple[str, str, str, datetime]]  # (provider, provider msg id, result, at)
    new: list[NewDelivery]
    reached: list[tuple[str, datetime]]             # (notification_id, at): see reach()
    receipts_applied: list[tuple[str, str]]          # (provider, provider msg id)


async def record(con: asyncpg.Connection, done: Recorded) -> None:
    statement = Statement()
    if done.updates:
        statement.add(
            "UPDATE deliveries d SET state = u.st, due_at = u.due, provider = u.pr,"
            " done = string_to_array(u.dn, ','), unknown = u.unk,"
            " provider_message_id = coalesce(u.pid, d.provider_message_id), reason = u.rs,"
            " timed_out = u.tmo, sent_at = coalesce(u.sent, d.sent_at), lease_until = NULL,"
            " final_at = CASE WHEN u.fin THEN now() ELSE d.final_at END,"
            " attempts = coalesce(u.n, d.attempts)"
            " FROM unnest({}::text[], {}::text[], {}::timestamptz[], {}::text[], {}::text[],"
            " {}::boolean[], {}::text[], {}::text[], {}::boolean[], {}::timestamptz[],"
            " {}::boolean[], {}::int[]) AS u(m, st, due, pr, dn, unk, pid, rs, tmo, sent, fin, n)"
            " WHERE d.message_id = u.m",
            *columns([(u.message_id, u.state, u.due_at, u.provider, ",".join(u.done),
                       u.unknown, u.provider_message_id, u.reason[:200], u.timed_out,
                       u.sent_at, u.final, u.attempts) for u in done.updates], 12))
    if done.attempts:
        statement.add(
            "INSERT INTO attempts (message_id, attempt, channel, provider, at, accepted, code,"
            " failure, detail, provider_message_id, result, result_at)"
            " SELECT m, n, c, p, a, ok, code, f, dt, pid, r,"
            " CASE WHEN r <> 'pending' THEN a END"
            " FROM unnest({}::text[], {}::int[], {}::text[], {}::text[], {}::timestamptz[],"
            " {}::boolean[], {}::text[], {}::text[], {}::text[], {}::text[], {}::text[])"
            " AS u(m, n, c, p, a, ok, code, f, dt, pid, r) ON CONFLICT DO NOTHING",
            *columns([(a.message_id, a.attempt, a.channel, a.provider, a.at, a.accepted,
                       a.code[:64], a.failure, a.detail[:500], a.provider_message_id,
                       a.result) for a in done.attempts], 11))
    if done.results:
        statement.add(
            "UPDATE attempts t SET result = u.r, result_at = u.a"
            " FROM unnest({}::text[], {}::text[], {}::text[], {}::timestamptz[])"
            " AS u(p, pid, r, a)"
            " WHERE t.provider = u.p AND t.provider_message_id = u.pid"
            " AND t.result <> 'delivered'",
            *columns(done.results, 4))
    if done.new:
        _deliveries_part(statement, done.new)
    if done.receipts_applied:
        statement.add(
            "UPDATE receipts r SET applied_at = now()"
            " FROM unnest({}::text[], {}::text[]) AS u(p, pid)"
            " WHERE r.provider = u.p AND r.provider_message_id = u.pid",
            *columns(done.receipts_applied, 2))
    await statement.execute(con)


async def reach(con: asyncpg.Connection, reached: Sequence[tuple[str, datetime]]
                ) -> list[asyncpg.Record]:
    """Mark notifications reached at their first confirmed delivery; returns the ones this
    call marked first (trigger, when the change happened, when it was reached)."""
    if not reached:
        return []
    return await con.fetch(
        "UPDATE notifications n SET reached_at = u.a FROM unnest($1::text[],"
        " $2::timestamptz[]) AS u(id, a) WHERE n.notification_id = u.id"
        " AND n.reached_at IS NULL RETURNING n.trigger, n.at, u.a AS reached_at",
        [r[0] for r in reached], [r[1] for r in reached])


# --- receipts ------------------------------------------------------------------------------


async def add_receipts(con: asyncpg.Connection | asyncpg.Pool,
                       rows: Sequence[tuple[str, str, str | None, bool, str, str, datetime]]
                       ) -> None:
    """Keep pushed receipts (provider, provider id, our id, delivered, code, detail, at);
    a receipt pushed again is kept once."""
    if rows:
        await con.execute(
            "INSERT INTO receipts (provider, provider_message_id, message_id, delivered, code,"
            " detail, at) SELECT * FROM unnest($1::text[], $2::text[], $3::text[],"
            " $4::boolean[], $5::text[], $6::text[], $7::timestamptz[]) ON CONFLICT DO NOTHING",
            *columns(rows, 7))


@dataclass(frozen=True)
class Matched:
    """An unapplied receipt and the delivery it belongs to."""

    provider: str
    provider_message_id: str
    delivered: bool
    code: str
    detail: str
    at: datetime
    message_id: str
    state: str
    timed_out: bool
    channel: str
    done: tuple[str, ...]
    notification_id: str
    order_id: str
    status: str
    recipient: str
    policy: str
    chain: tuple[str, ...]
    payloads: dict[str, Any]
    notified_at: datetime


_MATCHED = """
SELECT r.provider, r.provider_message_id, r.delivered, r.code, r.detail, r.at, r.received_at,
    d.message_id, d.state, d.timed_out, d.channel, d.done, d.notification_id, d.order_id,
    d.status, d.recipient, n.policy, n.chain, n.payloads, n.at AS n_at
FROM receipts r JOIN deliveries d ON {match}
JOIN notifications n ON n.notification_id = d.notification_id
WHERE r.applied_at IS NULL
"""


async def matched_receipts(con: asyncpg.Connection, limit: int) -> list[Matched]:
    """Receipts not applied yet whose delivery is known: by our id where the receipt carries
    it, else by the provider's id once the send's answer is recorded (two joins, each on an
    index). Applying one twice changes nothing, so two workers may both take it."""
    rows = await con.fetch(
        "SELECT * FROM (" + _MATCHED.format(match="d.message_id = r.message_id")
        + " UNION " + _MATCHED.format(
            match="d.provider = r.provider AND d.provider_message_id = r.provider_message_id")
        + ") AS m ORDER BY received_at LIMIT $1", limit)
    return [Matched(r["provider"], r["provider_message_id"], r["delivered"], r["code"],
                    r["detail"], r["at"], r["message_id"], r["state"], r["timed_out"],
                    r["channel"], tuple(r["done"]), r["notification_id"], r["order_id"],
                    r["status"], r["recipient"], r["policy"], tuple(r["chain"]),
                    json.loads(r["payloads"]), r["n_at"]) for r in rows]


# --- follow-ups, rates, retention ---------------------------------------------------------


async def claim_followups(con: asyncpg.Connection, now: datetime, limit: int
                          ) -> list[asyncpg.Record]:
    """VIP notifications that no channel reached by their deadline, each taken once."""
    return await con.fetch(
        "UPDATE notifications n SET followup_raised_at = $1 WHERE notification_id IN ("
        " SELECT notification_id FROM notifications WHERE followup_due <= $1"
        " AND reached_at IS NULL AND followup_raised_at IS NULL"
        " ORDER BY followup_due LIMIT $2 FOR UPDATE SKIP LOCKED)"
        " RETURNING notification_id, order_id, customer_id, status, trigger, chain, at",
        now, limit)


async def unraise_followups(con: asyncpg.Connection | asyncpg.Pool, ids: Sequence[str]
                            ) -> None:
    """Give follow-ups back when their alert could not be sent: the next round raises them."""
    await con.execute("UPDATE notifications SET followup_raised_at = NULL"
                      " WHERE notification_id = ANY($1::text[])", list(ids))


async def results_since(con: asyncpg.Connection | asyncpg.Pool, since: datetime
                        ) -> list[asyncpg.Record]:
    """Per channel and provider, tries since ``since`` that reached a result."""
    return await con.fetch(
        "SELECT channel, provider, count(*) FILTER (WHERE result = 'delivered') AS delivered,"
        " count(*) FILTER (WHERE result = 'failed') AS failed FROM attempts"
        " WHERE at >= $1 AND result <> 'pending' GROUP BY channel, provider", since)


async def pending_count(con: asyncpg.Connection | asyncpg.Pool) -> list[asyncpg.Record]:
    return await con.fetch(
        "SELECT channel, count(*) FILTER (WHERE attempts > 0) AS retrying, count(*) AS pending"
        " FROM deliveries WHERE state = 'pending' GROUP BY channel")


async def purge_projection(con: asyncpg.Connection | asyncpg.Pool, name: str,
                           before: datetime) -> int:
    """Forget orders (and waiting changes) not touched since ``before``: the projection's
    retention. Returns how many went."""
    done = await con.execute("DELETE FROM stream_state WHERE name = $1 AND updated_at < $2",
                             name, before)
    return int(done.split()[-1])


# --- the inbox API -------------------------------------------------------------------------


async def inbox(con: asyncpg.Connection | asyncpg.Pool, customer_id: str, limit: int,
                before: datetime | None) -> list[asyncpg.Record]:
    return await con.fetch(
        "SELECT message_id, order_id, status, title, body, created_at, read_at FROM inbox"
        " WHERE customer_id = $1 AND ($2::timestamptz IS NULL OR created_at < $2)"
        " ORDER BY created_at DESC, message_id LIMIT $3", customer_id, before, limit)


async def mark_read(con: asyncpg.Connection | asyncpg.Pool, customer_id: str,
                    message_id: str, at: datetime) -> asyncpg.Record | None:
    """Mark a message read (the first time counts); None when the customer has no such
    message."""
    return await con.fetchrow(
        "UPDATE inbox SET read_at = coalesce(read_at, $3)"
        " WHERE customer_id = $1 AND message_id = $2 RETURNING message_id, read_at",
        customer_id, message_id, at)
