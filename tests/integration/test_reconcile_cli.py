"""Nightly reconciliation and the health score on a real broker and PostgreSQL.

Each test gets its own topic prefix and inventory schema; the ledger is seeded with SQL and
the table's state with ``StockLevel`` records produced straight onto ``stock.levels``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from support import produce

from services.inventory import report
from services.inventory.health import SkuActivity
from shared.codec import encode
from shared.db import Database
from shared.events import StockLevel
from shared.kafka_admin import ensure_topics, partitions_of
from shared.migrations import migrate
from shared.settings import ConnectionSettings
from shared.topics import OPS_ALERTS, STOCK_LEVELS

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

MIGRATIONS = Path(__file__).parents[2] / "services" / "inventory" / "migrations"
NOW = datetime(2026, 4, 1, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
async def conn(stack_info, broker) -> AsyncIterator[ConnectionSettings]:
    conn = ConnectionSettings(
        kafka_bootstrap_servers=stack_info.kafka_bootstrap_servers,
        database_url=stack_info.database_url,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        topic_partitions=4,
        topic_replication=broker.replication,
    )
    await ensure_topics(conn)
    await migrate(conn.database_url, conn.schema("inventory"), MIGRATIONS)
    yield conn


async def seed_ledger(conn: ConnectionSettings, rows: list[tuple]) -> None:
    """Rows of (sku, kind, on_hand_delta, reserved_delta, reason, occurred_at[, order_id])."""
    db = Database(conn.database_url, conn.schema("inventory"), max_size=1)
    try:
        async with (await db.pool()).acquire() as con:
            await con.executemany(
                "INSERT INTO ledger (movement_id, sku, kind, on_hand_delta, reserved_delta,"
                " order_id, line, reason, source, occurred_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'test', $9)",
                [(f"m-{n}", sku, kind, on_hand, reserved, order[0] if order else None,
                  1 if order else None, reason, at)
                 for n, (sku, kind, on_hand, reserved, reason, at, *order) in enumerate(rows)],
            )
    finally:
        await db.close()


def level(sku: str, on_hand: int, reserved: int) -> tuple[str, bytes]:
    return sku, encode(StockLevel(sku=sku, on_hand=on_hand, reserved=reserved,
                                  available=on_hand - reserved, safety_stock=0,
                                  sellable=on_hand > reserved))


async def read_all(conn: ConnectionSettings, topic: str) -> list[tuple[str | None, Any]]:
    """(key, JSON value) of every record on ``topic`` now: past its end offsets until a fetch
    brings nothing (the embedded broker's end offsets stop short inside a record batch)."""
    name = conn.topic(topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=conn.bootstrap_list, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await partitions_of(conn, name)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        seen = []
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            for messages in batch.values():
                seen.extend((m.key.decode() if m.key else None, json.loads(m.value))
                            for m in messages)
            if not batch and all([await consumer.position(tp) >= end[tp] for tp in partitions]):
                return seen
    finally:
        await consumer.stop()


# --- reconcile ---------------------------------------------------------------------------------


async def test_reconcile_reports_writes_csv_and_alerts_once_per_difference(conn, tmp_path):
    at = NOW - DAY
    await seed_ledger(conn, [
        ("OK-1", "adjust", 20, 0, "restock", at),
        ("OK-1", "reserve", 0, 2, "order", at, "o-1"),
        ("DRIFT", "adjust", 10, 0, "restock", at),          # table says 8
        ("RES", "adjust", 5, 0, "restock", at),
        ("RES", "reserve", 0, 1, "order", at, "o-2"),         # table says 3 reserved
        ("GHOST", "adjust", 4, 0, "restock", at),           # no table record
        ("COUNT", "adjust", 12, 0, "restock", at),          # the WMS counted 11
        ("COUNT", "adjust", 0, 0, "stocktake", at),
        ("UNLISTED", "adjust", 6, 0, "restock", at),        # the WMS does not list it
        ("UNKNOWN", "reject", 0, 0, "unknown_sku", at, "o-3"),  # zero everywhere: fine
    ])
    await produce(conn, STOCK_LEVELS, [
        level("OK-1", 1, 0),  # superseded by the next record for the key
        level("OK-1", 20, 2),
        level("DRIFT", 8, 0),
        level("RES", 5, 3),
        level("ORPHAN", 3, 0),  # no ledger rows
        level("COUNT", 12, 0),
        level("UNLISTED", 6, 0),
        level("GONE", 9, 0),
        ("GONE", None),  # tombstone: no longer in the table
        ("JUNK", b"not json"),  # undecodable: skipped
    ])
    wms = tmp_path / "wms.csv"
    wms.write_text("\ufeffsku,on_hand\r\nOK-1,20\r\nDRIFT,8\r\nRES,5\r\nORPHAN,3\r\n"
                   "COUNT, 11\r\nNEWBIE,0\r\n", encoding="utf-8")
    out = tmp_path / "reports" / "reconcile.csv"

    result = await report.reconcile(conn, wms, out)

    expected = [
        ("COUNT", "table_vs_wms", 12, 11, -1),
        ("DRIFT", "table_vs_ledger_on_hand", 10, 8, -2),
        ("GHOST", "missing_in_table", 4, 0, -4),
        ("ORPHAN", "missing_in_ledger", 0, 3, 3),
        ("RES", "table_vs_ledger_reserved", 1, 3, 2),
        ("UNLISTED", "missing_in_wms", 6, 0, -6),
    ]
    assert [(d.sku, d.what, d.expected, d.actual, d.delta)
            for d in result.differences] == expected
    assert result.skus_checked == 9 and result.wms_compared  # GONE and JUNK are not
    assert result.skus_with_differences == 6
    assert out.read_text(encoding="utf-8") == "sku,what,expected,actual,delta\n" + "".join(
        f"{sku},{what},{e},{a},{d}\n" for sku, what, e, a, d in expected)

    alerts = await read_all(conn, OPS_ALERTS)
    assert sorted(key for key, _ in alerts) == sorted(
        f"stock_mismatch:{sku}:{what}" for sku, what, *_ in expected)
    by_key = {key: value for key, value in alerts}
    assert len(by_key) == len(alerts) == len(expected)
    for sku, what, e, a, d in expected:
        alert = by_key[f"stock_mismatch:{sku}:{what}"]
        assert alert["event_type"] == "Alert" and alert["kind"] == "stock_mismatch"
        assert alert["severity"] == "warning"
        assert alert["alert_key"] == f"stock_mismatch:{sku}:{what}"
        assert alert["details"] == {"sku": sku, "what": what, "expected": e, "actual": a,
                                    "delta": d}
        assert sku in alert["subject"]


async def test_reconcile_of_agreeing_views_writes_only_the_header_and_no_alert(conn, tmp_path):
    await seed_ledger(conn, [("A", "adjust", 3, 0, "restock", NOW),
                             ("A", "reserve", 0, 1, "order", NOW, "o-1")])
    await produce(conn, STOCK_LEVELS, [level("A", 3, 1)])
    out = tmp_path / "clean.csv"
    result = await report.reconcile(conn, None, out)
    assert result.ok and not result.wms_compared and result.skus_checked == 1
    assert out.read_text(encoding="utf-8") == "sku,what,expected,actual,delta\n"
    assert await read_all(conn, OPS_ALERTS) == []


async def test_reconcile_refuses_a_bad_wms_file_before_alerting(conn, tmp_path):
    wms = tmp_path / "wms.csv"
    wms.write_text("sku,on_hand\nA,1\nB,minus one\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 3"):
        await report.reconcile(conn, wms, tmp_path / "never.csv")
    assert not (tmp_path / "never.csv").exists()
    assert await read_all(conn, OPS_ALERTS) == []


async def test_the_command_line_glue(conn, tmp_path, monkeypatch, capsys):
    """What ``orderstream reconcile`` and ``orderstream health-score`` run: settings from the
    environment, exit status 0 clean / 1 differences / 2 bad input."""
    for name, value in {"KAFKA_BOOTSTRAP_SERVERS": conn.kafka_bootstrap_servers,
                        "DATABASE_URL": conn.database_url,
                        "ORDERSTREAM_TOPIC_PREFIX": conn.topic_prefix}.items():
        monkeypatch.setenv(name, value)
    await seed_ledger(conn, [("A", "adjust", 3, 0, "restock", NOW - DAY)])
    await produce(conn, STOCK_LEVELS, [level("A", 2, 0)])
    wms = tmp_path / "wms.csv"
    wms.write_text("sku,on_hand\nA,2\n", encoding="utf-8")
    out = tmp_path / "out.csv"

    assert await asyncio.to_thread(report.reconcile_command, str(wms), str(out)) == 1
    printed = capsys.readouterr().out
    assert "reconciled 1 SKUs (table, ledger and WMS): 1 difference(s) in 1 SKU(s)" in printed
    assert "table_vs_ledger_on_hand" in printed
    assert out.read_text(encoding="utf-8").splitlines()[1] == "A,table_vs_ledger_on_hand,3,2,-1"

    wms.write_text("sku,count\n", encoding="utf-8")
    assert await asyncio.to_thread(report.reconcile_command, str(wms), str(out)) == 2
    assert "line 1: header must be 'sku,on_hand'" in capsys.readouterr().err
    missing = str(tmp_path / "absent.csv")
    assert await asyncio.to_thread(report.reconcile_command, missing, str(out)) == 2
    assert "absent.csv" in capsys.readouterr().err

    at = NOW.isoformat()
    assert await asyncio.to_thread(report.health_command, 30, at) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"inventory health over the 30 days to {at}"
    # 3 on hand, no sale: turnover 0 of 30; new, so not slow: 25 of 25; no order, no count
    assert lines[2].split() == ["A", f"{100 * 0.25 / 0.55:.1f}", "no", "sales", "no", "n/a",
                                "n/a"]
    assert await asyncio.to_thread(report.health_command, 30, "2026-04-01T00:00") == 2
    assert "--at" in capsys.readouterr().err
    assert await asyncio.to_thread(report.health_command, 0, None) == 2


# --- health score ------------------------------------------------------------------------------


async def test_health_score_from_the_seeded_ledger(conn):
    await seed_ledger(conn, [
        # FAST: 70 on hand before the period; 30 shipped, 15 sold in store; 1 of 3 lines refused
        ("FAST", "adjust", 70, 0, "restock", NOW - 120 * DAY),
        ("FAST", "reserve", 0, 30, "order", NOW - 61 * DAY, "o-1"),
        ("FAST", "commit", -30, -30, "shipped", NOW - 60 * DAY, "o-1"),
        ("FAST", "adjust", -15, 0, "pos_sale", NOW - 30 * DAY),
        ("FAST", "reject", 0, 0, "insufficient_stock", NOW - 10 * DAY, "o-3"),
        ("FAST", "adjust", 0, 0, "stocktake", NOW - 5 * DAY),
        ("FAST", "reserve", 0, 5, "order", NOW - 2 * DAY, "o-2"),
        ("FAST", "commit", -5, -5, "shipped", NOW + DAY, "o-2"),  # after `now`: ignored
        # IDLE: 8 on hand, never sold; its last stocktake found 2 missing
        ("IDLE", "adjust", 10, 0, "restock", NOW - 200 * DAY),
        ("IDLE", "adjust", 0, 0, "stocktake", NOW - 150 * DAY),
        ("IDLE", "adjust", -2, 0, "stocktake", NOW - 100 * DAY),
        # NEW: stocked 10 days ago, one reservation, never counted
        ("NEW", "adjust", 10, 0, "restock", NOW - 10 * DAY),
        ("NEW", "reserve", 0, 2, "order", NOW - DAY, "o-4"),
        # REJONLY: an unknown SKU somebody ordered
        ("REJONLY", "reject", 0, 0, "unknown_sku", NOW - 3 * DAY, "o-5"),
    ])
    db = Database(conn.database_url, conn.schema("inventory"), max_size=1)
    try:
        inputs = {a.sku: a for a in await report.load_health_inputs(await db.pool(), NOW, 90)}
    finally:
        await db.close()
    assert inputs["FAST"] == SkuActivity(
        sku="FAST", on_hand=25, avg_on_hand=pytest.approx(70 - 30 * 60 / 90 - 15 * 30 / 90),
        units_sold=45, last_sale_at=NOW - 30 * DAY, first_seen_at=NOW - 120 * DAY,
        reservation_lines=3, rejected_lines=1, last_stocktake_delta=0,
    )
    assert inputs["IDLE"] == SkuActivity(
        sku="IDLE", on_hand=8, avg_on_hand=8.0, units_sold=0, last_sale_at=None,
        first_seen_at=NOW - 200 * DAY, last_stocktake_delta=-2,
    )
    assert inputs["NEW"].avg_on_hand == pytest.approx(10 * 10 / 90)
    assert (inputs["NEW"].reservation_lines, inputs["NEW"].last_stocktake_delta) == (1, None)
    assert (inputs["REJONLY"].on_hand, inputs["REJONLY"].rejected_lines) == (0, 1)

    per_sku, overall = await report.health_score(conn, NOW)
    scores = {h.subject: h for h in per_sku}
    assert list(scores) == ["FAST", "IDLE", "NEW", "REJONLY"]

    fast = scores["FAST"]
    assert fast.component("turnover").value == pytest.approx(90.0)  # 45 avg / 0.5 a day
    assert [c.marks for c in fast.components] == pytest.approx([0.5, 1.0, 0.0, 1.0])
    assert fast.score == pytest.approx(15 + 25 + 0 + 20)

    idle = scores["IDLE"]
    assert [c.marks for c in idle.components] == [0.0, 0.0, None, 0.0]
    assert idle.score == 0.0

    new = scores["NEW"]
    assert [c.marks for c in new.components] == [0.0, 1.0, 1.0, None]
    assert new.score == pytest.approx(100 * (0.25 + 0.25) / 0.80)  # 62.5

    rejonly = scores["REJONLY"]
    assert [c.marks for c in rejonly.components] == [None, None, 0.0, None]
    assert rejonly.score == 0.0

    days = (45 + 8 + 10 * 10 / 90) / (45 / 90)  # pooled: 108.2 days
    assert overall.component("turnover").value == pytest.approx(days)
    assert overall.component("slow").value == pytest.approx(1 / 3)  # IDLE of 3 stocked
    assert overall.component("stockout").value == pytest.approx(2 / 5)
    assert overall.component("accuracy").value == pytest.approx(1 / 2)  # FAST of 2 counted
    assert overall.score == pytest.approx(30 * (135 - days) / 90)

    table = report.format_table(per_sku, overall)
    lines = table.splitlines()
    assert lines[0].split() == ["sku", "score", "turnover", "d", "slow", "stock-out",
                                "accuracy"]
    assert lines[1].split() == ["FAST", "60.0", "90.0", "no", "33.3%", "match"]
    assert lines[2].split() == ["IDLE", "0.0", "no", "sales", "yes", "n/a", "off"]
    assert lines[3].split() == ["NEW", "62.5", "no", "sales", "no", "0.0%", "n/a"]
    assert lines[4].split() == ["REJONLY", "0.0", "n/a", "n/a", "100.0%", "n/a"]
    assert lines[6].split() == ["overall", f"{overall.score:.1f}", f"{days:.1f}", "33.3%",
                                "40.0%", "50.0%"]
