"""Seeded multi-channel orders for the flow benchmark, in each channel's own payload shape.

``generate(count, seed)`` draws the orders (channel, 1-3 lines, SKUs with Zipf popularity
over ``SKUS`` SKUs, quantities, prices, customer, paid or not) with ``random.Random(seed)``:
the same seed gives the same orders. ``encode(order, placed)`` renders one as the raw bytes
its channel sends, with the order placed at ``placed`` (epoch seconds) written in the
channel's own time convention, so it is never stale when it arrives. The shapes follow the
samples in ``tests/samples/<channel>/`` and what each adapter in
``services/ingestion/channels/`` reads (``check`` runs them through the adapters).

Paid versus unpaid, per channel: Tmall ``WAIT_SELLER_SEND_GOODS`` / ``WAIT_BUYER_PAY``; JD
paid online with ``paymentConfirmTime`` / cash on delivery (``1-货到付款``, not yet paid);
Pinduoduo ``confirm_status`` 1 with ``pay_time`` / 0 without (group not formed, unpaid);
Douyin ``order_status`` 2 (备货中) / 1 (待支付); Shopify ``financial_status`` ``paid`` /
``pending``; web ``paid`` true / false. A POS receipt is always a paid sale, so the other
channels carry the whole unpaid share.
"""

from __future__ import annotations

import bisect
import itertools
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from shared.events import derive_id

SKUS = 10_000
ZIPF_S = 1.1
UNPAID_SHARE = 0.20
#: channel -> share of the orders (POS is always paid)
CHANNEL_MIX = {"tmall": 0.25, "jd": 0.15, "pinduoduo": 0.15, "douyin": 0.15,
               "shopify": 0.10, "web": 0.10, "pos": 0.10}
CUSTOMERS = 50_000
SHANGHAI = ZoneInfo("Asia/Shanghai")


def sku_name(rank: int) -> str:
    """The SKU of popularity rank ``rank`` (1 = the most popular)."""
    return f"SKU-{rank:05d}"


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    cents: int  # unit price in the currency's minor unit


@dataclass(frozen=True)
class Order:
    seq: int
    channel: str
    channel_order_id: str
    lines: tuple[Line, ...]
    paid: bool
    customer: int

    @property
    def key(self) -> str:
        """The orders.raw key (``channel:channel_order_id``)."""
        return f"{self.channel}:{self.channel_order_id}"

    @property
    def order_id(self) -> str:
        """orderstream's order id for it (``services.ingestion.domain.order_id_for``)."""
        return derive_id("order", self.channel, self.channel_order_id)

    @property
    def total_cents(self) -> int:
        return sum(ln.cents * ln.quantity for ln in self.lines)


def _channel_order_id(channel: str, seq: int) -> str:
    return {
        "tmall": str(3827400000000000000 + seq),
        "jd": str(312800000000 + seq),
        "pinduoduo": f"260120-{seq:015d}",
        "douyin": str(6929500000000000000 + seq),
        "shopify": str(5981000000000 + seq),
        "web": f"W-{seq:09d}",
        "pos": f"SH0012-{seq:09d}",
    }[channel]


def generate(count: int, seed: int, *, skus: int = SKUS, start: int = 0) -> list[Order]:
    """``count`` orders, deterministic for ``seed``; sequence numbers from ``start``."""
    rng = random.Random(seed)
    cumulative = list(itertools.accumulate(k ** -ZIPF_S for k in range(1, skus + 1)))
    total = cumulative[-1]
    prices = [rng.randrange(390, 59_900, 10) for _ in range(skus)]  # cents, per SKU rank
    channels, weights = list(CHANNEL_MIX), list(CHANNEL_MIX.values())
    # POS is always paid, so the other channels are unpaid a little more often.
    unpaid_other = UNPAID_SHARE / (1 - CHANNEL_MIX["pos"])
    orders = []
    for seq in range(start, start + count):
        channel = rng.choices(channels, weights)[0]
        ranks: list[int] = []
        for _ in range(rng.choice((1, 1, 2, 2, 3))):  # 1-3 lines, distinct SKUs
            while (rank := bisect.bisect_left(cumulative, rng.random() * total) + 1) in ranks:
                pass
            ranks.append(min(rank, skus))
        lines = tuple(Line(sku_name(r), rng.choices((1, 2, 3), (80, 15, 5))[0], prices[r - 1])
                      for r in ranks)
        paid = channel == "pos" or rng.random() >= unpaid_other
        orders.append(Order(seq, channel, _channel_order_id(channel, seq), lines, paid,
                            rng.randrange(CUSTOMERS)))
    return orders


# --- rendering: one function per channel -------------------------------------------------


def _yuan(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _naive_shanghai(placed: float) -> str:
    return datetime.fromtimestamp(placed, SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def _tmall(o: Order, placed: float) -> dict:
    at = _naive_shanghai(placed)
    trade = {
        "tid": int(o.channel_order_id), "tid_str": o.channel_order_id,
        "status": "WAIT_SELLER_SEND_GOODS" if o.paid else "WAIT_BUYER_PAY", "type": "fixed",
        "created": at, "modified": at, "payment": _yuan(o.total_cents),
        "total_fee": _yuan(o.total_cents), "buyer_open_uid": f"AAH{o.customer:021d}",
        "buyer_nick": "l***y", "receiver_mobile": "139****0021", "seller_nick": "旗舰店",
        "orders": {"order": [
            {"oid": int(o.channel_order_id) * 10 + i, "num": ln.quantity,
             "price": _yuan(ln.cents), "title": ln.sku, "sku_id": str(5123409876000 + i),
             "outer_sku_id": ln.sku, "status": "WAIT_SELLER_SEND_GOODS"}
            for i, ln in enumerate(o.lines, start=1)]},
    }
    if o.paid:
        trade["pay_time"] = at
    return {"trade_fullinfo_get_response": {"request_id": "16lbv0pk3x8qw", "trade": trade}}


def _jd(o: Order, placed: float) -> dict:
    at = _naive_shanghai(placed)
    info = {
        "venderId": "10622317", "orderId": o.channel_order_id,
        "orderState": "WAIT_SELLER_STOCK_OUT", "orderStateRemark": "等待出库",
        "payType": "4-在线支付" if o.paid else "1-货到付款", "orderStartTime": at,
        "paymentConfirmTime": at if o.paid else "0001-01-01 00:00:00", "modified": at,
        "orderTotalPrice": _yuan(o.total_cents), "orderPayment": _yuan(o.total_cents),
        "pin": f"jd_{o.customer:012x}", "open_id_buyer": f"o1Jd{o.customer:023d}",
        "consigneeInfo": {"province": "北京", "city": "北京市", "mobile": "136*******5"},
        "itemInfoList": [
            {"skuId": str(100012043000 + i), "outerSkuId": ln.sku, "skuName": ln.sku,
             "jdPrice": _yuan(ln.cents), "itemTotal": str(ln.quantity)}
            for i, ln in enumerate(o.lines, start=1)],
    }
    return {"jingdong_pop_order_get_responce": {"code": "0", "orderDetailInfo": {
        "apiResult": {"success": True}, "orderInfo": info}}}


def _pinduoduo(o: Order, placed: float) -> dict:
    at = _naive_shanghai(placed)
    info = {
        "order_sn": o.channel_order_id, "order_status": 1,
        "confirm_status": 1 if o.paid else 0, "refund_status": 1,
        "created_time": at, "pay_time": at if o.paid else "", "updated_at": at,
        "pay_amount": o.total_cents / 100, "open_address_id": f"~AgAAAA{o.customer:020d}~0~",
        "receiver_phone_mask": "*******5921", "group_status": 1 if o.paid else 0,
        "item_list": [
            {"goods_count": ln.quantity, "goods_id": str(513872093000 + i),
             "goods_name": ln.sku, "goods_price": ln.cents / 100, "outer_id": ln.sku,
             "sku_id": str(1258439920000 + i)}
            for i, ln in enumerate(o.lines, start=1)],
    }
    return {"order_info_get_response": {"order_info": info}}


def _douyin(o: Order, placed: float) -> dict:
    at = int(placed)
    detail = {
        "shop_id": 4463798, "order_id": o.channel_order_id,
        "order_status": 2 if o.paid else 1, "order_status_desc": "备货中" if o.paid else "待支付",
        "pay_type": 1, "create_time": at, "pay_time": at if o.paid else 0, "update_time": at,
        "order_amount": o.total_cents, "pay_amount": o.total_cents,
        "doudian_open_id": f"1@#AOfC{o.customer:020d}=", "open_id": "",
        "mask_post_tel": "1********35",
        "sku_order_list": [
            {"order_id": f"{o.channel_order_id}{i}", "parent_order_id": o.channel_order_id,
             "sku_id": 1765432109876000 + i, "code": ln.sku, "out_sku_id": 0,
             "product_name": ln.sku, "item_num": ln.quantity, "origin_amount": ln.cents,
             "sum_amount": ln.cents * ln.quantity}
            for i, ln in enumerate(o.lines, start=1)],
    }
    return {"code": 10000, "msg": "success", "data": {"shop_order_detail": detail}}


def _shopify(o: Order, placed: float) -> dict:
    at = datetime.fromtimestamp(placed, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")
    return {
        "id": int(o.channel_order_id), "name": f"#{o.seq}", "email": f"c{o.customer}@example.com",
        "created_at": at, "updated_at": at, "processed_at": at, "cancelled_at": None,
        "currency": "USD", "financial_status": "paid" if o.paid else "pending",
        "customer_locale": "en-US", "total_price": _yuan(o.total_cents),
        "customer": {"id": 7451298760000 + o.customer, "email": f"c{o.customer}@example.com",
                     "first_name": "Mei"},
        "line_items": [
            {"id": int(o.channel_order_id) * 10 + i, "title": ln.sku, "sku": ln.sku,
             "quantity": ln.quantity, "price": _yuan(ln.cents)}
            for i, ln in enumerate(o.lines, start=1)],
    }


def _web(o: Order, placed: float) -> dict:
    return {
        "order_id": o.channel_order_id,
        "placed_at": datetime.fromtimestamp(placed, SHANGHAI).isoformat(timespec="seconds"),
        "currency": "CNY",
        "customer": {"id": f"cust-{o.customer}", "nickname": "lilei",
                     "email": f"c{o.customer}@example.com", "locale": "zh-CN",
                     "time_zone": "Asia/Shanghai"},
        "lines": [{"sku": ln.sku, "quantity": ln.quantity, "unit_price": _yuan(ln.cents)}
                  for ln in o.lines],
        "paid": o.paid,
    }


def _pos(o: Order, placed: float) -> dict:
    def money(amount: int) -> dict:
        return {"amount": amount, "currency": "CNY"}

    return {
        "receipt_no": o.channel_order_id, "receipt_type": "SALE", "store_id": "SH-XH-0012",
        "terminal_id": "POS-03", "sold_at": int(placed * 1000),
        "items": [{"line_no": i, "sku": ln.sku, "name": ln.sku, "quantity": ln.quantity,
                   "unit_price": money(ln.cents), "line_total": money(ln.cents * ln.quantity)}
                  for i, ln in enumerate(o.lines, start=1)],
        "total": money(o.total_cents),
        "member": {"member_id": f"M{o.customer:08d}", "phone": "138****5678"},
    }


_RENDER = {"tmall": _tmall, "jd": _jd, "pinduoduo": _pinduoduo, "douyin": _douyin,
           "shopify": _shopify, "web": _web, "pos": _pos}


def payload(order: Order, placed: float) -> dict:
    """The channel's raw payload for ``order``, placed at ``placed`` (epoch seconds)."""
    return _RENDER[order.channel](order, placed)


def encode(order: Order, placed: float) -> bytes:
    return json.dumps(payload(order, placed), ensure_ascii=False,
                      separators=(",", ":")).encode()


def check(orders: list[Order], placed: float) -> None:
    """Run ``orders`` through the real channel adapters (raises on the first invalid one),
    and check that each reads back with its SKUs, quantities and payment state."""
    from services.ingestion.channels import ADAPTERS
    from services.ingestion.channels.base import PaymentState
    from services.ingestion.settings import IngestionSettings

    zones = IngestionSettings().channel_zones
    for order in orders:
        read = ADAPTERS[order.channel].normalise(json.loads(encode(order, placed)),
                                                 zone=zones.get(order.channel, "UTC"))
        want = PaymentState.PAID if order.paid else PaymentState.UNPAID
        got = [(ln.sku, ln.quantity) for ln in read.lines]
        if (read.payment != want or read.channel_order_id != order.channel_order_id
                or got != [(ln.sku, ln.quantity) for ln in order.lines]
                or abs(read.placed_at.timestamp() - placed) > 1):
            raise ValueError(f"{order.channel} order {order.channel_order_id} reads back as "
                             f"{read.payment}, {got}, {read.placed_at}")
