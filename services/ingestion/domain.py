"""Normalises channel order payloads into OrderSubmitted: pure functions, no I/O."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationInfo,
    field_validator,
)

from shared.codec import InvalidRecord
from shared.events import Channel, Customer, OrderLine, OrderSubmitted, derive_id
from shared.timeutil import localize, to_utc


def order_id_for(channel: str, channel_order_id: str) -> str:
    """orderstream's order id: stable for one (channel, channel_order_id)."""
    return derive_id("order", channel, channel_order_id)


def dedupe_key(channel: str, channel_order_id: str) -> str:
    """The key of orders.raw records and of the ingestion dedupe table."""
    return f"{channel}:{channel_order_id}"


def channel_of(headers: dict[str, str], key: str | None) -> str:
    """The channel a raw record comes from: header ``channel``, else the key's prefix."""
    channel = headers.get("channel") or (key.split(":", 1)[0] if key and ":" in key else "")
    if not channel:
        raise InvalidRecord("missing_channel", "no 'channel' header and no channel: key prefix")
    if channel not in Channel._value2member_map_:
        raise InvalidRecord("unknown_channel", f"unknown channel {channel!r}")
    return channel


# --- the `web` channel: orderstream's own documented shape, usable by any custom shop ----


class WebCustomer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    nickname: str | None = Field(default=None, max_length=64)
    email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=32)
    locale: str = "zh-CN"
    time_zone: str = "Asia/Shanghai"
    vip: bool = False


class WebLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str
    quantity: PositiveInt
    unit_price: Decimal = Field(ge=0, max_digits=14, decimal_places=4)


class WebOrder(BaseModel):
    """A `web` channel order. ``placed_at`` may be naive: it is then read in the channel's zone."""

    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._\-]+$")
    placed_at: AwareDatetime
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    customer: WebCustomer
    lines: list[WebLine] = Field(min_length=1, max_length=500)
    paid: bool = False

    @field_validator("placed_at", mode="before")
    @classmethod
    def _in_channel_zone(cls, value: Any, info: ValidationInfo) -> Any:
        """A naive time is the channel's wall clock: read it in the zone given as context."""
        if isinstance(value, str | datetime):
            parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                return localize(parsed, (info.context or {})["zone"])
            return to_utc(parsed)
        return value


def normalise_web(payload: Any, *, zone: str) -> OrderSubmitted:
    """A `web` payload (parsed JSON) to OrderSubmitted; raises pydantic ValidationError."""
    order = WebOrder.model_validate(payload, context={"zone": zone})
    order_id = order_id_for(Channel.WEB, order.order_id)
    lines = tuple(
        OrderLine(line=i, sku=line.sku, quantity=line.quantity, unit_price=line.unit_price)
        for i, line in enumerate(order.lines, start=1)
    )
    c = order.customer
    return OrderSubmitted(
        event_id=derive_id("submitted", Channel.WEB, order.order_id),
        correlation_id=order_id,
        order_id=order_id,
        channel=Channel.WEB,
        channel_order_id=order.order_id,
        customer=Customer(
            customer_id=c.id, nickname=c.nickname, email=c.email, phone=c.phone,
            locale=c.locale, time_zone=c.time_zone, vip=c.vip,
        ),
        lines=lines,
        currency=order.currency,
        total=sum((line.unit_price * line.quantity for line in lines), Decimal(0)),
        paid=order.paid,
        placed_at=order.placed_at,
    )


NORMALISERS = {Channel.WEB.value: normalise_web}


def normalise(channel: str, payload: Any, *, zone: str) -> OrderSubmitted:
    """Dispatch to the channel's adapter; a channel without one is rejected, not guessed."""
    adapter = NORMALISERS.get(channel)
    if adapter is None:
        raise InvalidRecord("no_adapter", f"channel {channel!r} has no adapter yet")
    return adapter(payload, zone=zone)
