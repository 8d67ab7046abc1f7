"""The `tmall` channel: a Taobao/Tmall trade as taobao.trade.fullinfo.get returns it.

Shape (TOP JSON): ``{"trade_fullinfo_get_response": {"trade": {...}}}`` or the bare
``trade``; sub-orders under ``orders.order[]``; money as strings in yuan ("200.07");
times as naive "yyyy-MM-dd HH:mm:ss" wall-clock strings of the shop's zone.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from services.ingestion.channels.base import (
    ChannelCustomer,
    ChannelLine,
    ChannelOrder,
    PaymentState,
    order_id_field,
    parse_instant,
    unwrap,
)
from shared.codec import InvalidRecord

channel = "tmall"

ENVELOPE = "trade_fullinfo_get_response"

#: Yuan with at most two decimals, as TOP sends it ("精确到2位小数;单位:元").
Yuan = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2)]

#: trade.status -> payment. TRADE_CLOSED is "付款以后用户退款成功, 交易自动关闭" (refunded in
#: full), TRADE_CLOSED_BY_TAOBAO "付款以前, 卖家或买家主动关闭交易"; both end the order.
STATUSES: dict[str, PaymentState] = {
    "TRADE_NO_CREATE_PAY": PaymentState.UNPAID,     # no Alipay trade created yet
    "WAIT_BUYER_PAY": PaymentState.UNPAID,
    "PAY_PENDING": PaymentState.UNPAID,             # foreign card payment being confirmed
    "WAIT_PRE_AUTH_CONFIRM": PaymentState.UNPAID,   # 0-yuan purchase contract pending
    "WAIT_SELLER_SEND_GOODS": PaymentState.PAID,
    "SELLER_CONSIGNED_PART": PaymentState.PAID,
    "WAIT_BUYER_CONFIRM_GOODS": PaymentState.PAID,
    "TRADE_BUYER_SIGNED": PaymentState.PAID,        # cash on delivery: paid on signing
    "TRADE_FINISHED": PaymentState.PAID,
    "PAID_FORBID_CONSIGN": PaymentState.PAID,       # paid, shipping held by the platform
    "TRADE_CLOSED": PaymentState.CANCELLED,
    "TRADE_CLOSED_BY_TAOBAO": PaymentState.CANCELLED,
}
#: Cash-on-delivery trades (type "cod") pass through the shipping statuses unpaid.
COD_UNPAID = {"WAIT_SELLER_SEND_GOODS", "SELLER_CONSIGNED_PART", "WAIT_BUYER_CONFIRM_GOODS"}



class TmallOrder(BaseModel):
    """One sub-order (子订单): a line of the trade."""

    model_config = ConfigDict(extra="ignore")

    oid: StrictInt | str | None = None
    title: str | None = None
    num: StrictInt = Field(gt=0, le=10_000)
    price: Yuan
    sku_id: str | None = None
    outer_sku_id: str | None = None
    outer_iid: str | None = None

    @property
    def sku(self) -> str | None:
        """The merchant's code: SKU-level ``outer_sku_id``; for an item sold without SKUs
        (no ``sku_id``) the item-level ``outer_iid`` is where merchants keep it."""
        code = (self.outer_sku_id or "").strip()
        if not code and not self.sku_id:
            code = (self.outer_iid or "").strip()
        return code or None


class TmallTrade(BaseModel):
    """The part of a TOP ``Trade`` we read; the dozens of other fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    tid: StrictInt | str
    tid_str: str | None = None
    status: str
    type: str | None = None
    created: datetime
    pay_time: datetime | None = None
    modified: datetime | None = None
    payment: Yuan
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    buyer_open_uid: str = Field(min_length=1)
    buyer_nick: str | None = None
    receiver_mobile: str | None = None
    orders: list[TmallOrder] = Field(min_length=1, max_length=500)

    @field_validator("created", "pay_time", "modified", mode="before")
    @classmethod
    def _in_shop_zone(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or value == "":
            return None
        return parse_instant(value, (info.context or {})["zone"])

    @field_validator("orders", mode="before")
    @classmethod
    def _unwrap_orders(cls, value: Any) -> Any:
        # TOP JSON wraps lists in their element name: "orders": {"order": [...]}.
        return value.get("order") if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _every_line_has_a_sku(self) -> TmallTrade:
        missing = [o.oid for o in self.orders if o.sku is None]
        if missing:
            raise ValueError(f"sub-orders without outer_sku_id/outer_iid: {missing}")
        return self


def _trade(payload: Any) -> Any:
    return unwrap(payload, (ENVELOPE, "trade"))


def order_id_of(payload: Any) -> str:
    return order_id_field(_trade(payload), "tid_str", "tid",
                          missing="a Tmall trade needs 'tid' (or 'tid_str')")


def payment_of(trade: TmallTrade) -> PaymentState:
    state = STATUSES.get(trade.status)
    if state is None:
        raise InvalidRecord("unknown_status", f"unknown Tmall trade status {trade.status!r}")
    if trade.type == "cod" and trade.status in COD_UNPAID:
        return PaymentState.UNPAID
    return state


def normalise(payload: Any, *, zone: str) -> ChannelOrder:
    trade = TmallTrade.model_validate(_trade(payload), context={"zone": zone})
    payment = payment_of(trade)
    return ChannelOrder(
        channel=channel,
        channel_order_id=order_id_of(payload),
        placed_at=trade.created,
        updated_at=trade.modified,
        currency=trade.currency,
        customer=ChannelCustomer(
            customer_id=trade.buyer_open_uid,
            nickname=trade.buyer_nick[:64] if trade.buyer_nick else None,
            phone=trade.receiver_mobile,
            time_zone=zone,
        ),
        lines=tuple(ChannelLine(sku=o.sku, quantity=o.num, unit_price=o.price)
                    for o in trade.orders),
        payment=payment,
        paid_at=None if payment is PaymentState.UNPAID else trade.pay_time,
        total=trade.payment,
    )
