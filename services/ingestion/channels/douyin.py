"""The `douyin` channel: a Douyin shop (抖店) order as order.orderDetail returns it.

Shape (open platform JSON): ``{"code": 10000, "data": {"shop_order_detail": {...}}}``,
``{"shop_order_detail": {...}}`` or the bare shop order (also one element of
order.searchList's ``shop_order_list``); lines under ``sku_order_list``; money as
integers in fen (分); times as epoch seconds (absolute, so the zone plays no part).
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
    field_validator,
    model_validator,
)

from services.ingestion.channels.base import (
    ChannelCustomer,
    ChannelLine,
    ChannelOrder,
    PaymentState,
    customer_key,
    order_id_field,
    parse_instant,
)
from shared.codec import InvalidRecord

channel = "douyin"

Fen = Annotated[StrictInt, Field(ge=0, le=10**12)]

#: order_status: 1 待确认/待支付 (订单创建完毕), 103 部分支付 (deposit of a pre-sale paid,
#: balance not), 105 已支付, 2 备货中, 101 部分发货, 3 已发货 (全部发货), 4 已取消
#: (cancelled, or refunded in full before shipment), 5 已完成 (已收货).
STATUSES: dict[int, PaymentState] = {
    1: PaymentState.UNPAID,
    103: PaymentState.UNPAID,
    105: PaymentState.PAID,
    2: PaymentState.PAID,
    101: PaymentState.PAID,
    3: PaymentState.PAID,
    4: PaymentState.CANCELLED,
    5: PaymentState.PAID,
}
#: pay_type 0 is 货到付款 (cash on delivery): paid only once the order completes.
CASH_ON_DELIVERY = 0
COMPLETED = 5


def _epoch_seconds(value: Any) -> datetime | None:
    if value is None or value == 0:
        return None  # Douyin sends 0 for a time that has not happened (e.g. pay_time)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected epoch seconds (an integer)")
    if not 0 < value < 10**11:
        raise ValueError(f"not epoch seconds: {value!r}")
    try:
        return parse_instant(value, "UTC")  # absolute: the zone is never consulted
    except (OverflowError, OSError) as exc:
        raise ValueError(f"time out of range: {value!r}") from exc


def _money(fen: int) -> Decimal:
    return Decimal(fen).scaleb(-2)  # exact, never through float: 8900 fen -> Decimal("89.00")


class DouyinSkuOrder(BaseModel):
    """One 商品单 (SKU order): a line of the shop order."""

    model_config = ConfigDict(extra="ignore")

    order_id: str | None = None
    sku_id: StrictInt | str | None = None
    code: str | None = None                        # 商家编码 of the SKU
    out_sku_id: StrictInt | str | None = None      # 外部 SKU ID
    product_name: str | None = None
    item_num: StrictInt = Field(gt=0, le=10_000)
    origin_amount: Fen                             # 商品现价 per unit, fen

    @property
    def sku(self) -> str | None:
        code = (self.code or "").strip()
        if not code and self.out_sku_id not in (None, 0, ""):
            code = str(self.out_sku_id).strip()
        return code or None


class DouyinOrder(BaseModel):
    model_config = ConfigDict(extra="ignore")

    order_id: str = Field(min_length=1)
    order_status: StrictInt
    pay_type: StrictInt | None = None
    create_time: datetime
    pay_time: datetime | None = None
    update_time: datetime | None = None
    pay_amount: Fen
    doudian_open_id: str | None = None
    open_id: str | None = None
    mask_post_tel: str | None = None
    sku_order_list: list[DouyinSkuOrder] = Field(min_length=1, max_length=500)

    @field_validator("create_time", "pay_time", "update_time", mode="before")
    @classmethod
    def _absolute(cls, value: Any) -> Any:
        return _epoch_seconds(value)

    @model_validator(mode="after")
    def _buyer_and_skus(self) -> DouyinOrder:
        if not (self.doudian_open_id or self.open_id):
            raise ValueError("a Douyin order needs the buyer: 'doudian_open_id' or 'open_id'")
        missing = [sku.order_id for sku in self.sku_order_list if sku.sku is None]
        if missing:
            raise ValueError(f"SKU orders without code/out_sku_id: {missing}")
        return self


def _order(payload: Any) -> Any:
    if isinstance(payload, dict) and isinstance(payload.get("data"), dict):
        payload = payload["data"]
    if isinstance(payload, dict) and "shop_order_detail" in payload:
        return payload["shop_order_detail"]
    return payload


def order_id_of(payload: Any) -> str:
    return order_id_field(_order(payload), "order_id",
                          missing="a Douyin order needs 'order_id'")


def payment_of(order: DouyinOrder) -> PaymentState:
    state = STATUSES.get(order.order_status)
    if state is None:
        raise InvalidRecord("unknown_status",
                            f"unknown Douyin order_status {order.order_status!r}")
    cod_pending = order.pay_type == CASH_ON_DELIVERY and order.order_status != COMPLETED
    if state is PaymentState.PAID and cod_pending:
        return PaymentState.UNPAID
    return state



def normalise(payload: Any, *, zone: str) -> ChannelOrder:
    order = DouyinOrder.model_validate(_order(payload))
    payment = payment_of(order)
    return ChannelOrder(
        channel=channel,
        channel_order_id=order.order_id,
        placed_at=order.create_time,
        updated_at=order.update_time,
        currency="CNY",
        customer=ChannelCustomer(
            customer_id=customer_key(order.doudian_open_id or order.open_id or ""),
            phone=order.mask_post_tel,
            time_zone=zone,
        ),
        lines=tuple(ChannelLine(sku=s.sku, quantity=s.item_num,
                                unit_price=_money(s.origin_amount))
                    for s in order.sku_order_list),
        payment=payment,
        paid_at=None if payment is PaymentState.UNPAID else order.pay_time,
        total=_money(order.pay_amount),
    )
