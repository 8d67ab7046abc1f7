"""The walking skeleton from the outside: raw order in, status, inbox and metrics out."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import urllib.request
import uuid
from pathlib import Path

import asyncpg
import pytest
from support import collect, eventually, given_stock, produce, settled

from shared.db import quote_ident
from shared.topics import (
    NOTIFICATIONS_OUTCOMES,
    ORDERS_DLQ,
    ORDERS_RAW,
    ORDERS_STATUS,
    ORDERS_SUBMITTED,
)

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]

WEB = [("channel", b"web")]


def web_order(order_id: str, sku: str, quantity: int = 1, placed_at: str = "2026-11-24T10:15:00"):
    return json.dumps({
        "order_id": order_id,
        "placed_at": placed_at,
        "currency": "CNY",
        "customer": {"id": f"c-{order_id}", "nickname": "小王"},
        "lines": [{"sku": sku, "quantity": quantity, "unit_price": "39.90"}],
    }).encode()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def status_changes(system, channel_order_id: str, final: set[str]) -> list[dict]:
    def done(seen: list[dict]) -> bool:
        return any(s["channel_order_id"] == channel_order_id and s["to_status"] in final
                   for s in seen)

    seen = await collect(system.conn, ORDERS_STATUS, done, timeout=60)
    return [s for s in seen if s["channel_order_id"] == channel_order_id]


async def test_web_order_is_reserved_and_the_customer_gets_an_in_app_message(system):
    sku, order = unique("SKU"), unique("W")
    # Given stock for the SKU
    await given_stock(system.conn, sku, 5)
    # When the web shop submits an order with a naive local time (read in Asia/Shanghai)
    await produce(system.conn, ORDERS_RAW, [(f"web:{order}", web_order(order, sku, 2))], WEB)
    # Then the status stream shows SUBMITTED then RESERVED, once each
    changes = await status_changes(system, order, {"RESERVED"})
    assert [(c["from_status"], c["to_status"]) for c in changes] == [
        (None, "SUBMITTED"), ("SUBMITTED", "RESERVED")]
    order_id = changes[-1]["order_id"]

    con = await asyncpg.connect(system.conn.database_url)
    try:
        async def inbox_row():
            return await con.fetchrow(
                f"SELECT * FROM {quote_ident(system.conn.schema('notifier'))}.inbox"
                " WHERE order_id = $1", order_id)

        message = await eventually(inbox_row)
        assert message["status"] == "RESERVED" and order in message["body"]
        placed_at = await con.fetchval(
            f"SELECT placed_at FROM {quote_ident(system.conn.schema('ingestion'))}.orders"
            " WHERE order_id = $1", order_id)
        assert placed_at.isoformat() == "2026-11-24T02:15:00+00:00"  # 10:15 in Shanghai
        history = await con.fetch(
            f"SELECT to_status FROM {quote_ident(system.conn.schema('status'))}.status_history"
            " WHERE order_id = $1 ORDER BY at, to_status DESC", order_id)
        assert [r["to_status"] for r in history] == ["SUBMITTED", "RESERVED"]
        ledger = await settled(lambda: con.fetchval(
            f"SELECT coalesce(sum(reserved_delta), 0) FROM"
            f" {quote_ident(system.conn.schema('inventory'))}.ledger WHERE sku = $1", sku),
            lambda units: units >= 2)
        assert ledger == 2
    finally:
        await con.close()

    outcomes = await collect(system.conn, NOTIFICATIONS_OUTCOMES,
                             lambda seen: any(o["order_id"] == order_id for o in seen))
    assert {o["channel"] for o in outcomes if o["order_id"] == order_id} == {"inapp"}


async def test_last_unit_goes_to_one_order_and_the_other_is_rejected(system):
    sku, first, second = unique("SKU"), unique("W"), unique("W")
    await given_stock(system.conn, sku, 1)
    await produce(system.conn, ORDERS_RAW, [(f"web:{first}", web_order(first, sku)),
                                            (f"web:{second}", web_order(second, sku))], WEB)
    a = await status_changes(system, first, {"RESERVED", "REJECTED"})
    b = await status_changes(system, second, {"RESERVED", "REJECTED"})
    finals = sorted([a[-1]["to_status"], b[-1]["to_status"]])
    assert finals == ["REJECTED", "RESERVED"]
    rejected = a[-1] if a[-1]["to_status"] == "REJECTED" else b[-1]
    assert sku in rejected["detail"]


async def test_a_resent_order_is_submitted_once(system):
    sku, order = unique("SKU"), unique("W")
    await given_stock(system.conn, sku, 10)
    record = (f"web:{order}", web_order(order, sku))
    await produce(system.conn, ORDERS_RAW, [record, record, record], WEB)
    await status_changes(system, order, {"RESERVED"})
    submitted = await collect(system.conn, ORDERS_SUBMITTED,
                              lambda seen: any(s["channel_order_id"] == order for s in seen))
    assert sum(1 for s in submitted if s["channel_order_id"] == order) == 1


async def test_bad_records_go_to_the_dead_letter_topic_and_the_next_order_still_flows(system):
    sku, good = unique("SKU"), unique("W")
    bad_json, bad_qty = b"{not json", web_order(unique("W"), sku, quantity=0)
    await given_stock(system.conn, sku, 3)
    await produce(system.conn, ORDERS_RAW, [
        ("web:broken-1", bad_json),
        ("web:broken-2", bad_qty),
        (f"web:{good}", web_order(good, sku)),
    ], WEB)
    changes = await status_changes(system, good, {"RESERVED"})
    assert changes[-1]["to_status"] == "RESERVED"

    def both_rejected(seen: list[dict]) -> bool:
        return {"web:broken-1", "web:broken-2"} <= {_key(r) for r in seen}

    dead = {_key(r): r for r in await collect(system.conn, ORDERS_DLQ, both_rejected)}
    assert dead["web:broken-1"]["reason"] == "invalid_json"
    assert base64.b64decode(dead["web:broken-1"]["original_value"]) == bad_json
    assert dead["web:broken-2"]["reason"] == "invalid_event"
    assert base64.b64decode(dead["web:broken-2"]["original_value"]) == bad_qty
    assert any("quantity" in e["loc"] for e in dead["web:broken-2"]["field_errors"])
    assert dead["web:broken-2"]["source_topic"] == system.conn.topic(ORDERS_RAW)


def _key(rejected: dict) -> str | None:
    key = rejected.get("original_key")
    return base64.b64decode(key).decode() if key else None


def test_every_service_serves_its_stream_metrics(system):
    for service in ("ingestion", "inventory", "status", "notifier"):
        url = f"http://127.0.0.1:{system.port(service)}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
            assert response.headers["Content-Type"].startswith("text/plain")
        for name in ("orderstream_events_in_total", "orderstream_events_out_total",
                     "orderstream_events_failed_total", "orderstream_processing_seconds"):
            assert f"# TYPE {name.removesuffix('_total')}" in text, (service, name)


KAFKA_CONSOLE = Path(__file__).parents[2] / "deploy" / "kafka-tools" / "kafka-console"


@pytest.mark.skipif(not (shutil.which("java") and shutil.which("mvn")),
                    reason="Apache Kafka's console tools need Java 17 and Maven")
async def test_an_order_from_a_non_python_client_is_reserved(system):
    """Kafka's own Java console producer, as the README shows: key, header, JSON line."""
    sku, order = unique("SKU"), unique("W")
    await given_stock(system.conn, sku, 1)
    line = f"channel:web\tweb:{order}\t{web_order(order, sku).decode()}\n"
    produced = await asyncio.create_subprocess_exec(
        str(KAFKA_CONSOLE), "produce", system.conn.topic(ORDERS_RAW), "--headers",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": system.conn.kafka_bootstrap_servers},
    )
    output, _ = await asyncio.wait_for(produced.communicate(line.encode()), timeout=300)
    assert produced.returncode == 0, output.decode()
    changes = await status_changes(system, order, {"RESERVED"})
    assert changes[-1]["to_status"] == "RESERVED"
