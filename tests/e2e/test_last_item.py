"""The failure the inventory exists to prevent: the last unit sold twice across channels."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
from support import collect, eventually, given_stock, produce, running_system, settled

from services.ingestion.channels import ADAPTERS
from services.ingestion.settings import IngestionSettings
from shared.db import quote_ident
from shared.topics import ORDERS_RAW, ORDERS_STATUS, STOCK_LEVELS

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]

SAMPLES = Path(__file__).parents[1] / "samples"
#: a single-line, quantity-one order of each of five channels
ONE_UNIT = {"tmall": "unpaid", "jd": "paid", "pinduoduo": "paid_group_forming",
            "douyin": "paid", "shopify": "paid"}
ZONES = IngestionSettings().channel_zones


def order_for(channel: str, sku: str, n: int) -> tuple[str, str, bytes]:
    """(channel order id, key, body): the channel's sample, for ``sku``, as order ``n``."""
    text = (SAMPLES / channel / f"{ONE_UNIT[channel]}.json").read_text()
    adapter = ADAPTERS[channel]
    sample = adapter.normalise(json.loads(text), zone=ZONES[channel])
    old_id, (line,) = adapter.order_id_of(json.loads(text)), sample.lines
    new_id = old_id[:-6] + f"{n:06d}" if old_id.isdigit() else f"{old_id}{n}"
    for old, new in ((old_id, new_id), (line.sku, sku)):
        text = re.sub(rf'(?<![\w.-]){re.escape(old)}(?![\w.-])', new, text)
    order = adapter.normalise(json.loads(text), zone=ZONES[channel])
    assert (order.channel_order_id, order.lines[0].sku, order.lines[0].quantity) == (
        new_id, sku, 1)
    return new_id, f"{channel}:{new_id}", text.encode()


@pytest.fixture(scope="module")
def two_inventory_workers(stack_info, broker, tmp_path_factory):
    with running_system(stack_info, broker, tmp_path_factory.mktemp("last-item"),
                        extra_workers={"inventory": 1}) as system:
        yield system


async def test_last_unit_goes_to_exactly_one_of_fifty_orders_from_five_channels(
    two_inventory_workers,
):
    system = two_inventory_workers
    sku = f"LAST-{uuid.uuid4().hex[:8]}"
    await given_stock(system.conn, sku, 1)
    orders = [order_for(channel, sku, n) for n in range(10) for channel in ONE_UNIT]

    # Given 1 unit, when 50 orders arrive at once from five channels (one producer each)
    await asyncio.gather(*(
        produce(system.conn, ORDERS_RAW, [(key, body) for _, key, body in orders
                                          if key.startswith(f"{channel}:")],
                [("channel", channel.encode())])
        for channel in ONE_UNIT))

    ids = {order_id for order_id, _, _ in orders}

    def all_decided(seen: list[dict]) -> bool:
        return ids <= {s["channel_order_id"] for s in seen
                       if s["to_status"] in ("RESERVED", "REJECTED")}

    changes = await collect(system.conn, ORDERS_STATUS, all_decided, timeout=120)
    # (a paid channel's winner goes on to PAID at once: only the saga's outcome counts here)
    final = Counter(s["to_status"] for s in {s["event_id"]: s for s in changes}.values()
                    if s["channel_order_id"] in ids and s["to_status"] in ("RESERVED",
                                                                           "REJECTED"))
    # Then exactly one is reserved and 49 are rejected
    assert final == {"RESERVED": 1, "REJECTED": 49}

    levels = [s for s in await collect(system.conn, STOCK_LEVELS, lambda seen: any(
        s["sku"] == sku and s["reserved"] == 1 for s in seen)) if s["sku"] == sku]
    assert all(s["available"] >= 0 and s["reserved"] <= s["on_hand"] for s in levels)
    con = await asyncpg.connect(system.conn.database_url)
    ledger = f"{quote_ident(system.conn.schema('inventory'))}.ledger"
    try:
        reserved, refused = await settled(lambda: con.fetchrow(
            f"SELECT coalesce(sum(reserved_delta), 0),"
            f" count(*) FILTER (WHERE kind = 'reject') FROM {ledger} WHERE sku = $1", sku),
            lambda row: row[0] + row[1] >= 50)
    finally:
        await con.close()
    assert (reserved, refused) == (1, 49)
    workers = [c.name for c in system.supervisor.children if c.service == "inventory"]
    assert workers == ["inventory", "inventory-2"]


async def test_every_inventory_worker_answers_stock_for_any_sku(two_inventory_workers):
    system = two_inventory_workers
    sku = f"ANY-{uuid.uuid4().hex[:8]}"
    await given_stock(system.conn, sku, 3)
    ports = [c.port for c in system.supervisor.children if c.service == "inventory"]

    async def level_everywhere():
        answers = [await asyncio.to_thread(_get, f"http://127.0.0.1:{p}/v1/stock/{sku}")
                   for p in ports]
        return answers if all(code == 200 for code, _ in answers) else None

    answers = await eventually(level_everywhere)
    assert [(body["on_hand"], body["available"], body["sellable"]) for _, body in answers] == [
        (3, 3, True), (3, 3, True)]
    code, body = _get(f"http://127.0.0.1:{ports[0]}/v1/stock/NO-SUCH-SKU")
    assert (code, body["error"]) == (404, "unknown_sku")


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
