"""The notifier from the outside, on every channel: a confirmation reaches the mailbox, an SMS
provider, WeChat and the inbox API; a shipping notice whose channels all refuse the customer
fails over from one to the next, and a VIP left unreached becomes a follow-up task.

The notifier runs as a real process; the SMS providers and WeChat are their simulators (as
processes, pushing receipts back), e-mail goes to a real local SMTP server (aiosmtpd)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from support import System, collect, eventually, produce, running_system

from services.stack import StackInfo, free_port
from shared import codec
from shared.events import (
    Customer,
    OrderLine,
    OrderStatus,
    OrderStatusChanged,
    OrderSubmitted,
)
from shared.topics import NOTIFICATIONS_OUTCOMES, OPS_ALERTS, ORDERS_STATUS, ORDERS_SUBMITTED

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]

BLOCKED_PHONE = "13900000099"
UNSUBSCRIBED = "oWxUnsubscribed0000000000001"
WECHAT = {"app-id": "wx-channels", "app-secret": "channels-secret", "token": "channels-token"}


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@dataclass(frozen=True)
class Channels:
    system: System
    sims: dict[str, str]
    mailbox: Mailbox

    @property
    def supervisor(self) -> Any:  # so a failure shows the worker's log (tests/conftest.py)
        return self.system.supervisor


def _simulator(argv: list[str], url: str) -> subprocess.Popen[str]:
    sim = subprocess.Popen([sys.executable, "-m", *argv], stdout=subprocess.DEVNULL,
                           stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/sim/stats", timeout=1):
                return sim
        except OSError:
            if time.monotonic() > deadline or sim.poll() is not None:
                raise RuntimeError(f"simulator {argv[0]} did not start") from None
            time.sleep(0.1)


@pytest.fixture(scope="module")
def channels(stack_info: StackInfo, broker,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Channels]:
    notifier = free_port()
    receipts = f"http://127.0.0.1:{notifier}/v1/receipts"
    ports = {name: free_port() for name in ("aliyun", "tencent", "wechat")}
    sims = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    running = [
        *(_simulator(["services.notifier.sms_sim", "--provider", provider, "--port",
                      str(ports[provider]), "--callback-url", f"{receipts}/{provider}",
                      "--blacklist", f"+86{BLOCKED_PHONE}", "--blacklist", BLOCKED_PHONE,
                      "--seed", "5"], sims[provider]) for provider in ("aliyun", "tencent")),
        _simulator(["services.notifier.wechat_sim", "--port", str(ports["wechat"]),
                    "--callback-url", f"{receipts}/wechat", "--unsubscribed", UNSUBSCRIBED,
                    *(f"--{k}={v}" for k, v in WECHAT.items())], sims["wechat"]),
    ]
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    env = {
        "ORDERSTREAM_NOTIFIER_SMTP_HOST": "127.0.0.1",
        "ORDERSTREAM_NOTIFIER_SMTP_PORT": str(smtp.port),
        "ORDERSTREAM_NOTIFIER_ALIYUN_SMS_URL": sims["aliyun"],
        "ORDERSTREAM_NOTIFIER_ALIYUN_ACCESS_KEY_ID": "sim-key-id",
        "ORDERSTREAM_NOTIFIER_ALIYUN_ACCESS_KEY_SECRET": "sim-secret",
        "ORDERSTREAM_NOTIFIER_TENCENT_SMS_URL": sims["tencent"],
        "ORDERSTREAM_NOTIFIER_TENCENT_SECRET_ID": "sim-key-id",
        "ORDERSTREAM_NOTIFIER_TENCENT_SECRET_KEY": "sim-secret",
        "ORDERSTREAM_NOTIFIER_TENCENT_SDK_APP_ID": "1400000001",
        "ORDERSTREAM_NOTIFIER_WECHAT_URL": sims["wechat"],
        "ORDERSTREAM_NOTIFIER_WECHAT_APP_ID": WECHAT["app-id"],
        "ORDERSTREAM_NOTIFIER_WECHAT_APP_SECRET": WECHAT["app-secret"],
        "ORDERSTREAM_NOTIFIER_WECHAT_TOKEN": WECHAT["token"],
        "ORDERSTREAM_NOTIFIER_VIP_DEADLINE_SECONDS": "2",
        # Tencent refuses a blocklisted number at send time; Aliyun takes it and reports
        # the failure later, so this test sends through Tencent alone
        "ORDERSTREAM_NOTIFIER_SMS_WEIGHTS": json.dumps({"aliyun": 0, "tencent": 1}),
        "ORDERSTREAM_NOTIFIER_RATE_CHECK_SECONDS": "1",
    }
    try:
        with running_system(stack_info, broker, tmp_path_factory.mktemp("notifier"),
                            extra_env=env, services=("notifier",),
                            ports={"notifier": notifier}) as system:
            yield Channels(system, sims, mailbox)
    finally:
        smtp.stop()
        for sim in running:
            sim.terminate()
            sim.wait(10)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def _post(url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def _order(system: System, n: int, *, phone: str | None, email: str | None,
                 openid: str | None, vip: bool = False) -> str:
    order_id = f"ord-ch-{n}"
    submitted = OrderSubmitted(
        event_id=f"sub-{order_id}", order_id=order_id, correlation_id=order_id, channel="web",
        channel_order_id=f"W-CH-{n}",
        customer=Customer(customer_id=f"c-ch-{n}", nickname="小王", phone=phone, email=email,
                          wechat_openid=openid, vip=vip),
        lines=(OrderLine(line=1, sku="TEA-LJ-250G", quantity=2, unit_price=Decimal("99")),),
        currency="CNY", total=Decimal("198"), paid=True, placed_at=datetime.now(UTC))
    await produce(system.conn, ORDERS_SUBMITTED, [(order_id, codec.encode(submitted))])
    return order_id


async def _change(system: System, order_id: str, n: int, to: OrderStatus) -> None:
    change = OrderStatusChanged(
        event_id=f"{to}-{order_id}", order_id=order_id, correlation_id=order_id,
        channel="web", channel_order_id=f"W-CH-{n}", customer_id=f"c-ch-{n}",
        from_status=None, to_status=to, at=datetime.now(UTC), cause_event_id="c",
        carrier="SF" if to == OrderStatus.PICKED_UP else None,
        tracking_number="SF1234567890" if to == OrderStatus.PICKED_UP else None)
    await produce(system.conn, ORDERS_STATUS, [(order_id, codec.encode(change))])


async def test_a_confirmation_reaches_mailbox_sms_wechat_and_the_inbox(channels) -> None:
    system, sims = channels.system, channels.sims
    order_id = await _order(system, 1, phone="13800138001", email="wang@example.com",
                            openid="oWxReachable0000000000000001")
    await _change(system, order_id, 1, OrderStatus.RESERVED)

    outcomes = await collect(system.conn, NOTIFICATIONS_OUTCOMES, lambda seen: {
        s["channel"] for s in seen if s["order_id"] == order_id
        and s["event_type"] == "NotificationDelivered"} == {"inapp", "email", "sms", "wechat"})
    assert all(s["recipient"] != "wang@example.com" for s in outcomes)  # masked

    mail = await eventually(_async(lambda: [m for m in channels.mailbox.messages
                                            if m["To"] == "wang@example.com"]))
    assert "W-CH-1" in mail[0].get_payload(decode=True).decode()
    texts = [m for p in ("aliyun", "tencent") for m in _get(f"{sims[p]}/sim/messages")
             if m["phone"] == "+8613800138001"]
    params = texts[0]["params"]  # Aliyun keeps them by name, Tencent in template order
    assert len(texts) == 1 and "W-CH-1" in (
        params.values() if isinstance(params, dict) else params)
    (wechat,) = [m for m in _get(f"{sims['wechat']}/sim/messages")
                 if m["openid"] == "oWxReachable0000000000000001"]
    assert "W-CH-1" in wechat["data"].values()

    metrics = f"http://127.0.0.1:{system.port('notifier')}/metrics"
    await eventually(_async(lambda: 'orderstream_notifier_reached_total{trigger="confirmation"}'
                            ' 1.0' in _text(metrics)))
    inbox = _get(f"http://127.0.0.1:{system.port('notifier')}/v1/customers/c-ch-1/inbox")
    (message,) = inbox["messages"]
    assert message["status"] == "RESERVED" and "W-CH-1" in message["body"]
    base = f"http://127.0.0.1:{system.port('notifier')}/v1/customers"
    assert _post(f"{base}/c-ch-1/inbox/{message['message_id']}/read")[0] == 200
    assert _get(f"{base}/c-ch-1/inbox")["messages"][0]["read_at"] is not None
    assert _post(f"{base}/someone-else/inbox/{message['message_id']}/read")[0] == 404

    # A replay of the order and its change sends nothing again. A later change of the same
    # order comes after the replay on the same partition: once it is told, the replay was
    # read too.
    await _order(system, 1, phone="13800138001", email="wang@example.com",
                 openid="oWxReachable0000000000000001")
    await _change(system, order_id, 1, OrderStatus.RESERVED)
    await _change(system, order_id, 1, OrderStatus.OUT_FOR_DELIVERY)
    await collect(system.conn, NOTIFICATIONS_OUTCOMES, lambda seen: any(
        s["order_id"] == order_id and s["status"] == "OUT_FOR_DELIVERY"
        and s["event_type"] == "NotificationDelivered" and s["channel"] == "wechat"
        for s in seen))
    assert len([m for p in ("aliyun", "tencent") for m in _get(f"{sims[p]}/sim/messages")
                if m["phone"] == "+8613800138001"]) == 1
    assert len([m for m in channels.mailbox.messages if m["To"] == "wang@example.com"]) == 1
    told = Counter(m["template_id"] for m in _get(f"{sims['wechat']}/sim/messages")
                   if m["openid"] == "oWxReachable0000000000000001")
    assert sorted(told.values()) == [1, 1]  # the confirmation once, then the new status


async def test_a_vip_no_channel_can_reach_gets_a_follow_up_after_every_failover(
        channels) -> None:
    system = channels.system
    order_id = await _order(system, 2, phone=BLOCKED_PHONE, email=None, openid=UNSUBSCRIBED,
                            vip=True)
    await _change(system, order_id, 2, OrderStatus.PICKED_UP)

    # WeChat refuses (43004, not subscribed), so SMS takes over and refuses too (blacklist)
    failed = await collect(system.conn, NOTIFICATIONS_OUTCOMES, lambda seen: {
        s["channel"] for s in seen if s["order_id"] == order_id
        and s["event_type"] == "NotificationFailed"} >= {"wechat", "sms"})
    reasons = {s["channel"]: s["reason"] for s in failed
               if s["order_id"] == order_id and s["event_type"] == "NotificationFailed"}
    assert reasons == {"wechat": "bad_recipient", "sms": "bad_recipient"}
    # and customer service is told to call the VIP
    alerts = await collect(system.conn, OPS_ALERTS, lambda seen: any(
        a["kind"] == "vip_followup" and a["details"].get("order_id") == order_id
        for a in seen))
    (alert,) = [a for a in alerts if a["kind"] == "vip_followup"
                and a["details"]["order_id"] == order_id]
    assert alert["details"]["status"] == "PICKED_UP"
    metrics = _text(f"http://127.0.0.1:{system.port('notifier')}/metrics")
    assert ('orderstream_notifier_failovers_total{from_channel="wechat",'
            'reason="bad_recipient",to_channel="sms"} 1.0') in metrics


def _async(check: Any) -> Any:
    async def run() -> Any:
        return check()
    return run

