"""The 12.12 incident, replayed: confirmations for ORDERS orders while SMS provider A throttles
everything for a window, WeChat fails 2% of messages and 5% of receipts are lost, with one of
the two notifier workers killed in the middle. Every customer must still hear (reach at
least 99.9%), nobody twice on one channel, and the SMS delivery-rate alert must fire during
the window and clear after it.

The notifier runs as two real worker processes on the session's broker and PostgreSQL; the
providers are the local simulators (Aliyun and Tencent SMS, WeChat), which push their
receipts back to the notifier's HTTP port. ``ORDERSTREAM_INCIDENT_ORDERS`` sets the size
(default 10,000, as the issue asks).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from support import System, collect, eventually, produce, running_system

from services.notifier.sms_sim import SmsSimulator
from services.notifier.wechat_sim import WeChatSimulator
from services.stack import StackInfo, free_port
from shared import codec
from shared.db import quote_ident
from shared.events import (
    Customer,
    OrderLine,
    OrderStatus,
    OrderStatusChanged,
    OrderSubmitted,
)
from shared.topics import NOTIFICATIONS_OUTCOMES, OPS_ALERTS, ORDERS_STATUS, ORDERS_SUBMITTED

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]

ORDERS = int(os.environ.get("ORDERSTREAM_INCIDENT_ORDERS", "10000"))
FEED_SECONDS = 40.0
THROTTLE = (0.2, 0.5)      # share of the feed during which provider A throttles everything
KILL_AT = 0.4              # share of the feed at which the second worker is killed
WECHAT = {"app_id": "wx-incident", "app_secret": "incident-secret", "token": "incident-token"}


@dataclass(frozen=True)
class Incident:
    system: System
    ports: dict[str, int]
    receipts: str

    @property
    def supervisor(self) -> Any:  # so a failure shows the workers' logs (tests/conftest.py)
        return self.system.supervisor


@pytest.fixture
def incident(stack_info: StackInfo, broker, tmp_path: Path) -> Iterator[Incident]:
    ports = {name: free_port() for name in ("notifier", "aliyun", "tencent", "wechat")}
    receipts = f"http://127.0.0.1:{ports['notifier']}/v1/receipts"
    env = {
        "ORDERSTREAM_NOTIFIER_ALIYUN_SMS_URL": f"http://127.0.0.1:{ports['aliyun']}",
        "ORDERSTREAM_NOTIFIER_ALIYUN_ACCESS_KEY_ID": "sim-key-id",
        "ORDERSTREAM_NOTIFIER_ALIYUN_ACCESS_KEY_SECRET": "sim-secret",
        "ORDERSTREAM_NOTIFIER_TENCENT_SMS_URL": f"http://127.0.0.1:{ports['tencent']}",
        "ORDERSTREAM_NOTIFIER_TENCENT_SECRET_ID": "sim-key-id",
        "ORDERSTREAM_NOTIFIER_TENCENT_SECRET_KEY": "sim-secret",
        "ORDERSTREAM_NOTIFIER_TENCENT_SDK_APP_ID": "1400000001",
        "ORDERSTREAM_NOTIFIER_WECHAT_URL": f"http://127.0.0.1:{ports['wechat']}",
        "ORDERSTREAM_NOTIFIER_WECHAT_APP_ID": WECHAT["app_id"],
        "ORDERSTREAM_NOTIFIER_WECHAT_APP_SECRET": WECHAT["app_secret"],
        "ORDERSTREAM_NOTIFIER_WECHAT_TOKEN": WECHAT["token"],
        # a short rolling window, so the alert can clear within the test
        "ORDERSTREAM_NOTIFIER_RATE_WINDOW_SECONDS": "6",
        "ORDERSTREAM_NOTIFIER_RATE_MIN_VOLUME": "20",
        "ORDERSTREAM_NOTIFIER_RATE_CHECK_SECONDS": "1",
        "ORDERSTREAM_NOTIFIER_THROTTLE_PAUSE_SECONDS": "1",
        "ORDERSTREAM_NOTIFIER_BREAKER_COOLDOWN_SECONDS": "3",
        "ORDERSTREAM_NOTIFIER_RECEIPT_TIMEOUT_SECONDS": json.dumps({"sms": 8, "wechat": 8}),
        "ORDERSTREAM_NOTIFIER_LEASE_SECONDS": "5",
        "ORDERSTREAM_NOTIFIER_BACKOFF_BASE_SECONDS": "0.5",
    }
    with running_system(stack_info, broker, tmp_path, extra_env=env, services=("notifier",),
                        ports={"notifier": ports["notifier"]},
                        extra_workers={"notifier": 1}) as system:
        yield Incident(system, ports, receipts)


def order_events(n: int, at: datetime) -> list[tuple[str, bytes, bytes]]:
    """(order_id, submitted, reserved) for order n: a paid web order whose customer has a
    mobile number and a WeChat openid (no e-mail: the incident is about SMS and WeChat)."""
    order_id = f"ord-{n:06d}"
    submitted = OrderSubmitted(
        event_id=f"sub-{order_id}", order_id=order_id, correlation_id=order_id,
        channel="web", channel_order_id=f"W-{n:06d}",
        customer=Customer(customer_id=f"c-{n:06d}", nickname="顾客", phone=f"139{n:08d}",
                          wechat_openid=f"oWx{n:025d}", vip=n % 100 == 0),
        lines=(OrderLine(line=1, sku="FRESH-MILK-1L", quantity=1, unit_price=Decimal("12")),),
        currency="CNY", total=Decimal("12"), paid=True, placed_at=at)
    reserved = OrderStatusChanged(
        event_id=f"res-{order_id}", order_id=order_id, correlation_id=order_id,
        channel="web", channel_order_id=f"W-{n:06d}", customer_id=f"c-{n:06d}",
        from_status=OrderStatus.SUBMITTED, to_status=OrderStatus.RESERVED, at=at,
        cause_event_id=f"sub-{order_id}")
    return [(order_id, codec.encode(submitted), codec.encode(reserved))]


async def set_faults(url: str, **faults: float) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/sim/faults", json=faults) as resp:
            assert resp.status == 200, await resp.text()


async def sent(url: str) -> list[dict]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/sim/messages") as resp:
            body = await resp.json()
    return body["messages"] if isinstance(body, dict) else body


async def test_the_12_12_incident_reaches_every_customer_once(incident) -> None:
    system, ports, receipts = incident.system, incident.ports, incident.receipts
    aliyun = SmsSimulator("aliyun", callback_url=f"{receipts}/aliyun", seed=1,
                          lose_receipt_rate=0.05)
    tencent = SmsSimulator("tencent", callback_url=f"{receipts}/tencent", seed=2,
                           lose_receipt_rate=0.05)
    wechat = WeChatSimulator(callback_url=f"{receipts}/wechat", seed=3, fail_rate=0.02,
                             lose_receipt_rate=0.05, **WECHAT)
    urls = {"aliyun": await aliyun.start("127.0.0.1", ports["aliyun"]),
            "tencent": await tencent.start("127.0.0.1", ports["tencent"]),
            "wechat": await wechat.start("127.0.0.1", ports["wechat"])}
    schema = quote_ident(system.conn.schema("notifier"))
    con = await asyncpg.connect(system.conn.database_url)
    try:
        # When ORDERS confirmations flow for FEED_SECONDS, provider A throttling in a window
        # and a worker dying on the way
        started = time.monotonic()
        chunks = 40
        step = max(1, ORDERS // chunks)
        throttling = killed = False
        for i in range(0, ORDERS, step):
            at = datetime.now(UTC)  # each change happens as it is sent
            part = [e for n in range(i, min(i + step, ORDERS)) for e in order_events(n, at)]
            await produce(system.conn, ORDERS_SUBMITTED, [(o, s) for o, s, _ in part])
            await produce(system.conn, ORDERS_STATUS, [(o, r) for o, _, r in part])
            done = (i + step) / ORDERS
            if not throttling and done >= THROTTLE[0]:
                await set_faults(urls["aliyun"], throttle_rate=1.0)
                throttling, throttled_at = True, time.monotonic()
            if throttling and done >= THROTTLE[1] and time.monotonic() - throttled_at > 5:
                await set_faults(urls["aliyun"], throttle_rate=0.0)
                throttling = False
            if not killed and done >= KILL_AT:
                system.supervisor.kill("notifier-2")
                killed = True
            await asyncio.sleep(max(0.0, started + FEED_SECONDS * done - time.monotonic()))
        if throttling:
            await set_faults(urls["aliyun"], throttle_rate=0.0)
        fed = time.monotonic() - started

        # Then every message settles
        async def unsettled() -> int:
            return await con.fetchval(
                f"SELECT count(*) FROM {schema}.deliveries WHERE state = 'pending'"
                " OR (state = 'sent' AND NOT timed_out)")

        async def all_settled() -> bool:
            planned = await con.fetchval(f"SELECT count(*) FROM {schema}.notifications")
            return planned >= ORDERS and not await unsettled()

        await eventually(all_settled, timeout=240)
        settled = time.monotonic() - started

        # and reach is at least 99.9%
        reach = await con.fetchrow(
            f"SELECT count(*) FILTER (WHERE reached_at IS NOT NULL) AS reached,"
            f" count(*) AS total, percentile_cont(0.99) WITHIN GROUP"
            f" (ORDER BY extract(epoch FROM reached_at - at)) AS p99"
            f" FROM {schema}.notifications")
        rates = await con.fetch(
            f"SELECT channel, provider, count(*) FILTER (WHERE result = 'delivered') AS ok,"
            f" count(*) AS n FROM {schema}.attempts GROUP BY channel, provider ORDER BY 1, 2")
    finally:
        await con.close()
    assert reach["total"] == ORDERS
    assert reach["reached"] / ORDERS >= 0.999, dict(reach)

    # and nobody got two messages on one channel for the confirmation
    sms = [*(await sent(urls["aliyun"])), *(await sent(urls["tencent"]))]
    per_phone = Counter(m["phone"] for m in sms)
    assert per_phone and max(per_phone.values()) == 1, per_phone.most_common(3)
    per_openid = Counter(m["openid"] for m in await sent(urls["wechat"]))
    assert per_openid and max(per_openid.values()) == 1, per_openid.most_common(3)
    outcomes = await collect(system.conn, NOTIFICATIONS_OUTCOMES, lambda seen: len(
        {s["order_id"] for s in seen if s["event_type"] == "NotificationDelivered"})
        >= reach["reached"], timeout=120)
    delivered: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for o in outcomes:
        if o["event_type"] == "NotificationDelivered":
            delivered[(o["order_id"], o["status"], o["channel"])].add(o["event_id"])
    assert all(len(ids) == 1 for ids in delivered.values())

    # and the SMS delivery-rate alert for provider A fired in the window, then cleared
    alerts = await collect(system.conn, OPS_ALERTS, lambda seen: [
        a["details"].get("state") for a in seen
        if a["alert_key"] == "delivery_rate:sms:aliyun"][-1:] == ["resolved"], timeout=90)
    states = [a["details"]["state"] for a in alerts
              if a["alert_key"] == "delivery_rate:sms:aliyun"]
    assert states[:1] == ["firing"] and states[-1] == "resolved", states
    for sim in (aliyun, tencent, wechat):
        await sim.stop()
    print(f"\n{ORDERS} confirmations fed in {fed:.1f}s, settled in {settled:.1f}s: reach "
          f"{reach['reached'] / ORDERS:.4%}, p99 to first delivery {reach['p99']:.2f}s; "
          + ", ".join(f"{r['channel']}/{r['provider']} {r['ok']}/{r['n']}" for r in rates)
          + f"; alert states {states}")
