"""Stock rules for one SKU: reserve, release, adjust. Pure: state in, new state and events out.

One SKU's state (stock counts plus its reservations) is one value, so every change of a SKU
is one atomic write, and the partition that owns the SKU applies its commands one at a time.
Every command is idempotent: a reservation is keyed by ``(order_id, line)`` and an
adjustment by its ``event_id``; a replay re-emits the same events (same ids) and changes
nothing.
"""

from __future__ import annotations

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
)

#: How many applied adjustment ids a SKU remembers; a replay only repeats records whose
#: offsets were not committed yet, far fewer than this per SKU.
ADJUSTMENT_MEMORY = 1000


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


class SkuState(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: str
    on_hand: int = 0
    reserved: int = 0
    safety_stock: int = 0
    known: bool = False  # False until the first adjustment: commands for it are rejected
    reservations: dict[str, Reservation] = {}
    applied_adjustments: tuple[str, ...] = ()

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
    changed: bool = False  # state changed: publish a new StockLevel

    def level(self, cause_id: str) -> StockLevel:
        s = self.state
        return StockLevel(
            event_id=derive_id("level", cause_id, s.sku),
            sku=s.sku, on_hand=s.on_hand, reserved=s.reserved, available=s.available,
            safety_stock=s.safety_stock, sellable=s.sellable,
        )


def reservation_key(order_id: str, line: int) -> str:
    return f"{order_id}:{line}"


def new_state(sku: str, default_safety_stock: int) -> SkuState:
    return SkuState(sku=sku, safety_stock=default_safety_stock)


def reserve(state: SkuState, cmd: ReserveStock, *, now: datetime, hold: timedelta) -> Decision:
    key = reservation_key(cmd.order_id, cmd.line)
    existing = state.reservations.get(key)
    if existing is not None:
        return Decision(state, [_outcome_of(existing, cmd)])
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
        return Decision(_with(state, key, res), [rejected], [logged])
    hold_until = cmd.hold_until or now + hold
    res = Reservation(order_id=cmd.order_id, line=cmd.line, quantity=cmd.quantity,
                      state="held", hold_until=hold_until, outcome_event_id=outcome_id)
    new = _with(state, key, res).model_copy(update={"reserved": state.reserved + cmd.quantity})
    movement = Movement(outcome_id, state.sku, "reserve", 0, cmd.quantity, cmd.order_id,
                        cmd.line, "order", "status", now)
    reserved = StockReserved(event_id=outcome_id, hold_until=hold_until, **common)
    return Decision(new, [reserved], [movement], changed=True)


def release(state: SkuState, cmd: ReleaseReservation, *, now: datetime) -> Decision:
    key = reservation_key(cmd.order_id, cmd.line)
    existing = state.reservations.get(key)
    event_id = derive_id("release", cmd.order_id, cmd.line)
    if existing is None:
        # Nothing held yet: remember the release, so a late reserve for this line cannot
        # take stock after its order gave up on it.
        res = Reservation(order_id=cmd.order_id, line=cmd.line, quantity=0, state="cancelled",
                          outcome_event_id=derive_id("reserve-outcome", cmd.order_id, cmd.line),
                          reason="released_before_reserve")
        return Decision(_with(state, key, res))
    if existing.state in ("rejected", "cancelled", "expired", "committed"):
        return Decision(state)  # nothing held any more: releasing changes nothing
    released = ReservationReleased(
        event_id=event_id, correlation_id=cmd.correlation_id, order_id=cmd.order_id,
        line=cmd.line, sku=cmd.sku, quantity=existing.quantity, reason=cmd.reason,
    )
    if existing.state == "released":
        return Decision(state, [released])
    res = existing.model_copy(update={"state": "released", "reason": cmd.reason})
    new = _with(state, key, res).model_copy(update={"reserved": state.reserved - existing.quantity})
    movement = Movement(event_id, state.sku, "release", 0, -existing.quantity, cmd.order_id,
                        cmd.line, cmd.reason, "status", now)
    return Decision(new, [released], [movement], changed=True)


def confirm(state: SkuState, cmd: ConfirmReservation) -> Decision:
    """Payment arrived: the hold no longer expires."""
    key = reservation_key(cmd.order_id, cmd.line)
    res = _existing(state, key, cmd)
    event = ReservationConfirmed(
        event_id=derive_id("confirm", cmd.order_id, cmd.line), correlation_id=cmd.correlation_id,
        order_id=cmd.order_id, line=cmd.line, sku=cmd.sku,
    )
    if res.state in ("confirmed", "committed"):
        return Decision(state, [event])  # a replay: the same answer again
    if res.state != "held":
        raise InvalidRecord("not_held", f"reservation {key} is {res.state}, cannot confirm it")
    confirmed = res.model_copy(update={"state": "confirmed"})  # hold_until kept for replays
    return Decision(_with(state, key, confirmed), [event])


def commit(state: SkuState, cmd: CommitStock, *, now: datetime) -> Decision:
    """Shipped: the units leave the warehouse; on_hand and reserved both drop."""
    key = reservation_key(cmd.order_id, cmd.line)
    res = _existing(state, key, cmd)
    event_id = derive_id("commit", cmd.order_id, cmd.line)
    event = StockCommitted(event_id=event_id, correlation_id=cmd.correlation_id,
                           order_id=cmd.order_id, line=cmd.line, sku=cmd.sku,
                           quantity=res.quantity or 1)
    if res.state == "committed":
        return Decision(state, [event])
    if res.state not in ("held", "confirmed"):
        raise InvalidRecord("not_held", f"reservation {key} is {res.state}, cannot commit it")
    new = _with(state, key, res.model_copy(update={"state": "committed"}))
    new = new.model_copy(update={"on_hand": state.on_hand - res.quantity,
                                 "reserved": state.reserved - res.quantity})
    movement = Movement(event_id, state.sku, "commit", -res.quantity, -res.quantity,
                        cmd.order_id, cmd.line, "shipped", "status", now)
    return Decision(new, [event], [movement], changed=True)


def expire(state: SkuState, cmd: ExpireHolds) -> Decision:
    """Release every unpaid hold whose deadline is at or before ``cmd.due_at``, once."""
    due = [(k, r) for k, r in state.reservations.items()
           if r.state == "held" and r.hold_until is not None and r.hold_until <= cmd.due_at]
    if not due:
        return Decision(state)
    reservations = dict(state.reservations)
    events: list[Event] = []
    movements: list[Movement] = []
    for key, res in sorted(due):
        reservations[key] = res.model_copy(update={"state": "expired"})
        event_id = derive_id("expire", res.order_id, res.line)
        events.append(ReservationExpired(event_id=event_id, correlation_id=res.order_id,
                                         order_id=res.order_id, line=res.line, sku=state.sku,
                                         quantity=res.quantity))
        movements.append(Movement(event_id, state.sku, "expire", 0, -res.quantity,
                                  res.order_id, res.line, "unpaid_hold_expired", "inventory",
                                  cmd.due_at))
    released = sum(r.quantity for _, r in due)
    new = state.model_copy(update={"reservations": reservations,
                                   "reserved": state.reserved - released})
    return Decision(new, events, movements, changed=True)


def due_holds(state: SkuState, now: datetime) -> bool:
    """Whether any unpaid hold of this SKU is due (for the expiry timer)."""
    return any(r.state == "held" and r.hold_until is not None and r.hold_until <= now
               for r in state.reservations.values())


def _existing(state: SkuState, key: str, cmd: InventoryCommand) -> Reservation:
    res = state.reservations.get(key)
    if res is None:
        raise InvalidRecord("unknown_reservation",
                            f"no reservation {key} for {cmd.event_type} on {state.sku}")
    return res


def adjust(state: SkuState, cmd: StockAdjusted) -> Decision:
    if cmd.event_id in state.applied_adjustments:
        return Decision(state)
    delta = cmd.delta if cmd.delta is not None else (cmd.absolute or 0) - state.on_hand
    applied = (*state.applied_adjustments, cmd.event_id)[-ADJUSTMENT_MEMORY:]
    new = state.model_copy(update={
        "on_hand": state.on_hand + delta, "known": True, "applied_adjustments": applied,
    })
    movement = Movement(cmd.event_id, state.sku, "adjust", delta, 0, None, None, cmd.reason,
                        cmd.source, cmd.occurred_at)
    return Decision(new, [], [movement], changed=True)


def set_safety_stock(state: SkuState, cmd: SafetyStockSet) -> Decision:
    if state.safety_stock == cmd.threshold:
        return Decision(state)
    return Decision(state.model_copy(update={"safety_stock": cmd.threshold}), changed=True)


def _refusal(state: SkuState, quantity: int) -> str:
    if not state.known:
        return "unknown_sku"
    if not state.sellable:
        return "not_sellable"
    if state.available < quantity:
        return "insufficient_stock"
    return ""


def _with(state: SkuState, key: str, res: Reservation) -> SkuState:
    return state.model_copy(update={"reservations": {**state.reservations, key: res}})


def _outcome_of(res: Reservation, cmd: ReserveStock) -> Event:
    """The answer a reservation already gave, re-sent unchanged for a replayed command."""
    common = {"event_id": res.outcome_event_id, "correlation_id": cmd.correlation_id,
              "order_id": res.order_id, "line": res.line, "sku": cmd.sku,
              "quantity": res.quantity or cmd.quantity}
    if res.state in ("rejected", "cancelled"):
        return StockRejected(reason=res.reason, available=res.available, **common)
    return StockReserved(hold_until=res.hold_until, **common)  # the original answer
