"""Ingestion's rules: read a raw channel record, and decide what it means given what was
seen before for the same (channel, channel_order_id). Pure: no Kafka, no database."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from services.ingestion.channels import ADAPTERS
from services.ingestion.channels.base import ChannelOrder, PaymentState
from shared.codec import InvalidRecord, parse_json
from shared.events import (
    Customer,
    Event,
    OrderLine,
    OrderSubmitted,
    PaymentConfirmed,
    PaymentFailed,
    derive_id,
)

Outcome = Literal["accepted", "duplicate", "payment_update", "stale_update", "ignored"]


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
    adapter(channel)
    return channel


def read(channel: str, raw: bytes | None, *, zone: str) -> ChannelOrder:
    """A raw record's bytes to a ChannelOrder, or InvalidRecord / pydantic ValidationError."""
    payload = parse_json(raw)
    try:
        return adapter(channel).normalise(payload, zone=zone)
    except (ValidationError, InvalidRecord):
        raise
    except (ValueError, TypeError, ArithmeticError) as exc:  # an adapter's own check
        raise InvalidRecord("invalid_event", f"{type(exc).__name__}: {exc}") from exc


def adapter(channel: str) -> Any:
    if channel not in ADAPTERS:
        raise InvalidRecord("unknown_channel", f"unknown channel {channel!r}")
    return ADAPTERS[channel]


def normalise(channel: str, payload: Any, *, zone: str) -> OrderSubmitted:
    """A parsed payload of ``channel`` as the OrderSubmitted it would become."""
    return to_submitted(adapter(channel).normalise(payload, zone=zone))


class Seen(BaseModel):
    """What the dedupe table keeps per (channel, channel_order_id)."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    payment: PaymentState


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    seen: Seen | None  # the table's new value; None when it does not change
    submitted: OrderSubmitted | None = None
    payments: list[Event] = field(default_factory=list)  # payments.events, keyed by order_id


def to_submitted(order: ChannelOrder) -> OrderSubmitted:
    order_id = order_id_for(order.channel, order.channel_order_id)
    c = order.customer
    lines = tuple(
        OrderLine(line=i, sku=ln.sku, quantity=ln.quantity, unit_price=ln.unit_price)
        for i, ln in enumerate(order.lines, start=1)
    )
    return OrderSubmitted(
        event_id=derive_id("submitted", order.channel, order.channel_order_id),
        correlation_id=order_id,
        order_id=order_id,
        channel=order.channel,
        channel_order_id=order.channel_order_id,
        customer=Customer(customer_id=c.customer_id, nickname=c.nickname, email=c.email,
                          phone=c.phone, wechat_openid=c.wechat_openid, locale=c.locale,
                          time_zone=c.time_zone, vip=c.vip),
        lines=lines,
        currency=order.currency,
        total=order.total if order.total is not None else _sum(lines),
        paid=order.payment == PaymentState.PAID,
        placed_at=order.placed_at,
    )


def decide(seen: Seen | None, order: ChannelOrder) -> Decision:
    """New order → OrderSubmitted; the same state again → nothing; unpaid → paid →
    PaymentConfirmed; unpaid → cancelled → PaymentFailed. A channel never un-pays an order:
    an older state arriving late is stale and ignored."""
    order_id = order_id_for(order.channel, order.channel_order_id)
    if seen is None:
        if order.payment == PaymentState.CANCELLED:
            # Closed before we ever saw it: nothing to reserve, nothing to tell anyone.
            return Decision("ignored", Seen(order_id=order_id, payment=order.payment))
        return Decision("accepted", Seen(order_id=order_id, payment=order.payment),
                        submitted=to_submitted(order))
    if order.payment == seen.payment:
        return Decision("duplicate", None)
    if seen.payment == PaymentState.UNPAID and order.payment == PaymentState.PAID:
        submitted = to_submitted(order)
        confirmed = PaymentConfirmed(
            event_id=derive_id("paid", order_id), correlation_id=order_id, order_id=order_id,
            amount=submitted.total, currency=order.currency,
            payment_ref=f"{order.channel}:{order.channel_order_id}",
        )
        return Decision("payment_update", Seen(order_id=order_id, payment=order.payment),
                        payments=[confirmed])
    if seen.payment == PaymentState.UNPAID and order.payment == PaymentState.CANCELLED:
        failed = PaymentFailed(event_id=derive_id("unpaid-cancelled", order_id),
                               correlation_id=order_id, order_id=order_id,
                               reason="cancelled_by_channel")
        return Decision("payment_update", Seen(order_id=order_id, payment=order.payment),
                        payments=[failed])
    # paid -> unpaid (a late, older snapshot), cancelled -> anything, paid -> cancelled
    # (a refund: no contract for it yet) change nothing here.
    return Decision("stale_update", None)


def _sum(lines: tuple[OrderLine, ...]) -> Decimal:
    return sum((ln.unit_price * ln.quantity for ln in lines), Decimal(0))
