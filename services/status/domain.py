"""An order's life and its reservation saga. Pure: state in, new state, commands, changes out.

Every output carries an id derived from its cause, so a replayed input yields the same
commands and status changes (consumers dedupe by id) and never moves an order twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict

from shared.codec import InvalidRecord
from shared.events import (
    Event,
    InventoryCommand,
    InventoryOutcome,
    OrderStatus,
    OrderStatusChanged,
    OrderSubmitted,
    ReleaseReservation,
    ReserveStock,
    StockRejected,
    StockReserved,
    derive_id,
)


class LineState(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: str
    quantity: int
    state: Literal["pending", "reserved", "rejected", "released"] = "pending"


class OrderState(BaseModel):
    model_config = ConfigDict(frozen=True)

    order_id: str
    channel: str
    channel_order_id: str
    customer_id: str
    status: OrderStatus
    paid: bool
    lines: dict[str, LineState]
    seen: tuple[str, ...] = ()  # ids of inputs already applied

    @property
    def rejected_skus(self) -> list[str]:
        return sorted({ln.sku for ln in self.lines.values() if ln.state == "rejected"})


@dataclass(frozen=True)
class Decision:
    state: OrderState | None
    commands: list[InventoryCommand] = field(default_factory=list)  # keyed by SKU
    changes: list[OrderStatusChanged] = field(default_factory=list)  # keyed by order_id

    @property
    def changed(self) -> bool:
        return bool(self.commands or self.changes)


def _change(
    state: OrderState, to: OrderStatus, cause: Event, detail: str = ""
) -> OrderStatusChanged:
    return OrderStatusChanged(
        event_id=derive_id("status", state.order_id, to),
        correlation_id=state.order_id,
        order_id=state.order_id,
        channel=state.channel,
        channel_order_id=state.channel_order_id,
        customer_id=state.customer_id,
        from_status=state.status if to != OrderStatus.SUBMITTED else None,
        to_status=to,
        at=cause.occurred_at,
        cause_event_id=cause.event_id,
        detail=detail,
    )


def on_submitted(state: OrderState | None, order: OrderSubmitted) -> Decision:
    """Start the saga: SUBMITTED, and one reservation per line."""
    if state is not None:
        return Decision(state)  # duplicate submission
    state = OrderState(
        order_id=order.order_id,
        channel=order.channel.value,
        channel_order_id=order.channel_order_id,
        customer_id=order.customer.customer_id,
        status=OrderStatus.SUBMITTED,
        paid=order.paid,
        lines={str(ln.line): LineState(sku=ln.sku, quantity=ln.quantity) for ln in order.lines},
        seen=(order.event_id,),
    )
    commands = [
        ReserveStock(
            event_id=derive_id("reserve", order.order_id, ln.line),
            correlation_id=order.order_id,
            order_id=order.order_id, line=ln.line, sku=ln.sku, quantity=ln.quantity,
        )
        for ln in order.lines
    ]
    return Decision(state, commands, [_change(state, OrderStatus.SUBMITTED, order)])


def on_inventory(state: OrderState | None, outcome: InventoryOutcome) -> Decision:
    """Collect reservation results; RESERVED when all lines hold, REJECTED (and release
    what was held) as soon as one line is refused."""
    if state is None:
        raise InvalidRecord("unknown_order",
                            f"no order {outcome.order_id} for {outcome.event_type}")
    if outcome.event_id in state.seen:
        return Decision(state)
    key = str(outcome.line)
    line = state.lines.get(key)
    if line is None:
        raise InvalidRecord("unknown_line", f"order {state.order_id} has no line {key}")
    seen = (*state.seen, outcome.event_id)
    match outcome:
        case StockReserved():
            return _line_reserved(state, key, line, outcome, seen)
        case StockRejected():
            return _line_rejected(state, key, line, outcome, seen)
    return Decision(state.model_copy(update={"seen": seen}))


def _line_reserved(state: OrderState, key: str, line: LineState, outcome: StockReserved,
                   seen: tuple[str, ...]) -> Decision:
    if state.status == OrderStatus.REJECTED:
        # The order already failed: give this late hold straight back.
        lines = {**state.lines, key: line.model_copy(update={"state": "released"})}
        new = state.model_copy(update={"lines": lines, "seen": seen})
        return Decision(new, [_release(state, key, line, "order_rejected")])
    lines = {**state.lines, key: line.model_copy(update={"state": "reserved"})}
    new = state.model_copy(update={"lines": lines, "seen": seen})
    if state.status == OrderStatus.SUBMITTED and all(
        ln.state == "reserved" for ln in lines.values()
    ):
        change = _change(new, OrderStatus.RESERVED, outcome)
        return Decision(new.model_copy(update={"status": OrderStatus.RESERVED}), [], [change])
    return Decision(new)


def _line_rejected(state: OrderState, key: str, line: LineState, outcome: StockRejected,
                   seen: tuple[str, ...]) -> Decision:
    lines = {**state.lines, key: line.model_copy(update={"state": "rejected"})}
    new = state.model_copy(update={"lines": lines, "seen": seen})
    if state.status != OrderStatus.SUBMITTED:
        return Decision(new)
    releases = [
        _release(state, k, ln, "order_rejected") for k, ln in lines.items()
        if ln.state == "reserved"
    ]
    lines = {k: ln.model_copy(update={"state": "released"}) if ln.state == "reserved" else ln
             for k, ln in lines.items()}
    new = new.model_copy(update={"lines": lines})
    change = _change(new, OrderStatus.REJECTED, outcome,
                     detail="out of stock: " + ", ".join(new.rejected_skus))
    return Decision(new.model_copy(update={"status": OrderStatus.REJECTED}), releases, [change])


def _release(state: OrderState, key: str, line: LineState, reason: str) -> ReleaseReservation:
    return ReleaseReservation(
        event_id=derive_id("release-cmd", state.order_id, key),
        correlation_id=state.order_id,
        order_id=state.order_id, line=int(key), sku=line.sku, reason=reason,
    )
