"""What every channel adapter produces: one channel order in orderstream's terms, in UTC."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PositiveInt

from shared.codec import InvalidRecord
from shared.timeutil import localize, to_utc


class PaymentState(StrEnum):
    """Where the channel says payment stands (each adapter maps its own status codes)."""

    UNPAID = "unpaid"        # created, awaiting payment
    PAID = "paid"            # paid (awaiting shipment, shipped, ... all count as paid)
    CANCELLED = "cancelled"  # closed / cancelled / refunded before shipment


class ChannelCustomer(BaseModel):
    model_config = ConfigDict(frozen=True)

    customer_id: str = Field(min_length=1, max_length=64)
    nickname: str | None = Field(default=None, max_length=64)
    email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=32)
    wechat_openid: str | None = Field(default=None, max_length=64)
    locale: str = "zh-CN"
    time_zone: str = "Asia/Shanghai"
    vip: bool = False


class ChannelLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,63}$")
    quantity: PositiveInt = Field(le=10_000)
    unit_price: Decimal = Field(ge=0, le=Decimal("10000000"), max_digits=14, decimal_places=4)


class ChannelOrder(BaseModel):
    """An adapter's output. Instants are tz-aware UTC; money is Decimal in ``currency``."""

    model_config = ConfigDict(frozen=True)

    channel: str
    channel_order_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._\-]+$")
    placed_at: AwareDatetime
    updated_at: AwareDatetime | None = None
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    customer: ChannelCustomer
    lines: tuple[ChannelLine, ...] = Field(min_length=1, max_length=500)
    payment: PaymentState
    paid_at: AwareDatetime | None = None
    total: Decimal | None = Field(default=None, ge=0, description="As the channel states it")


class Adapter(Protocol):
    """One channel. ``normalise`` raises pydantic ValidationError (or InvalidRecord) on a
    payload it cannot read; ``order_id_of`` finds the channel's order id cheaply (used to
    key webhook records) and raises InvalidRecord when there is none."""

    channel: str

    def normalise(self, payload: Any, *, zone: str) -> ChannelOrder: ...

    def order_id_of(self, payload: Any) -> str: ...


def not_bool(value: Any) -> Any:
    """A pydantic before-validator: JSON true/false is not a number here (bool is an int)."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


def customer_key(raw: str) -> str:
    """A buyer id short enough for orderstream (<= 64): long ciphertexts are hashed."""
    return raw if len(raw) <= 64 else "sha256-" + hashlib.sha256(raw.encode()).hexdigest()[:40]


def unwrap(payload: Any, *paths: tuple[str, ...]) -> Any:
    """The object inside the first envelope present in ``payload``: each path is the keys
    from the outside in, present when its first key holds an object. Without an envelope,
    ``payload`` itself (channels also send the bare object); None when an envelope is
    there but the object inside it is not."""
    for path in paths:
        if isinstance(payload, dict) and isinstance(payload.get(path[0]), dict):
            node: Any = payload
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            return node
    return payload


def order_id_field(obj: Any, *keys: str, missing: str) -> str:
    """The first of ``keys`` in ``obj`` holding a usable order id (a non-empty string or an
    integer, never a boolean), as a string; else InvalidRecord('missing_order_id')."""
    if isinstance(obj, dict):
        for key in keys:
            value = obj.get(key)
            if isinstance(value, bool):
                continue
            if (isinstance(value, str) and value) or isinstance(value, int):
                return str(value)
    raise InvalidRecord("missing_order_id", missing)


def parse_instant(value: Any, zone: str) -> datetime:
    """A channel time to aware UTC: ISO 8601 with offset, naive ISO / 'YYYY-MM-DD HH:MM:SS'
    (read in ``zone``), or epoch seconds / milliseconds (ints or digit strings)."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
        number = float(value)
        seconds = number / 1000 if number > 10**11 else number  # ms after 1973 vs s
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError) as exc:  # e.g. 10**20: no such instant
            raise ValueError(f"epoch time out of range: {value!r}") from exc
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return to_utc(parsed) if parsed.tzinfo else localize(parsed, zone)
    if isinstance(value, datetime):
        return to_utc(value) if value.tzinfo else localize(value, zone)
    raise ValueError(f"not a time: {value!r}")
