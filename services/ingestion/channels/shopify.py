"""The `shopify` channel: a Shopify Admin REST ``Order``, as the orders/create, orders/paid,
orders/updated and orders/cancelled webhooks deliver it (bare) or GET orders/{id}.json
returns it (``{"order": {...}}``). Money as decimal strings in the order's ``currency``;
times ISO 8601 with a UTC offset, so the channel zone plays no part.
"""

from __future__ import annotations

import hashlib
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
    order_id_field,
    parse_instant,
    unwrap,
)
from shared.codec import InvalidRecord

channel = "shopify"


def _decimal_string(value: Any) -> Any:
    if not isinstance(value, str):  # Shopify sends "199.00", never a JSON number
        raise ValueError("expected a decimal string such as \"199.00\"")
    return value


Amount = Annotated[Decimal, BeforeValidator(_decimal_string),
                   Field(ge=0, max_digits=14, decimal_places=4)]

#: financial_status -> payment (before cancelled_at, which wins when set).
#: ``authorized`` counts as UNPAID: the card is only reserved until captured, and the
#: authorization can still be voided or expire; we call an order paid once money is
#: captured. ``partially_paid`` leaves a balance due, ``expired`` means the authorization
#: lapsed uncaptured — neither is paid. ``refunded`` returns the whole amount: the order
#: is undone, like Tmall's TRADE_CLOSED; ``voided`` cancels an uncaptured authorization.
STATUSES: dict[str, PaymentState] = {
    "pending": PaymentState.UNPAID,
    "authorized": PaymentState.UNPAID,
    "partially_paid": PaymentState.UNPAID,
    "expired": PaymentState.UNPAID,
    "paid": PaymentState.PAID,
    "partially_refunded": PaymentState.PAID,
    "refunded": PaymentState.CANCELLED,
    "voided": PaymentState.CANCELLED,
}


def _shopify_time(value: Any, zone: str) -> datetime | None:
    """Shopify sends ISO 8601 with an offset. A source that relays its orders without the
    offset (an export, a middleware: the outage in the requirements) sends naive local
    times; those are read in the channel's configured zone, never as UTC."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("expected an ISO 8601 time")
    return parse_instant(value, zone)


class ShopifyLineItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: StrictInt | None = None
    title: str | None = None
    sku: str | None = None
    quantity: StrictInt = Field(gt=0, le=10_000)
    price: Amount


class ShopifyCustomer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: StrictInt | str | None = None
    email: str | None = None
    first_name: str | None = None
    phone: str | None = None


class ShopifyOrder(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: StrictInt | str
    created_at: datetime
    updated_at: datetime | None = None
    processed_at: datetime | None = None
    cancelled_at: datetime | None = None
    financial_status: str | None = None
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    total_price: Amount
    email: str | None = None
    phone: str | None = None
    customer_locale: str | None = None
    customer: ShopifyCustomer | None = None
    line_items: list[ShopifyLineItem] = Field(min_length=1, max_length=500)

    @field_validator("created_at", "updated_at", "processed_at", "cancelled_at", mode="before")
    @classmethod
    def _in_channel_zone(cls, value: Any, info: ValidationInfo) -> Any:
        return _shopify_time(value, (info.context or {})["zone"])

    @model_validator(mode="after")
    def _every_line_has_a_sku(self) -> ShopifyOrder:
        missing = [item.id for item in self.line_items if not (item.sku or "").strip()]
        if missing:
            raise ValueError(f"line items without sku: {missing}")
        return self


def _order(payload: Any) -> Any:
    return unwrap(payload, ("order",))


def order_id_of(payload: Any) -> str:
    return order_id_field(_order(payload), "id",
                          missing="a Shopify order needs its numeric 'id'")


def payment_of(order: ShopifyOrder) -> PaymentState:
    state = STATUSES.get(order.financial_status or "")
    if state is None:
        raise InvalidRecord("unknown_status",
                            f"unknown Shopify financial_status {order.financial_status!r}")
    return PaymentState.CANCELLED if order.cancelled_at is not None else state


def customer_of(order: ShopifyOrder, zone: str) -> ChannelCustomer:
    """The Shopify customer id; a guest checkout has none, so its e-mail (hashed) keys it."""
    c = order.customer or ShopifyCustomer()
    email = c.email or order.email
    if c.id not in (None, ""):
        key = str(c.id)
    elif email:
        key = "email-" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:40]
    else:
        key = f"guest-{order.id}"
    return ChannelCustomer(
        customer_id=key[:64],
        nickname=c.first_name[:64] if c.first_name else None,
        email=email,
        phone=c.phone or order.phone,
        locale=(order.customer_locale or "en")[:16],
        time_zone=zone,
    )


def normalise(payload: Any, *, zone: str) -> ChannelOrder:
    order = ShopifyOrder.model_validate(_order(payload), context={"zone": zone})
    payment = payment_of(order)
    return ChannelOrder(
        channel=channel,
        channel_order_id=str(order.id),
        placed_at=order.created_at,
        updated_at=order.updated_at,
        currency=order.currency,
        customer=customer_of(order, zone),
        lines=tuple(ChannelLine(sku=(item.sku or "").strip(), quantity=item.quantity,
                                unit_price=item.price) for item in order.line_items),
        payment=payment,
        total=order.total_price,
    )
