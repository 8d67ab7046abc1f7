"""The I/O side of reconciliation and the health score: read the ledger and ``stock.levels``,
write the CSV report, send alerts, and the ``orderstream reconcile`` / ``health-score`` glue.

The rules live in ``reconcile.py`` and ``health.py`` (pure); this module only gathers their
inputs and delivers their outputs. The ledger is read through the inventory schema
(``conn.schema("inventory")``); the table's state is the latest ``StockLevel`` per SKU on the
compacted ``stock.levels`` topic, read from the beginning to its end.

Run it while traffic is quiet (nightly): the table and the ledger are read one after the
other, so a change applied between the two reads shows up as a difference.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer

from services.inventory import health
from services.inventory.reconcile import Report, WmsCsvError, parse_wms_csv, report_csv
from services.inventory.reconcile import reconcile as compare
from shared.codec import InvalidRecord, decode, encode
from shared.db import Database
from shared.events import Alert, Severity, StockLevel, derive_id
from shared.kafka_admin import partitions_of, read_to_end
from shared.settings import ConnectionSettings
from shared.timeutil import to_utc, utc_now
from shared.topics import OPS_ALERTS, STOCK_LEVELS

log = logging.getLogger(__name__)

Levels = dict[str, tuple[int, int]]

# A sale: a shipped order line, or a store sale (POS) taking units off the shelf.
_SALE = "(kind = 'commit' OR (kind = 'adjust' AND reason = 'pos_sale'))"

_HEALTH_SQL = f"""
SELECT sku,
       sum(on_hand_delta) AS on_hand,
       coalesce(sum(on_hand_delta) FILTER (WHERE occurred_at < $2::timestamptz), 0) AS opening,
       coalesce(sum(on_hand_delta * extract(epoch FROM $1::timestamptz - occurred_at))
                FILTER (WHERE occurred_at >= $2), 0) AS weighted,
       coalesce(sum(-on_hand_delta) FILTER (WHERE occurred_at >= $2 AND {_SALE}), 0)
           AS units_sold,
       max(occurred_at) FILTER (WHERE {_SALE} AND on_hand_delta < 0) AS last_sale_at,
       min(occurred_at) AS first_seen_at,
       count(*) FILTER (WHERE occurred_at >= $2 AND kind IN ('reserve', 'reject'))
           AS reservation_lines,
       count(*) FILTER (WHERE occurred_at >= $2 AND kind = 'reject') AS rejected_lines,
       (array_agg(on_hand_delta ORDER BY occurred_at DESC, recorded_at DESC, movement_id DESC)
            FILTER (WHERE kind = 'adjust' AND reason = 'stocktake'))[1] AS last_stocktake_delta
FROM ledger
WHERE occurred_at <= $1::timestamptz
GROUP BY sku
"""


# --- reads ------------------------------------------------------------------------------


async def load_ledger_totals(pool: asyncpg.Pool) -> Levels:
    """``{sku: (on_hand, reserved)}`` summed over the whole ledger."""
    async with pool.acquire() as con:
        rows = await con.fetch(
            "SELECT sku, sum(on_hand_delta) AS on_hand, sum(reserved_delta) AS reserved"
            " FROM ledger GROUP BY sku"
        )
    return {r["sku"]: (int(r["on_hand"]), int(r["reserved"])) for r in rows}


async def load_health_inputs(pool: asyncpg.Pool, now: datetime,
                             days: int = 90) -> list[health.SkuActivity]:
    """Per-SKU ledger aggregates as of ``now`` (rows after it are ignored) over the ``days``
    before it. The average on_hand is time-weighted: the on_hand at the period's start plus
    each movement in the period weighted by the share of the period it has been in effect."""
    now = to_utc(now)
    start = now - timedelta(days=days)
    seconds = days * 86400
    async with pool.acquire() as con:
        rows = await con.fetch(_HEALTH_SQL, now, start)
    return [
        health.SkuActivity(
            sku=r["sku"],
            on_hand=int(r["on_hand"]),
            avg_on_hand=int(r["opening"]) + float(r["weighted"]) / seconds,
            units_sold=int(r["units_sold"]),
            last_sale_at=r["last_sale_at"],
            first_seen_at=r["first_seen_at"],
            reservation_lines=int(r["reservation_lines"]),
            rejected_lines=int(r["rejected_lines"]),
            last_stocktake_delta=r["last_stocktake_delta"],
        )
        for r in rows
    ]


async def load_table_levels(conn: ConnectionSettings, *, timeout: float = 60.0) -> Levels:
    """``{sku: (on_hand, reserved)}``: the latest ``StockLevel`` per SKU on ``stock.levels``
    (a tombstone removes its key; an undecodable record is logged and skipped), read to its
    end (``shared.kafka_admin.read_to_end``)."""
    levels: Levels = {}
    partitions = await partitions_of(conn, conn.topic(STOCK_LEVELS))
    await read_to_end(conn, partitions, lambda m: _apply_level(
        levels, m.key, m.value, m.partition, m.offset), timeout=timeout)
    return levels


def _apply_level(levels: Levels, key: bytes | None, value: bytes | None,
                 partition: int, offset: int) -> None:
    if value is None:
        if key is not None:
            levels.pop(key.decode(), None)
        return
    try:
        level = decode(STOCK_LEVELS, value)
    except InvalidRecord as exc:
        log.warning("event=stock_level_skipped partition=%s offset=%s reason=%s",
                    partition, offset, exc.reason)
        return
    assert isinstance(level, StockLevel)
    levels[level.sku] = (level.on_hand, level.reserved)


# --- reconciliation ----------------------------------------------------------------------


def mismatch_alerts(report: Report, checked_at: datetime) -> list[Alert]:
    """One warning per difference, keyed ``stock_mismatch:{sku}:{what}``."""
    return [
        Alert(
            event_id=derive_id("stock_mismatch", checked_at.isoformat(), d.sku, d.what),
            occurred_at=checked_at,
            alert_key=f"stock_mismatch:{d.sku}:{d.what}",
            kind="stock_mismatch",
            severity=Severity.WARNING,
            subject=f"{d.sku}: {d.what} expected {d.expected}, actual {d.actual}",
            details={"sku": d.sku, "what": d.what, "expected": d.expected,
                     "actual": d.actual, "delta": d.delta},
        )
        for d in report.differences
    ]


async def send_alerts(conn: ConnectionSettings, alerts: Sequence[Alert]) -> None:
    """Produce ``alerts`` on ``ops.alerts`` (key = alert key) and wait for every ack."""
    if not alerts:
        return
    producer = AIOKafkaProducer(bootstrap_servers=conn.bootstrap_list, acks="all")
    await producer.start()
    try:
        sent = [await producer.send(conn.topic(OPS_ALERTS), key=a.alert_key.encode(),
                                    value=encode(a)) for a in alerts]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def reconcile(conn: ConnectionSettings, wms_csv: Path | None, out: Path) -> Report:
    """Compare table, ledger and (when given) the WMS snapshot; write the CSV report to
    ``out``, send one alert per difference, and return the report."""
    checked_at = utc_now()
    wms = None
    if wms_csv is not None:
        wms = parse_wms_csv(await asyncio.to_thread(wms_csv.read_text, encoding="utf-8"))
    table = await load_table_levels(conn)
    db = Database(conn.database_url, conn.schema("inventory"), max_size=1)
    try:
        ledger = await load_ledger_totals(await db.pool())
    finally:
        await db.close()
    report = compare(table, ledger, wms)
    await asyncio.to_thread(_write, out, report_csv(report))
    await send_alerts(conn, mismatch_alerts(report, checked_at))
    log.info("event=reconciled skus=%s differences=%s out=%s",
             report.skus_checked, len(report.differences), out)
    return report


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# --- health score ------------------------------------------------------------------------


async def health_score(conn: ConnectionSettings, now: datetime,
                       days: int = 90) -> tuple[list[health.Health], health.Health]:
    """Per-SKU health (sorted by SKU) and overall, from the ledger as of ``now``."""
    db = Database(conn.database_url, conn.schema("inventory"), max_size=1)
    try:
        activities = await load_health_inputs(await db.pool(), now, days)
    finally:
        await db.close()
    return health.score(activities, to_utc(now), days)


def _cell(c: health.Component, overall: bool) -> str:
    if c.value is None:
        return "n/a"
    if c.rule is health.TURNOVER:
        return "no sales" if math.isinf(c.value) else f"{c.value:.1f}"
    if overall or c.rule is health.STOCKOUT:
        return f"{100 * c.value:.1f}%"
    if c.rule is health.SLOW:
        return "yes" if c.value else "no"
    return "match" if c.value else "off"  # accuracy of one SKU: its last stocktake


def format_table(per_sku: Sequence[health.Health], overall: health.Health) -> str:
    """A plain-text table: one line per SKU, then the overall line and the scoring key."""
    header = ("sku", "score", "turnover d", "slow", "stock-out", "accuracy")
    rows = [header]
    for h in (*per_sku, overall):
        score = "n/a" if h.score is None else f"{h.score:.1f}"
        rows.append((h.subject, score,
                     *(_cell(c, h is overall) for c in h.components)))
    width = max(len(r[0]) for r in rows)
    lines = [f"{r[0]:<{width}}  " + "  ".join(f"{cell:>10}" for cell in r[1:]) for r in rows]
    lines.insert(-1, "-" * len(lines[0]))
    lines.append("score 0-100: turnover 30% (full marks < 45 d), slow-moving 25% (< 5%), "
                 "stock-out 25% (< 1%),")
    lines.append("accuracy 20% (> 98%); linear to zero at 3x the threshold; n/a: no data, its "
                 "weight shared by the rest")
    return "\n".join(lines)


# --- command line glue (called by services/cli.py) ----------------------------------------


def reconcile_command(wms: str | None, out: str) -> int:
    """``orderstream reconcile``: 0 all agree, 1 differences found (alerted), 2 bad input."""
    conn = ConnectionSettings()
    try:
        report = asyncio.run(reconcile(conn, Path(wms) if wms else None, Path(out)))
    except (OSError, WmsCsvError) as exc:
        print(f"orderstream reconcile: {exc}", file=sys.stderr)
        return 2
    views = "table, ledger and WMS" if report.wms_compared else "table and ledger"
    print(f"reconciled {report.skus_checked} SKUs ({views}): {len(report.differences)} "
          f"difference(s) in {report.skus_with_differences} SKU(s); report {out}")
    for what, n in report.counts.items():
        if n:
            print(f"  {what:<26}{n}")
    return 0 if report.ok else 1


def health_command(days: int, at: str | None) -> int:
    """``orderstream health-score``: print the per-SKU and overall table."""
    if days < 1:
        print("orderstream health-score: --days must be at least 1", file=sys.stderr)
        return 2
    try:
        now = to_utc(datetime.fromisoformat(at)) if at else utc_now()
    except ValueError as exc:
        print(f"orderstream health-score: --at {at!r}: {exc} (ISO time with offset, e.g. "
              "2026-01-20T00:00:00+08:00)", file=sys.stderr)
        return 2
    per_sku, overall = asyncio.run(health_score(ConnectionSettings(), now, days))
    print(f"inventory health over the {days} days to {now.isoformat()}")
    print(format_table(per_sku, overall))
    return 0
