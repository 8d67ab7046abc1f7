"""The `pinduoduo` channel: a Pinduoduo order as pdd.order.information.get returns it.

Shape (POP JSON): ``{"order_info_get_response": {"order_info": {...}}}`` or the bare
``order_info`` (also the shape of one element of pdd.order.list.get's ``order_list``);
lines under ``item_list``; money as JSON numbers in yuan (DOUBLE, "单位: 元");
times as naive "yyyy-MM-dd HH:mm:ss" strings of the shop's zone, "" when unset.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
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
    not_bool,
    order_id_field,
    parse_instant,
    unwrap,
)
from shared.codec import InvalidRecord

channel = "pinduoduo"

ENVELOPE = "order_info_get_response"



FEN = Decimal("0.01")

#: A DOUBLE in yuan: pydantic reads a float through its shortest repr (19.9 -> "19.9"),
#: never its binary expansion; more than two decimals is not a price but an error.
#: Amounts are then written to the fen (9.9 -> 9.90).
Yuan = Annotated[Decimal, BeforeValidator(not_bool),
                 Field(ge=0, max_digits=14, decimal_places=2),
                 AfterValidator(lambda amount: amount.quantize(FEN))]

#: order_status (发货状态) 1 待发货, 2 已发货待签收, 3 已签收 — all after payment.
SHIPPING_STATUSES = {1, 2, 3}
#: confirm_status (成交状态) 0 未成交 (e.g. group not yet formed), 1 已成交, 2 已取消.
CONFIRM_STATUSES = {0, 1, 2}
#: refund_status (售后状态) 1 无售后或售后关闭, 2 售后处理中, 3 退款中, 4 退款成功.
REFUND_STATUSES = {1, 2, 3, 4}
REFUNDED = 4



class PddItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sku_id: StrictInt | str | None = None
    goods_name: str | None = None
    goods_count: StrictInt = Field(gt=0, le=10_000)
    goods_price: Yuan
    outer_id: str | None = None  # 商家外部编码 (sku维度)

    @property
    def sku(self) -> str | None:
        return (self.outer_id or "").strip() or None


class PddOrder(BaseModel):
    model_config = ConfigDict(extra="ignore")

    order_sn: str = Field(min_length=1)
    order_status: StrictInt
    confirm_status: StrictInt | None = None
    refund_status: StrictInt | None = None
    created_time: datetime
    pay_time: datetime | None = None
    updated_at: datetime | None = None
    pay_amount: Yuan
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    open_address_id: str | None = None
    receiver_phone_mask: str | None = None
    item_list: list[PddItem] = Field(min_length=1, max_length=500)

    @field_validator("created_time", "pay_time", "updated_at", mode="before")
    @classmethod
    def _in_shop_zone(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or value == "":
            return None
        return parse_instant(value, (info.context or {})["zone"])

    @model_validator(mode="after")
    def _every_line_has_a_sku(self) -> PddOrder:
        missing = [item.sku_id for item in self.item_list if item.sku is None]
        if missing:
            raise ValueError(f"items without outer_id: {missing}")
        return self


def _order(payload: Any) -> Any:
    return unwrap(payload, (ENVELOPE, "order_info"))


def order_id_of(payload: Any) -> str:
    return order_id_field(_order(payload), "order_sn",
                          missing="a Pinduoduo order needs 'order_sn'")


def payment_of(order: PddOrder) -> PaymentState:
    unknown = (order.order_status not in SHIPPING_STATUSES
               or order.confirm_status not in CONFIRM_STATUSES | {None}
               or order.refund_status not in REFUND_STATUSES | {None})
    if unknown:
        raise InvalidRecord("unknown_status", (
            f"unknown Pinduoduo status: order_status={order.order_status!r} "
            f"confirm_status={order.confirm_status!r} refund_status={order.refund_status!r}"))
    if order.confirm_status == 2 or order.refund_status == REFUNDED:
        return PaymentState.CANCELLED  # cancelled, or refunded in full
    if order.confirm_status == 0 and order.pay_time is None:
        return PaymentState.UNPAID     # not concluded and no payment recorded
    return PaymentState.PAID           # concluded, or paid while the group forms


def customer_id(order: PddOrder) -> str:
    """Pinduoduo shows sellers no buyer id. ``open_address_id`` (合单ID, one per buyer and
    address) is the stablest handle; it is ciphertext, so we keep a hash of it. Without it
    the buyer is known only through this order."""
    if order.open_address_id:
        return "oaid-" + hashlib.sha256(order.open_address_id.encode()).hexdigest()[:40]
    return f"order-{order.order_sn}"[:64]


def normalise(payload: Any, *, zone: str) -> ChannelOrder:
    order = PddOrder.model_validate(_order(payload), context={"zone": zone})
    payment = payment_of(order)
    return ChannelOrder(
        channel=channel,
        channel_order_id=order.order_sn,
        placed_at=order.created_time,
        updated_at=order.updated_at,
        currency=order.currency,
        customer=ChannelCustomer(customer_id=customer_id(order),
                                 phone=order.receiver_phone_mask, time_zone=zone),
        lines=tuple(ChannelLine(sku=item.sku, quantity=item.goods_count,
                                unit_price=item.goods_price) for item in order.item_list),
        payment=payment,
        paid_at=None if payment is PaymentState.UNPAID else order.pay_time,
        total=order.pay_amount,
    )
