"""2,000 shipped orders against a misbehaving carrier: the simulator drops 30% of its
callbacks and times out 10% of tracking queries, and 5% of the parcels go silent after
pickup. Polling must fill every gap: each delivered order reaches DELIVERED on
orders.status within two poll intervals of its last scan, and stale-order alerts fire
exactly for the parcels the simulator froze (once each), reaching operators by e-mail.

The polling interval and the deadlines are shortened for the test (6 s and 25 s instead of
10 minutes and 48 hours); everything else is the real service, broker and database.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from email import message_from_bytes
from email.message import Message

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from aiosmtpd.controller import Controller
from support import given_stock, produce, running_system

from services.stack import free_port
from shared.codec import encode
from shared.db import quote_ident
from shared.events import Channel, Customer, OrderLine, OrderSubmitted, PickedUp
from shared.timeutil import utc_now
from shared.topics import FULFILMENT_EVENTS, OPS_ALERTS, ORDERS_STATUS, ORDERS_SUBMITTED

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]

ORDERS = 2000
FROZEN_EVERY = 20  # every 20th parcel goes silent after pickup: 100 parcels
POLL = 6.0  # seconds without news before the carrier is asked
STALE = 25.0  # "no scan in 48 h", shortened
SPREAD = 100.0  # pickups are spread over this many seconds (20 parcels a second)
SCAN_GAPS = (3.0, 6.0, 9.0, 12.0)  # after pickup: in transit, in transit, out, delivered
SKU = "SKU-PARCEL"
SALT, CUSTOMER, KEY = "test-salt", "test-customer", "test-key"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture(scope="module")
def carrier():
    port = free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "services.status.carrier_sim", "--port", str(port),
         "--salt", SALT, "--customer", CUSTOMER, "--key", KEY, "--seed", "7",
         "--drop-callbacks", "0.3", "--query-timeouts", "0.1", "--timeout-hang", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/sim/stats", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or sim.poll() is not None:
                    raise RuntimeError("the carrier simulator did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        sim.terminate()
        sim.wait(10)


@pytest.fixture(scope="module")
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def system(stack_info, broker, tmp_path_factory, carrier, smtp):
    controller, _ = smtp
    env = {
        "ORDERSTREAM_STATUS_KUAIDI100_URL": carrier,
        "ORDERSTREAM_STATUS_KUAIDI100_CUSTOMER": CUSTOMER,
        "ORDERSTREAM_STATUS_KUAIDI100_KEY": KEY,
        "ORDERSTREAM_STATUS_KUAIDI100_SALT": SALT,
        "ORDERSTREAM_STATUS_POLL_INTERVAL": str(POLL),
        "ORDERSTREAM_STATUS_ALLOW_SHORT_POLL": "true",
        "ORDERSTREAM_STATUS_POLL_TICK_SECONDS": "0.5",
        "ORDERSTREAM_STATUS_POLL_TIMEOUT_SECONDS": "0.5",
        "ORDERSTREAM_STATUS_POLL_CONCURRENCY": "50",
        "ORDERSTREAM_STATUS_DEFAULT_CARRIER_RATE": "500",
        "ORDERSTREAM_STATUS_STALE_AFTER": json.dumps(
            {"PICKED_UP": STALE, "IN_TRANSIT": STALE, "OUT_FOR_DELIVERY": STALE}),
        "ORDERSTREAM_STATUS_STALE_CHECK_SECONDS": "1",
        "ORDERSTREAM_STATUS_STALE_REPEAT": "3600",
        "ORDERSTREAM_STATUS_NOTICE_EMAIL_TO": json.dumps(["ops@example.com"]),
        "ORDERSTREAM_STATUS_SMTP_HOST": controller.hostname,
        "ORDERSTREAM_STATUS_SMTP_PORT": str(controller.port),
    }
    with running_system(stack_info, broker, tmp_path_factory.mktemp("carriers"), env,
                        services=("status", "inventory")) as running:
        yield running


def order(order_id: str) -> OrderSubmitted:
    return OrderSubmitted(
        order_id=order_id, correlation_id=order_id, channel=Channel.TMALL,
        channel_order_id=f"T-{order_id}", customer=Customer(customer_id=f"c-{order_id}"),
        lines=(OrderLine(line=1, sku=SKU, quantity=1, unit_price=Decimal("59.00")),),
        currency="CNY", total=Decimal("59.00"), paid=True, placed_at=utc_now(),
    )


async def read_topic(conn, topic: str, done, timeout: float) -> list[tuple[dict, float]]:
    """(value, Kafka timestamp in seconds) of every record, until ``done(values)``."""
    consumer = AIOKafkaConsumer(conn.topic(topic), bootstrap_servers=conn.bootstrap_list,
                                group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    seen: list[tuple[dict, float]] = []
    deadline = time.monotonic() + timeout
    try:
        while not done([v for v, _ in seen]):
            if time.monotonic() > deadline:
                return seen
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                seen.extend((json.loads(m.value), m.timestamp / 1000) for m in messages)
        return seen
    finally:
        await consumer.stop()


def post_json(url: str, body) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def test_polling_fills_the_gaps_and_stale_alerts_name_exactly_the_frozen_parcels(
    system, carrier, smtp
):
    _, inbox = smtp
    run = uuid.uuid4().hex[:6]
    ids = [f"P{run}-{n:05d}" for n in range(ORDERS)]
    frozen = {oid for n, oid in enumerate(ids) if n % FROZEN_EVERY == 0}
    await given_stock(system.conn, SKU, ORDERS)
    await produce(system.conn, ORDERS_SUBMITTED, [(oid, encode(order(oid))) for oid in ids])

    def all_paid(values):
        return len({v["order_id"] for v in values if v["to_status"] == "PAID"} & set(ids)) \
            == ORDERS

    await read_topic(system.conn, ORDERS_STATUS, all_paid, timeout=240)

    # The warehouse hands each parcel to SF at its time and says so (tracking number); the
    # carrier scans it at pickup, then in transit, out for delivery and delivered.
    status_url = f"http://127.0.0.1:{system.port('status')}"
    start = time.time() + 2
    shipments, handovers, last_scan = [], [], {}
    for n, oid in enumerate(ids):
        at = start + SPREAD * n / ORDERS
        number = f"SF{run.upper()}{n:06d}"
        stages = ["PICKED_UP", "IN_TRANSIT", "IN_TRANSIT", "OUT_FOR_DELIVERY", "DELIVERED"]
        times = [at, *(at + gap for gap in SCAN_GAPS)]
        shipments.append({
            "carrier": "SF", "tracking_number": number,
            "callback_url": f"{status_url}/v1/fulfilment/kuaidi100?order_id={oid}",
            "scans": [{"stage": s, "after": t - time.time(), "location": f"hub-{i}",
                       "description": f"{s.lower()} scan"}
                      for i, (s, t) in enumerate(zip(stages, times, strict=True))],
            **({"freeze_after": "PICKED_UP"} if oid in frozen else {}),
        })
        last_scan[oid] = int(times[-1])  # the provider reports whole seconds
        handovers.append((oid, PickedUp(
            order_id=oid, correlation_id=oid, source="wms", carrier="SF",
            tracking_number=number,
            scanned_at=datetime.fromtimestamp(at, UTC))))
    await asyncio.to_thread(post_json, f"{carrier}/sim/shipments", shipments)
    await produce(system.conn, FULFILMENT_EVENTS, [(oid, encode(e)) for oid, e in handovers])

    moving = set(ids) - frozen

    def delivered_and_alerted(values):
        return moving <= {v["order_id"] for v in values if v["to_status"] == "DELIVERED"}

    budget = SPREAD + max(SCAN_GAPS) + 4 * POLL + 120
    changes = await read_topic(system.conn, ORDERS_STATUS, delivered_and_alerted, budget)
    # Frozen parcels go stale STALE s after pickup; give the monitor a few checks after it.
    await asyncio.sleep(max(0.0, start + SPREAD + STALE + 5 - time.time()))
    alerts = await read_topic(system.conn, OPS_ALERTS, lambda v: False, timeout=3)

    delivered = {v["order_id"]: (v, ts) for v, ts in changes
                 if v["to_status"] == "DELIVERED" and v["order_id"] in moving}
    lags = {oid: ts - last_scan[oid] for oid, (_, ts) in delivered.items()}
    stale = [v for v, _ in alerts if v["kind"] == "stale_order"
             and v["details"]["order_id"] in set(ids)]
    stale_ids = {a["details"]["order_id"] for a in stale}
    final = {}
    for v, _ in changes:
        if v["order_id"] in frozen:
            final[v["order_id"]] = v["to_status"]

    schema = quote_ident(system.conn.schema("status"))
    con = await asyncpg.connect(system.conn.database_url)
    try:
        via = dict(await con.fetch(
            f"SELECT via, count(*) FROM {schema}.carrier_events"
            " WHERE event_type = 'Delivered' AND order_id = ANY($1::text[]) GROUP BY via",
            list(moving)))
        missing = sorted(moving - set(delivered))
        for oid in missing[:5]:  # what the service knew of a parcel that never arrived
            row = await con.fetchrow(f"SELECT * FROM {schema}.orders WHERE order_id = $1", oid)
            seen = await con.fetch(f"SELECT event_type, via, scanned_at, received_at FROM"
                                   f" {schema}.carrier_events WHERE order_id = $1"
                                   " ORDER BY received_at", oid)
            print(f"\nnot delivered: {oid}: {dict(row) if row else None}\n  "
                  + "\n  ".join(str(dict(r)) for r in seen))
    finally:
        await con.close()
    sim = await asyncio.to_thread(get_json, f"{carrier}/sim/stats")
    values = list(lags.values())
    print(f"\n{ORDERS} parcels ({len(frozen)} frozen), callbacks dropped "
          f"{sim['callbacks_dropped']}/{sim['callbacks_dropped'] + sim['callbacks_sent']}, "
          f"queries {sim['queries']} ({sim['query_timeouts']} timed out); "
          f"delivered {len(delivered)}/{len(moving)}, DELIVERED learnt by callback "
          f"{via.get('callback', 0)}, by poll {via.get('poll', 0)}; "
          f"scan→orders.status lag median {statistics.median(values):.2f}s, "
          f"p99 {percentile(values, 0.99):.2f}s, max {max(values):.2f}s "
          f"(limit {2 * POLL:.0f}s); stale alerts {len(stale)} for {len(stale_ids)} orders")

    assert set(delivered) == moving
    assert max(values) <= 2 * POLL + 1.0  # +1: scan times arrive truncated to the second
    assert set(final.values()) == {"PICKED_UP"}  # frozen parcels never moved on
    assert stale_ids == frozen
    assert len({a["event_id"] for a in stale}) == len(frozen)  # once each
    assert via.get("poll", 0) > 0 and via.get("callback", 0) > 0

    # The operators got the digest by e-mail, naming frozen parcels.
    mailed = " ".join(str(m.get_payload()) for m in inbox.messages)
    assert inbox.messages and any(oid in mailed for oid in frozen)
