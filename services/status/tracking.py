"""Warehouse and carrier news as fulfilment events. Pure: no I/O.

Two shapes come in: our JSON notice (the WMS, or a carrier integration of our own, signed
with HMAC) and a carrier's tracking scan (from a Kuaidi100 push or from polling). A scan gets
the same event id whichever way it came, so a callback and a poll of the same scan are one
event, and the first to arrive is the one applied.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.status.carriers import Scan, Stage, UnknownCarrier, carrier_code
from shared.codec import InvalidRecord, field_errors
from shared.events import (
    Delivered,
    DeliveryException,
    FulfilmentEvent,
    InTransit,
    OrderId,
    OutForDelivery,
    Packed,
    PickedUp,
    Returned,
    UtcDatetime,
    derive_id,
)

EVENT_TYPES: dict[str, type[FulfilmentEvent]] = {
    "Packed": Packed, "PickedUp": PickedUp, "InTransit": InTransit,
    "OutForDelivery": OutForDelivery, "Delivered": Delivered,
    "DeliveryException": DeliveryException, "Returned": Returned,
}
STAGE_EVENTS: dict[Stage, type[FulfilmentEvent]] = {
    Stage.PICKED_UP: PickedUp, Stage.IN_TRANSIT: InTransit,
    Stage.OUT_FOR_DELIVERY: OutForDelivery, Stage.DELIVERED: Delivered,
    Stage.EXCEPTION: DeliveryException, Stage.RETURNED: Returned,
}


def scan_id(scan: Scan) -> str:
    """One id per physical scan, whichever way it reached us."""
    return derive_id("scan", scan.carrier, scan.tracking_number, scan.stage.value,
                     scan.scanned_at.isoformat())


def news(scans: list[Scan], known: datetime | None) -> list[Scan]:
    """The scans at least as new as ``known`` (the order's newest scan): a provider answers
    with every scan so far, and the order has the older ones already. The same second is
    kept, since providers give whole seconds. Re-sending the rest would only be duplicates
    for the order's agent to drop, and on a busy worker they pile up."""
    if known is None:
        return scans
    floor = known.replace(microsecond=0)
    return [s for s in scans if s.scanned_at >= floor]


def scan_event(scan: Scan, order_id: str, source: str, received_at: datetime
               ) -> FulfilmentEvent:
    """A carrier scan as the fulfilment event for ``order_id``."""
    model = STAGE_EVENTS[scan.stage]
    extra = {"detail": scan.description[:512]} if model is DeliveryException else {}
    return model(
        event_id=scan_id(scan), correlation_id=order_id, occurred_at=received_at,
        order_id=order_id, source=source[:64], carrier=scan.carrier,
        tracking_number=scan.tracking_number, location=(scan.location or None),
        scanned_at=scan.scanned_at, **extra,
    )


class Notice(BaseModel):
    """The JSON body of ``POST /v1/fulfilment/{source}`` for a signed JSON source."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    event_type: Literal["Packed", "PickedUp", "InTransit", "OutForDelivery", "Delivered",
                        "DeliveryException", "Returned"]
    order_id: OrderId
    event_id: str | None = Field(default=None, min_length=1, max_length=128,
                                 description="The sender's id: a resend with it is one event")
    carrier: str | None = Field(default=None, max_length=32)
    tracking_number: str | None = Field(default=None, min_length=1, max_length=64)
    location: str | None = Field(default=None, max_length=256)
    scanned_at: UtcDatetime | None = None
    detail: str = Field(default="", max_length=512)


def notice_event(body: bytes, source: str, received_at: datetime) -> FulfilmentEvent:
    """Our JSON notice as a fulfilment event; :class:`InvalidRecord` says what is wrong."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRecord("invalid_json", f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRecord("invalid_notice", "body must be a JSON object")
    try:
        notice = Notice.model_validate(data)
    except ValidationError as exc:
        raise InvalidRecord("invalid_notice", "the notice does not validate",
                            field_errors(exc)) from exc
    carrier = None
    if notice.carrier is not None:
        try:
            carrier = carrier_code(notice.carrier)
        except UnknownCarrier as exc:
            raise InvalidRecord("unknown_carrier", str(exc)) from exc
    if notice.event_type == "PickedUp" and not notice.tracking_number:
        raise InvalidRecord("invalid_notice", "PickedUp needs the carrier's tracking_number")
    if notice.event_id is not None:
        event_id = derive_id("fulfilment", source, notice.event_id)
    else:
        # No sender id: the same fact resent is still one event.
        event_id = derive_id("fulfilment", source, notice.order_id, notice.event_type,
                             notice.tracking_number or "",
                             notice.scanned_at.isoformat() if notice.scanned_at else "")
    model = EVENT_TYPES[notice.event_type]
    extra = {"detail": notice.detail} if model is DeliveryException else {}
    return model(
        event_id=event_id, correlation_id=notice.order_id, occurred_at=received_at,
        order_id=notice.order_id, source=source[:64], carrier=carrier,
        tracking_number=notice.tracking_number, location=notice.location,
        scanned_at=notice.scanned_at, **extra,
    )
