"""The `pos` channel: a store till's receipt, as our in-store POS exports it.

No public standard exists for this; the shape follows what tills commonly emit and Square's
Orders API conventions for money: ``{"amount": <int>, "currency": "CNY"}`` in the
currency's smallest unit (fen, cents; yen have none). Times are epoch milliseconds.
A sale rung up at a till has been paid; a receipt voided at the till is cancelled.
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
    order_id_field,
    parse_instant,
)
from shared.codec import InvalidRecord

channel = "pos"

#: receipt_type -> payment.
STATUSES: dict[str, PaymentState] = {
    "SALE": PaymentState.PAID,
    "VOID": PaymentState.CANCELLED,
}
#: ISO 4217 minor-unit exponents that are not 2 (the default).
EXPONENTS: dict[str, int] = {
    **dict.fromkeys(("JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF", "PYG"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}


def _epoch_millis(value: Any) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected epoch milliseconds (an integer)")
    if not 10**11 < value < 10**14:  # parse_instant reads smaller numbers as seconds
        raise ValueError(f"not epoch milliseconds: {value!r}")
    try:
        return parse_instant(value, "UTC")  # absolute: the zone is never consulted
    except (OverflowError, OSError) as exc:
        raise ValueError(f"time out of range: {value!r}") from exc


class Money(BaseModel):
    """An amount in the currency's smallest unit."""

    model_config = ConfigDict(extra="ignore")

    amount: Annotated[StrictInt, Field(ge=0, le=10**14)]
    currency: str = Field(pattern=r"^[A-Z]{3}$")

    @property
    def value(self) -> Decimal:
        return Decimal(self.amount).scaleb(-EXPONENTS.get(self.currency, 2))


class PosItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sku: str = Field(min_length=1)
    barcode: str | None = None
    name: str | None = None
    quantity: StrictInt = Field(gt=0, le=10_000)
    unit_price: Money


class PosMember(BaseModel):
    model_config = ConfigDict(extra="ignore")

    member_id: str = Field(min_length=1)
    nickname: str | None = None
    phone: str | None = None  # masked on the receipt ("138****8000")


class PosReceipt(BaseModel):
    model_config = ConfigDict(extra="ignore")

    receipt_no: str = Field(min_length=1)
    store_id: str = Field(min_length=1)
    receipt_type: str
    sold_at: datetime
    voided_at: datetime | None = None
    member: PosMember | None = None
    items: list[PosItem] = Field(min_length=1, max_length=500)
    total: Money

    @field_validator("sold_at", "voided_at", mode="before")
    @classmethod
    def _absolute(cls, value: Any) -> Any:
        return None if value is None else _epoch_millis(value)

    @model_validator(mode="after")
    def _one_currency(self) -> PosReceipt:
        currencies = {item.unit_price.currency for item in self.items} | {self.total.currency}
        if len(currencies) != 1:
            raise ValueError(f"a receipt is in one currency, got {sorted(currencies)}")
        return self


def order_id_of(payload: Any) -> str:
    return order_id_field(payload, "receipt_no", missing="a POS receipt needs 'receipt_no'")


def payment_of(receipt: PosReceipt) -> PaymentState:
    state = STATUSES.get(receipt.receipt_type)
    if state is None:
        raise InvalidRecord("unknown_status",
                            f"unknown POS receipt_type {receipt.receipt_type!r}")
    return state


def normalise(payload: Any, *, zone: str) -> ChannelOrder:
    receipt = PosReceipt.model_validate(payload)
    payment = payment_of(receipt)
    member = receipt.member
    return ChannelOrder(
        channel=channel,
        channel_order_id=receipt.receipt_no,
        placed_at=receipt.sold_at,
        updated_at=receipt.voided_at,
        currency=receipt.total.currency,
        customer=ChannelCustomer(
            # A walk-in shopper without a membership card is one anonymous customer per store.
            customer_id=member.member_id if member else f"walk-in-{receipt.store_id}"[:64],
            nickname=member.nickname[:64] if member and member.nickname else None,
            phone=member.phone if member else None,
            time_zone=zone,
        ),
        lines=tuple(ChannelLine(sku=item.sku, quantity=item.quantity,
                                unit_price=item.unit_price.value) for item in receipt.items),
        payment=payment,
        paid_at=receipt.sold_at if payment is PaymentState.PAID else None,
        total=receipt.total.value,
    )
