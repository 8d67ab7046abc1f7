"""Stock rules for one SKU: reserve, release, confirm, commit, expire, adjust. Pure: the SKU's
counts and the reservation a command names go in; new counts, the reservations it wrote,
events and ledger movements come out.

A SKU's counts and each of its reservations are separate values (keyed by SKU and by
``order_id:line``), so deciding a command costs the same with 10 or 10,000 reservations
open. The partition that owns the SKU applies its commands one at a time. Every command is
idempotent: a reservation is keyed by ``(order_id, line)`` and an adjustment by its
``event_id``; a replay re-emits the same events (same ids) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from shared.codec import InvalidRecord
from shared.events import (
    CommitStock,
    ConfirmReservation,
    Event,
    ExpireHolds,
    InventoryCommand,
    ReleaseReservation,
    ReservationConfirmed,
    ReservationExpired,
    ReservationReleased,
    ReserveStock,
    SafetyStockSet,
    StockAdjusted,
    StockCommitted,
    StockLevel,
    StockRejected,
    StockReserved,
    derive_id,
    replace,
)


class Reservation(BaseModel):
    model_config = ConfigDict(frozen=True)

    order_id: str
    line: int
    quantity: int
    #: held: counts in ``reserved`` and expires at ``hold_until`` unless confirmed;
    #: confirmed: paid, counts in ``reserved``, never expires; committed: shipped, left
    #: both on_hand and reserved; rejected: refused; released / expired: was held, given
    #: back; cancelled: released before any reserve arrived, so a late reserve is refused.
    state: Literal["held", "confirmed", "committed", "rejected", "released", "expired",
                   "cancelled"]
    hold_until: datetime | None = None
    outcome_event_id: str
    reason: str = ""
    available: int = 0  # what a rejection reported, so a replay repeats it unchanged

    @property
    def holds_stock(self) -> bool:
        return self.state in ("held", "confirmed")

    def due(self, now: datetime) -> bool:
        """An unpaid hold whose deadline has passed (confirmed holds never expire)."""
        return self.state == "held" and self.hold_until is not None and self.hold_until <= now


class SkuState(BaseModel):
    """A SKU's counts. Its reservations are kept beside it, one value each."""

    model_config = ConfigDict(frozen=True)

    sku: str
    on_hand: int = 0
    reserved: int = 0
    safety_stock: int = 0
    known: bool = False  # False until the first adjustment: commands for it are rejected

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved

    @property
    def sellable(self) -> bool:
        return self.known and self.available > self.safety_stock


@dataclass(frozen=True)
class Movement:
    """One ledger row: how on_hand and reserved moved, and why."""

    movement_id: str
    sku: str
    kind: str
    on_hand_delta: int
    reserved_delta: int
    order_id: str | None
    line: int | None
    reason: str
    source: str
    occurred_at: datetime


@dataclass(frozen=True)
class Decision:
    state: SkuState
    events: list[Event] = field(default_factory=list)  # inventory.events, keyed by order_id
    movements: list[Movement] = field(default_factory=list)
    changed: bool = False  # counts changed: publish a new StockLevel
    #: reservations this decision wrote, by ``order_id:line`` (new values)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    #: the event id of an adjustment this decision applied, to be remembered
    adjustment: str | None = None

    def level(self, cause_id: str) -> StockLevel:
        return stock_level(self.state, cause_id)


def stock_level(s: SkuState, cause_id: str) -> StockLevel:
    """What ``stock.levels`` publishes for a SKU after the change ``cause_id``."""
    return StockLevel(
        event_id=derive_id("level", cause_id, s.sku),
        sku=s.sku, on_hand=s.on_hand, reserved=s.reserved, available=s.available,
        safety_stock=s.safety_stock, sellable=s.sellable,
    )


def reservation_key(order_id: str, line: int) -> str:
    return f"{order_id}:{line}"


def new_state(sku: str, default_safety_stock: int) -> SkuState:
    return SkuState(sku=sku, safety_stock=default_safety_stock)


def reserve(state: SkuState, existing: Reservation | None, cmd: ReserveStock, *,
            now: datetime, hold: timedelta) -> Decision:
    """Hold ``cmd.quantity`` units, or refuse with a reason; ``existing`` is the line's
    reservation if one was ever written (a replay, or a release that came first)."""
    if existing is not None:
        return Decision(state, [_outcome_of(existing, cmd)])
    key = reservation_key(cmd.order_id, cmd.line)
    common = {"correlation_id": cmd.correlation_id, "order_id": cmd.order_id,
              "line": cmd.line, "sku": cmd.sku, "quantity": cmd.quantity}
    outcome_id = derive_id("reserve-outcome", cmd.order_id, cmd.line)
    reason = _refusal(state, cmd.quantity)
    if reason:
        rejected = StockRejected(event_id=outcome_id, reason=reason,
                                 available=max(state.available, 0), **common)
        res = Reservation(order_id=cmd.order_id, line=cmd.line, quantity=cmd.quantity,
                          state="rejected", outcome_event_id=outcome_id, reason=reason,
                          available=rejected.available)
        # Logged with zero deltas: the operation log shows every refusal (stock-out rate).
        logged = Movement(outcome_id, state.sku, "reject", 0, 0, cmd.order_id, cmd.line,
                          reason, "status", now)
        return Decision(state, [rejected], [logged], reservations={key: res})
    # A paid order's hold is confirmed at once: it never expires, and costs no
    # ConfirmReservation round trip. Its reservation keeps no deadline, which is also how a
    # replay knows its answer said "confirmed".
    hold_until = None if cmd.paid else cmd.hold_until or now + hold
    res = Reservation(order_id=cmd.order_id, line=cmd.line, quantity=cmd.quantity,
                      state="confirmed" if cmd.paid else "held", hold_until=hold_until,
                      outcome_event_id=outcome_id)
    new = replace(state, {"reserved": state.reserved + cmd.quantity})
    movement = Movement(outcome_id, state.sku, "reserve", 0, cmd.quantity, cmd.order_id,
                        cmd.line, "order", "status", now)
    # (Validated construction: pydantic's model_construct is slower in Python than its
    # validator is in Rust, measured on the hot path.)
    reserved = StockReserved(event_id=outcome_id, hold_until=hold_until,
                             confirmed=cmd.paid, **common)
    return Decision(new, [reserved], [movement], changed=True, reservations={key: res})


def release(state: SkuState, existing: Reservation | None, cmd: ReleaseReservation, *,
            now: datetime) -> Decision:
    key = reservation_key(cmd.order_id, cmd.line)
    event_id = derive_id("release", cmd.order_id, cmd.line)
    if existing is None:
        # Nothing held yet: remember the release, so a late reserve for this line cannot
        # take stock after its order gave up on it.
        res = Reservation(order_id=cmd.order_id, line=cmd.line, quantity=0, state="cancelled",
                          outcome_event_id=derive_id("reserve-outcome", cmd.order_id, cmd.line),
                          reason="released_before_reserve")
        return Decision(state, reservations={key: res})
    if existing.state in ("rejected", "cancelled", "expired", "committed"):
        return Decision(state)  # nothing held any more: releasing changes nothing
    released = ReservationReleased(
        event_id=event_id, correlation_id=cmd.correlation_id, order_id=cmd.order_id,
        line=cmd.line, sku=cmd.sku, quantity=existing.quantity, reason=cmd.reason,
    )
    if existing.state == "released":
        return Decision(state, [released])
    res = replace(existing, {"state": "released", "reason": cmd.reason})
    new = replace(state, {"reserved": state.reserved - existing.quantity})
    movement = Movement(event_id, state.sku, "release", 0, -existing.quantity, cmd.order_id,
                        cmd.line, cmd.reason, "status", now)
    return Decision(new, [released], [movement], changed=True, reservations={key: res})


def confirm(state: SkuState, existing: Reservation | None, cmd: ConfirmReservation) -> Decision:
    """Payment arrived: the hold no longer expires."""
    key = reservation_key(cmd.order_id, cmd.line)
    res = _existing(state, existing, key, cmd)
    event = ReservationConfirmed(
        event_id=derive_id("confirm", cmd.order_id, cmd.line), correlation_id=cmd.correlation_id,
        order_id=cmd.order_id, line=cmd.line, sku=cmd.sku,
    )
    if res.state in ("confirmed", "committed"):
        return Decision(state, [event])  # a replay: the same answer again
    if res.state != "held":
        raise InvalidRecord("not_held", f"reservation {key} is {res.state}, cannot confirm it")
    confirmed = replace(res, {"state": "confirmed"})  # hold_until kept for replays
    return Decision(state, [event], reservations={key: confirmed})


def commit(state: SkuState, existing: Reservation | None, cmd: CommitStock, *,
           now: datetime) -> Decision:
    """Shipped: the units leave the warehouse; on_hand and reserved both drop."""
    key = reservation_key(cmd.order_id, cmd.line)
    res = _existing(state, existing, key, cmd)
    event_id = derive_id("commit", cmd.order_id, cmd.line)
    event = StockCommitted(event_id=event_id, correlation_id=cmd.correlation_id,
                           order_id=cmd.order_id, line=cmd.line, sku=cmd.sku,
                           quantity=res.quantity or 1)
    if res.state == "committed":
        return Decision(state, [event])
    if res.state not in ("held", "confirmed"):
        raise InvalidRecord("not_held", f"reservation {key} is {res.state}, cannot commit it")
    new = replace(state, {"on_hand": state.on_hand - res.quantity,
                          "reserved": state.reserved - res.quantity})
    movement = Movement(event_id, state.sku, "commit", -res.quantity, -res.quantity,
                        cmd.order_id, cmd.line, "shipped", "status", now)
    return Decision(new, [event], [movement], changed=True,
                    reservations={key: replace(res, {"state": "committed"})})


def expire(state: SkuState, holds: Iterable[Reservation], cmd: ExpireHolds) -> Decision:
    """Release every unpaid hold of ``holds`` (the SKU's reservations that hold stock) whose
    deadline is at or before ``cmd.due_at``, once."""
    due = sorted((r for r in holds if r.due(cmd.due_at)), key=lambda r: (r.order_id, r.line))
    if not due:
        return Decision(state)
    written: dict[str, Reservation] = {}
    events: list[Event] = []
    movements: list[Movement] = []
    for res in due:
        written[reservation_key(res.order_id, res.line)] = res.model_copy(
            update={"state": "expired"})
        event_id = derive_id("expire", res.order_id, res.line)
        events.append(ReservationExpired(event_id=event_id, correlation_id=res.order_id,
                                         order_id=res.order_id, line=res.line, sku=state.sku,
                                         quantity=res.quantity))
        movements.append(Movement(event_id, state.sku, "expire", 0, -res.quantity,
                                  res.order_id, res.line, "unpaid_hold_expired", "inventory",
                                  cmd.due_at))
    released = sum(r.quantity for r in due)
    new = replace(state, {"reserved": state.reserved - released})
    return Decision(new, events, movements, changed=True, reservations=written)


def _existing(state: SkuState, res: Reservation | None, key: str,
              cmd: InventoryCommand) -> Reservation:
    if res is None:
        raise InvalidRecord("unknown_reservation",
                            f"no reservation {key} for {cmd.event_type} on {state.sku}")
    return res


def adjust(state: SkuState, cmd: StockAdjusted, *, applied: bool = False) -> Decision:
    """A delta (restock, store sale, damage) or an absolute count (stocktake); ``applied``
    says this adjustment's event id was applied before (a replay: nothing changes)."""
    if applied:
        return Decision(state)
    delta = cmd.delta if cmd.delta is not None else (cmd.absolute or 0) - state.on_hand
    new = replace(state, {"on_hand": state.on_hand + delta, "known": True})
    movement = Movement(cmd.event_id, state.sku, "adjust", delta, 0, None, None, cmd.reason,
                        cmd.source, cmd.occurred_at)
    return Decision(new, [], [movement], changed=True, adjustment=cmd.event_id)


def set_safety_stock(state: SkuState, cmd: SafetyStockSet) -> Decision:
    if state.safety_stock == cmd.threshold:
        return Decision(state)
    return Decision(replace(state, {"safety_stock": cmd.threshold}), changed=True)


def _refusal(state: SkuState, quantity: int) -> str:
    if not state.known:
        return "unknown_sku"
    if not state.sellable:
        return "not_sellable"
    if state.available < quantity:
        return "insufficient_stock"
    return ""


def _outcome_of(res: Reservation, cmd: ReserveStock) -> Event:
    """The answer a reservation already gave, re-sent unchanged for a replayed command."""
    common = {"event_id": res.outcome_event_id, "correlation_id": cmd.correlation_id,
              "order_id": res.order_id, "line": res.line, "sku": cmd.sku,
              "quantity": res.quantity or cmd.quantity}
    if res.state in ("rejected", "cancelled"):
        return StockRejected(reason=res.reason, available=res.available, **common)
    # The original answer: only a hold confirmed at its reservation has no deadline.
    return StockReserved(hold_until=res.hold_until, confirmed=res.hold_until is None,
                         **common)
