"""The `web` channel: orderstream's own documented order shape, usable by any custom shop."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationInfo, field_validator

from services.ingestion.channels.base import (
    ChannelCustomer,
    ChannelLine,
    ChannelOrder,
    PaymentState,
    order_id_field,
    parse_instant,
)

channel = "web"


class WebCustomer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    nickname: str | None = Field(default=None, max_length=64)
    email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=32)
    wechat_openid: str | None = Field(default=None, max_length=64)
    locale: str = "zh-CN"
    time_zone: str = "Asia/Shanghai"
    vip: bool = False


class WebLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str
    quantity: PositiveInt
    unit_price: Decimal = Field(ge=0, max_digits=14, decimal_places=4)


class WebOrder(BaseModel):
    """``placed_at`` may be naive: it is then read in the channel's zone."""

    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._\-]+$")
    placed_at: datetime
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    customer: WebCustomer
    lines: list[WebLine] = Field(min_length=1, max_length=500)
    paid: bool = False
    cancelled: bool = False

    @field_validator("placed_at", mode="before")
    @classmethod
    def _in_channel_zone(cls, value: Any, info: ValidationInfo) -> Any:
        return parse_instant(value, (info.context or {})["zone"])


def order_id_of(payload: Any) -> str:
    return order_id_field(payload, "order_id", missing="a web order needs 'order_id'")


def normalise(payload: Any, *, zone: str) -> ChannelOrder:
    order = WebOrder.model_validate(payload, context={"zone": zone})
    c = order.customer
    return ChannelOrder(
        channel=channel,
        channel_order_id=order.order_id,
        placed_at=order.placed_at,
        currency=order.currency,
        customer=ChannelCustomer(customer_id=c.id, nickname=c.nickname, email=c.email,
                                 phone=c.phone, wechat_openid=c.wechat_openid,
                                 locale=c.locale, time_zone=c.time_zone, vip=c.vip),
        lines=tuple(ChannelLine(sku=ln.sku, quantity=ln.quantity, unit_price=ln.unit_price)
                    for ln in order.lines),
        payment=(PaymentState.CANCELLED if order.cancelled
                 else PaymentState.PAID if order.paid else PaymentState.UNPAID),
    )
