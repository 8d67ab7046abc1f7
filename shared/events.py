"""Every event and command exchanged on orderstream's Kafka topics, as frozen pydantic models.

Conventions (see the architecture's topic table):

* every model carries ``event_id``, ``event_type`` (a ``Literal``, so a topic that
  carries several types decodes through a discriminated union), ``schema_version``,
  ``occurred_at`` (tz-aware, normalised to UTC; naive values are rejected) and
  ``correlation_id`` (the id that ties every event of one order together);
* unknown fields are rejected (``extra="forbid"``): a producer that sends a field we do
  not know is told so through the dead-letter topic instead of silently losing data;
* money is ``Decimal`` with an ISO 4217 currency; quantities are positive ``int``.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    StringConstraints,
    model_validator,
)

from shared.timeutil import to_utc, utc_now

M = TypeVar("M", bound="BaseModel")

#: Namespace for deterministic event ids: replaying the same cause yields the same id.
EVENT_NAMESPACE = uuid.UUID("6f1b3c62-7a51-4d3e-9f0e-0c5e8b7a4d21")


_NAMESPACE_BYTES = EVENT_NAMESPACE.bytes


def derive_id(*parts: object) -> str:
    """A stable id for an effect of a cause, so a replayed cause yields the same id:
    ``str(uuid.uuid5(EVENT_NAMESPACE, "|".join(parts)))``, computed without the UUID
    object (this runs once per reservation on the inventory hot path)."""
    digest = bytearray(hashlib.sha1(
        _NAMESPACE_BYTES + "|".join([str(p) for p in parts]).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_set = object.__setattr__


def replace(model: M, update: Mapping[str, Any]) -> M:
    """``model.model_copy(update=update)`` for a model without extra fields or private
    attributes (every frozen state and event model here), at about a third of the cost: the
    domain rules copy a state several times per input. Like ``model_copy``, the new values
    are not validated."""
    cls = type(model)
    new = cls.__new__(cls)
    values = model.__dict__.copy()
    values.update(update)
    _set(new, "__dict__", values)
    _set(new, "__pydantic_extra__", None)
    _set(new, "__pydantic_fields_set__", model.__pydantic_fields_set__ | update.keys())
    _set(new, "__pydantic_private__", None)
    return new


def new_id() -> str:
    return str(uuid.uuid4())


UtcDatetime = Annotated[AwareDatetime, AfterValidator(to_utc)]
Sku = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,63}$"),
    Field(description="Stock-keeping unit: 1-64 of A-Z a-z 0-9 . _ - /", examples=["SKU-1001"]),
]
Currency = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z]{3}$"),
    Field(description="ISO 4217 currency code", examples=["CNY", "USD"]),
]
Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=4)]
OrderId = Annotated[
    str, StringConstraints(min_length=1, max_length=64), Field(description="orderstream order id")
]


class Channel(StrEnum):
    """The sales channels orderstream ingests orders from."""

    TMALL = "tmall"
    JD = "jd"
    PINDUODUO = "pinduoduo"
    DOUYIN = "douyin"
    SHOPIFY = "shopify"
    WEB = "web"
    POS = "pos"


class OrderStatus(StrEnum):
    SUBMITTED = "SUBMITTED"
    RESERVED = "RESERVED"
    PAID = "PAID"
    PACKED = "PACKED"
    PICKED_UP = "PICKED_UP"
    IN_TRANSIT = "IN_TRANSIT"
    OUT_FOR_DELIVERY = "OUT_FOR_DELIVERY"
    DELIVERED = "DELIVERED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    DELIVERY_EXCEPTION = "DELIVERY_EXCEPTION"
    RETURNED = "RETURNED"


class Event(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    event_id: str = Field(default_factory=new_id, min_length=1, max_length=64,
                          description="Unique id; deterministic when derived from a cause")
    schema_version: int = Field(default=1, ge=1)
    occurred_at: UtcDatetime = Field(default_factory=utc_now,
                                     description="When it happened, UTC (tz-aware)")
    correlation_id: str = Field(default="", max_length=64,
                                description="Ties together every event of one order")


# --- orders.submitted -------------------------------------------------------------------


class Customer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    customer_id: str = Field(min_length=1, max_length=64)
    nickname: str | None = Field(default=None, max_length=64)
    email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=32,
                              description="Mobile number; masked numbers (with *) reach no one")
    wechat_openid: str | None = Field(default=None, max_length=64,
                                      description="The customer's openid on the shop's WeChat "
                                                  "Official Account")
    locale: str = Field(default="zh-CN", max_length=16)
    time_zone: str = Field(default="Asia/Shanghai", max_length=64, description="IANA zone name")
    vip: bool = False


class OrderLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    line: PositiveInt = Field(description="1-based line number within the order")
    sku: Sku
    quantity: PositiveInt
    unit_price: Money


class OrderSubmitted(Event):
    """A channel's order, normalised: one per (channel, channel_order_id)."""

    event_type: Literal["OrderSubmitted"] = "OrderSubmitted"
    order_id: OrderId
    channel: Channel
    channel_order_id: str = Field(min_length=1, max_length=64)
    customer: Customer
    lines: tuple[OrderLine, ...] = Field(min_length=1, max_length=500)
    currency: Currency
    total: Money
    paid: bool = Field(default=False, description="The channel already collected payment")
    placed_at: UtcDatetime = Field(description="When the customer placed it, UTC")


# --- orders.dlq -------------------------------------------------------------------------


class RejectedMessage(Event):
    """A record that could not be processed, with why and its original bytes."""

    event_type: Literal["RejectedMessage"] = "RejectedMessage"
    service: str
    reason: str = Field(description="Short machine-readable reason, e.g. invalid_json")
    error: str = Field(description="Human-readable explanation")
    field_errors: tuple[dict[str, Any], ...] = ()
    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None
    original_key: str | None = Field(default=None, description="Key bytes, base64")
    original_value: str = Field(description="Value bytes, base64")
    original_headers: dict[str, str] = Field(default_factory=dict)


# --- payments.events --------------------------------------------------------------------


class PaymentConfirmed(Event):
    event_type: Literal["PaymentConfirmed"] = "PaymentConfirmed"
    order_id: OrderId
    amount: Money
    currency: Currency
    payment_ref: str = Field(default="", max_length=128)


class PaymentFailed(Event):
    event_type: Literal["PaymentFailed"] = "PaymentFailed"
    order_id: OrderId
    reason: str = Field(max_length=256)


class OrderCancelled(Event):
    """The customer, the channel or an operator cancelled the order. Status-tracking cancels
    it and releases its stock if it has not left the warehouse; later it is only recorded."""

    event_type: Literal["OrderCancelled"] = "OrderCancelled"
    order_id: OrderId
    reason: str = Field(max_length=256, examples=["customer_request", "fraud_check"])
    source: str = Field(default="channel", max_length=64, examples=["channel", "operator:li"])


# --- inventory.commands (keyed by SKU) ----------------------------------------------------


class InventoryCommand(Event):
    order_id: OrderId
    line: PositiveInt
    sku: Sku


class ReserveStock(InventoryCommand):
    event_type: Literal["ReserveStock"] = "ReserveStock"
    quantity: PositiveInt
    hold_until: UtcDatetime | None = Field(
        default=None, description="Unpaid holds expire then; None uses the service default"
    )
    paid: bool = Field(
        default=False,
        description="The order is paid already: hold the stock as confirmed (it never "
                    "expires), so no ConfirmReservation has to follow",
    )


class ConfirmReservation(InventoryCommand):
    event_type: Literal["ConfirmReservation"] = "ConfirmReservation"


class ReleaseReservation(InventoryCommand):
    event_type: Literal["ReleaseReservation"] = "ReleaseReservation"
    reason: str = Field(max_length=128)


class CommitStock(InventoryCommand):
    event_type: Literal["CommitStock"] = "CommitStock"


class ExpireHolds(Event):
    """Inventory's own tick for one SKU: release unpaid holds whose deadline is at or before
    ``due_at``. Sent by the inventory service to itself so that expiry, a state change,
    happens inside the SKU's partition loop like every other change."""

    event_type: Literal["ExpireHolds"] = "ExpireHolds"
    sku: Sku
    due_at: UtcDatetime


# --- stock.adjustments (keyed by SKU) -----------------------------------------------------


class StockAdjusted(Event):
    """A stock movement from outside orders: restock, store sale, damage, or a stocktake."""

    event_type: Literal["StockAdjusted"] = "StockAdjusted"
    sku: Sku
    delta: int | None = Field(default=None, description="Relative change of on_hand")
    absolute: int | None = Field(default=None, ge=0, description="Counted on_hand (stocktake)")
    reason: str = Field(max_length=64, examples=["restock", "pos_sale", "damage", "stocktake"])
    source: str = Field(max_length=64, examples=["wms", "pos-store-12", "operator:li"])

    @model_validator(mode="after")
    def _one_of_delta_or_absolute(self) -> StockAdjusted:
        if (self.delta is None) == (self.absolute is None):
            raise ValueError("exactly one of delta or absolute must be given")
        if self.delta == 0:
            raise ValueError("delta must not be zero")
        return self


class SafetyStockSet(Event):
    event_type: Literal["SafetyStockSet"] = "SafetyStockSet"
    sku: Sku
    threshold: int = Field(ge=0)
    source: str = Field(max_length=64)


# --- inventory.events (keyed by order_id) -------------------------------------------------


class InventoryOutcome(Event):
    order_id: OrderId
    line: PositiveInt
    sku: Sku


class StockReserved(InventoryOutcome):
    event_type: Literal["StockReserved"] = "StockReserved"
    quantity: PositiveInt
    hold_until: UtcDatetime | None = Field(
        default=None, description="When the unpaid hold expires; None for a confirmed one")
    confirmed: bool = Field(
        default=False,
        description="Held as confirmed (the command said the order is paid): it never "
                    "expires, and no ReservationConfirmed follows")


class StockRejected(InventoryOutcome):
    event_type: Literal["StockRejected"] = "StockRejected"
    quantity: PositiveInt
    reason: str = Field(examples=["insufficient_stock", "not_sellable", "unknown_sku"])
    available: int = 0


class ReservationReleased(InventoryOutcome):
    event_type: Literal["ReservationReleased"] = "ReservationReleased"
    quantity: PositiveInt
    reason: str


class ReservationExpired(InventoryOutcome):
    event_type: Literal["ReservationExpired"] = "ReservationExpired"
    quantity: PositiveInt


class ReservationConfirmed(InventoryOutcome):
    event_type: Literal["ReservationConfirmed"] = "ReservationConfirmed"


class StockCommitted(InventoryOutcome):
    event_type: Literal["StockCommitted"] = "StockCommitted"
    quantity: PositiveInt


# --- stock.levels (compacted, keyed by SKU) -----------------------------------------------


class StockLevel(Event):
    event_type: Literal["StockLevel"] = "StockLevel"
    sku: Sku
    on_hand: int
    reserved: int = Field(ge=0)
    available: int
    safety_stock: int = Field(ge=0)
    sellable: bool


# --- fulfilment.events (keyed by order_id) ------------------------------------------------


class FulfilmentEvent(Event):
    order_id: OrderId
    source: str = Field(max_length=64, examples=["wms", "carrier:sf", "poller:kuaidi100"])
    carrier: str | None = Field(default=None, max_length=32, examples=["SF", "ZTO", "YTO"])
    tracking_number: str | None = Field(default=None, max_length=64)
    location: str | None = Field(default=None, max_length=256)
    scanned_at: UtcDatetime | None = Field(default=None, description="Carrier scan time, UTC")


class Packed(FulfilmentEvent):
    event_type: Literal["Packed"] = "Packed"


class PickedUp(FulfilmentEvent):
    event_type: Literal["PickedUp"] = "PickedUp"


class InTransit(FulfilmentEvent):
    event_type: Literal["InTransit"] = "InTransit"


class OutForDelivery(FulfilmentEvent):
    event_type: Literal["OutForDelivery"] = "OutForDelivery"


class Delivered(FulfilmentEvent):
    event_type: Literal["Delivered"] = "Delivered"


class DeliveryException(FulfilmentEvent):
    event_type: Literal["DeliveryException"] = "DeliveryException"
    detail: str = Field(default="", max_length=512)


class Returned(FulfilmentEvent):
    event_type: Literal["Returned"] = "Returned"


# --- orders.status (public, keyed by order_id) --------------------------------------------


class OrderStatusChanged(Event):
    """The public status stream: one record per change of an order's status."""

    event_type: Literal["OrderStatusChanged"] = "OrderStatusChanged"
    order_id: OrderId
    channel: Channel
    channel_order_id: str
    customer_id: str
    from_status: OrderStatus | None = Field(description="None for the first status")
    to_status: OrderStatus
    at: UtcDatetime = Field(description="When the order entered to_status, UTC")
    cause_event_id: str = Field(description="event_id of the event that caused the change")
    tracking_number: str | None = Field(default=None, description="Carrier tracking number, "
                                        "once the order has one")
    carrier: str | None = Field(default=None, max_length=32, examples=["SF", "ZTO", "YTO"])
    detail: str = Field(default="", max_length=512,
                        description="e.g. the SKUs that ran out for REJECTED")


# --- notifications.outcomes (keyed by order_id) -------------------------------------------


class NotificationOutcome(Event):
    order_id: OrderId
    status: OrderStatus
    channel: str = Field(examples=["sms", "wechat", "inapp", "email"])
    recipient: str = Field(description="Masked recipient")
    message_id: str = Field(default="", max_length=64,
                            description="The one logical message for (order, status, channel)")
    provider: str = Field(default="", max_length=32,
                          examples=["aliyun", "tencent", "wechat", "smtp", "inbox"])


class NotificationAttempted(NotificationOutcome):
    event_type: Literal["NotificationAttempted"] = "NotificationAttempted"
    attempt: PositiveInt = 1


class NotificationDelivered(NotificationOutcome):
    event_type: Literal["NotificationDelivered"] = "NotificationDelivered"
    provider_message_id: str = ""


class NotificationFailed(NotificationOutcome):
    event_type: Literal["NotificationFailed"] = "NotificationFailed"
    reason: str
    retryable: bool


# --- ops.alerts (keyed by alert key) ------------------------------------------------------


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(Event):
    event_type: Literal["Alert"] = "Alert"
    alert_key: str = Field(max_length=256)
    kind: str = Field(max_length=64, examples=["stale_order", "stock_mismatch", "delivery_rate"])
    severity: Severity
    subject: str = Field(max_length=256)
    details: dict[str, Any] = Field(default_factory=dict)


#: Every concrete model, by its ``event_type``.
ALL_EVENTS: dict[str, type[Event]] = {
    m.model_fields["event_type"].default: m
    for m in (
        OrderSubmitted, RejectedMessage, PaymentConfirmed, PaymentFailed, OrderCancelled,
        ReserveStock, ConfirmReservation, ReleaseReservation, CommitStock, ExpireHolds,
        StockAdjusted, SafetyStockSet,
        StockReserved, StockRejected, ReservationReleased, ReservationExpired,
        ReservationConfirmed, StockCommitted, StockLevel,
        Packed, PickedUp, InTransit, OutForDelivery, Delivered, DeliveryException, Returned,
        OrderStatusChanged,
        NotificationAttempted, NotificationDelivered, NotificationFailed,
        Alert,
    )
}
