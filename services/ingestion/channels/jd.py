"""The `jd` channel: a JD POP (SOP) order as jingdong.pop.order.get / .search return it.

Shape (JOS JSON): ``{"jingdong_pop_order_get_responce": {"orderDetailInfo": {"orderInfo":
{...}}}}`` (sic: JOS spells it "responce") or the bare ``orderInfo``; lines under
``itemInfoList``; money and quantities as strings ("99.00", "1"); times as naive
"yyyy-MM-dd HH:mm:ss" strings of the shop's zone, "0001-01-01 00:00:00" meaning none.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
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
    customer_key,
    not_bool,
    order_id_field,
    parse_instant,
    unwrap,
)
from shared.codec import InvalidRecord

channel = "jd"

ENVELOPES = ("jingdong_pop_order_get_responce", "jingdong_pop_order_get_response")
NO_TIME = "0001-01-01 00:00:00"  # JOS's "not set" for optional times such as payment



Yuan = Annotated[Decimal, BeforeValidator(not_bool),
                 Field(ge=0, max_digits=14, decimal_places=2)]
Quantity = Annotated[int, BeforeValidator(not_bool), Field(gt=0, le=10_000)]

#: orderState -> payment, for orders paid online. JOS lists: WAIT_SELLER_STOCK_OUT 等待出库,
#: SEND_TO_DISTRIBUTION_CENER / DISTRIBUTION_CENTER_RECEIVED (LBP/SOPL), WAIT_SELLER_DELIVERY
#: (cross-border: awaiting domestic shipment), WAIT_GOODS_RECEIVE_CONFIRM 等待确认收货,
#: RECEIPTS_CONFIRM 收款确认, FINISHED_L 完成, TRADE_CANCELED 取消, LOCKED 已锁定,
#: PAUSE / POP_ORDER_PAUSE 暂停, WAIT_SEND_CODE (LOC: paid, code not yet sent),
#: DELIVERY_RETURN 配送退货 (refused on delivery, refunded). UN_KNOWN stays unknown.
STATUSES: dict[str, PaymentState | None] = {
    "WAIT_SELLER_STOCK_OUT": PaymentState.PAID,
    "SEND_TO_DISTRIBUTION_CENER": PaymentState.PAID,
    "DISTRIBUTION_CENTER_RECEIVED": PaymentState.PAID,
    "WAIT_SELLER_DELIVERY": PaymentState.PAID,
    "WAIT_GOODS_RECEIVE_CONFIRM": PaymentState.PAID,
    "WAIT_SEND_CODE": PaymentState.PAID,
    "RECEIPTS_CONFIRM": PaymentState.PAID,
    "FINISHED_L": PaymentState.PAID,
    "TRADE_CANCELED": PaymentState.CANCELLED,
    "DELIVERY_RETURN": PaymentState.CANCELLED,
    # Held orders say nothing about payment by themselves: paymentConfirmTime decides.
    "LOCKED": None,
    "PAUSE": None,
    "POP_ORDER_PAUSE": None,
}
#: With payType "1-货到付款" (cash on delivery) money is collected on receipt.
COD_PAID = {"RECEIPTS_CONFIRM", "FINISHED_L"}




class JdItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    skuId: StrictInt | str | None = None
    outerSkuId: str | None = None
    skuName: str | None = None
    jdPrice: Yuan
    itemTotal: Quantity

    @property
    def sku(self) -> str | None:
        return (self.outerSkuId or "").strip() or None


class JdConsignee(BaseModel):
    model_config = ConfigDict(extra="ignore")

    mobile: str | None = None  # masked ("136*******5") unless decrypted


class JdOrder(BaseModel):
    model_config = ConfigDict(extra="ignore")

    orderId: StrictInt | str
    orderState: str
    payType: str | None = None
    orderStartTime: datetime
    paymentConfirmTime: datetime | None = None
    modified: datetime | None = None
    orderPayment: Yuan
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    pin: str | None = None
    open_id_buyer: str | None = None
    consigneeInfo: JdConsignee | None = None
    itemInfoList: list[JdItem] = Field(min_length=1, max_length=500)

    @field_validator("orderStartTime", "paymentConfirmTime", "modified", mode="before")
    @classmethod
    def _in_shop_zone(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or value == "" or value == NO_TIME:
            return None
        return parse_instant(value, (info.context or {})["zone"])

    @model_validator(mode="after")
    def _buyer_and_skus(self) -> JdOrder:
        if not (self.open_id_buyer or self.pin):
            raise ValueError("a JD order needs the buyer: 'open_id_buyer' or 'pin'")
        missing = [item.skuId for item in self.itemInfoList if item.sku is None]
        if missing:
            raise ValueError(f"items without outerSkuId: {missing}")
        return self

    @property
    def cash_on_delivery(self) -> bool:
        return (self.payType or "").split("-", 1)[0].strip() == "1"


def _order(payload: Any) -> Any:
    return unwrap(payload, *((name, "orderDetailInfo", "orderInfo") for name in ENVELOPES))


def order_id_of(payload: Any) -> str:
    return order_id_field(_order(payload), "orderId", missing="a JD order needs 'orderId'")


def payment_of(order: JdOrder) -> PaymentState:
    if order.orderState not in STATUSES:
        raise InvalidRecord("unknown_status", f"unknown JD orderState {order.orderState!r}")
    state = STATUSES[order.orderState]
    if state is None:  # held: paid if JD recorded a payment confirmation
        paid = order.paymentConfirmTime is not None and not order.cash_on_delivery
        return PaymentState.PAID if paid else PaymentState.UNPAID
    if state is PaymentState.PAID and order.cash_on_delivery and order.orderState not in COD_PAID:
        return PaymentState.UNPAID
    return state


def normalise(payload: Any, *, zone: str) -> ChannelOrder:
    order = JdOrder.model_validate(_order(payload), context={"zone": zone})
    payment = payment_of(order)
    buyer = order.open_id_buyer or order.pin or ""
    return ChannelOrder(
        channel=channel,
        channel_order_id=order_id_of(payload),
        placed_at=order.orderStartTime,
        updated_at=order.modified,
        currency=order.currency,
        customer=ChannelCustomer(
            customer_id=customer_key(buyer),
            nickname=order.pin[:64] if order.pin else None,
            phone=order.consigneeInfo.mobile if order.consigneeInfo else None,
            time_zone=zone,
        ),
        lines=tuple(ChannelLine(sku=item.sku, quantity=item.itemTotal, unit_price=item.jdPrice)
                    for item in order.itemInfoList),
        payment=payment,
        paid_at=None if payment is PaymentState.UNPAID else order.paymentConfirmTime,
        total=order.orderPayment,
    )
