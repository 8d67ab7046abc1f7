"""An order's life and its reservation saga. Pure: state in, new state, commands, changes out.

The life, on the main path (rank in brackets)::

    SUBMITTED(0) → RESERVED(1) → PAID(2) → PACKED(3) → PICKED_UP(4) → IN_TRANSIT(5)
                 → OUT_FOR_DELIVERY(6) → DELIVERED(7)

and the exits REJECTED (a line ran out; only from SUBMITTED), CANCELLED (customer, channel
or an unpaid hold that expired; not once the parcel left the warehouse),
DELIVERY_EXCEPTION (the carrier reports a problem; the parcel may still go on; before any
pickup scan it means that scan was missed) and RETURNED.

Rules, each tested in ``tests/unit/status``:

- A duplicate input (same ``event_id``) changes nothing.
- A forward move may skip statuses (DELIVERED straight after PICKED_UP): the order jumps.
- A late input for an earlier stage is written to the history (``applied=False``) and never
  moves the order backwards. News for the current stage (another IN_TRANSIT scan) is kept as
  a carrier event and resets the "no news" clock, without a status change.
- Fulfilment news that arrives before the saga settled (no order yet, or still SUBMITTED)
  is parked on the order and applied, in arrival order, as soon as it is RESERVED.
- Saga: one ``ReserveStock`` per line on submission; RESERVED when every line holds;
  REJECTED (and every held line released) when one is refused; holds confirmed once the
  order passes PAID; stock committed once it passes PICKED_UP; released on cancel/expiry.
  An order the channel says is paid marks its ``ReserveStock`` paid: inventory holds it as
  confirmed at once (it never expires), and no ``ConfirmReservation`` round trip follows.

Every output carries an id derived from its cause, so a replayed input yields the same
commands and status changes (consumers dedupe by id) and never moves an order twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from shared.codec import InvalidRecord
from shared.events import (
    ALL_EVENTS,
    CommitStock,
    ConfirmReservation,
    Delivered,
    DeliveryException,
    Event,
    FulfilmentEvent,
    InTransit,
    InventoryCommand,
    InventoryOutcome,
    OrderCancelled,
    OrderStatus,
    OrderStatusChanged,
    OrderSubmitted,
    OutForDelivery,
    Packed,
    PaymentConfirmed,
    PaymentFailed,
    PickedUp,
    ReleaseReservation,
    ReservationConfirmed,
    ReservationExpired,
    ReservationReleased,
    ReserveStock,
    Returned,
    StockCommitted,
    StockRejected,
    StockReserved,
    derive_id,
    replace,
)

S = OrderStatus

#: The main path, in order.
PATH: tuple[OrderStatus, ...] = (
    S.SUBMITTED, S.RESERVED, S.PAID, S.PACKED, S.PICKED_UP, S.IN_TRANSIT,
    S.OUT_FOR_DELIVERY, S.DELIVERED,
)
RANK: dict[OrderStatus, int] = {status: n for n, status in enumerate(PATH)}
TERMINAL = frozenset({S.REJECTED, S.CANCELLED, S.RETURNED})
#: Statuses whose parcel is with the carrier: polled when quiet, deadline from the last scan.
WITH_CARRIER = frozenset({S.PICKED_UP, S.IN_TRANSIT, S.OUT_FOR_DELIVERY,
                          S.DELIVERY_EXCEPTION})
#: A cancellation is accepted up to here; after it the parcel has left the warehouse.
LAST_CANCELLABLE = RANK[S.PACKED]
#: Fulfilment news parked per order before the saga settles; more is a broken sender.
MAX_PARKED = 200

FULFILMENT_STATUS: dict[type[FulfilmentEvent], OrderStatus] = {
    Packed: S.PACKED, PickedUp: S.PICKED_UP, InTransit: S.IN_TRANSIT,
    OutForDelivery: S.OUT_FOR_DELIVERY, Delivered: S.DELIVERED,
    DeliveryException: S.DELIVERY_EXCEPTION, Returned: S.RETURNED,
}

LineStateName = Literal["pending", "reserved", "confirmed", "committed", "rejected",
                        "released", "expired"]
HOLDING = frozenset({"reserved", "confirmed"})


class LineState(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: str
    quantity: int
    state: LineStateName = "pending"


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
    #: when the order entered ``status`` (the cause's time: a scan time when there is one)
    status_since: datetime | None = None
    placed_at: datetime | None = None
    carrier: str | None = None
    tracking_number: str | None = None
    #: the newest carrier scan time, and when any news about the order last arrived
    last_scan_at: datetime | None = None
    last_news_at: datetime | None = None
    #: the main-path rank the parcel had reached when a DELIVERY_EXCEPTION interrupted it
    exception_rank: int | None = None
    confirmed: bool = False  # ConfirmReservation sent for every held line
    committed: bool = False  # CommitStock sent for every held line
    entered: dict[str, int] = {}  # status -> times entered (ids of a re-entry differ)
    #: fulfilment news waiting for the saga to settle (event JSON, arrival order)
    parked: tuple[dict[str, Any], ...] = ()
    version: int = 0  # inputs applied; the store never writes an older version over a newer

    @property
    def rejected_skus(self) -> list[str]:
        return sorted({ln.sku for ln in self.lines.values() if ln.state == "rejected"})

    @property
    def rank(self) -> int | None:
        """The main-path rank, or for DELIVERY_EXCEPTION the rank it interrupted."""
        if self.status == S.DELIVERY_EXCEPTION:
            return self.exception_rank
        return RANK.get(self.status)


class Waiting(BaseModel):
    """News for an order not submitted yet (topics are not ordered across each other)."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    events: tuple[dict[str, Any], ...] = ()
    since: datetime | None = None


@dataclass(frozen=True)
class HistoryNote:
    """A history row that is not a status change: a late or refused input, kept for audit."""

    event_id: str
    order_id: str
    status: OrderStatus  # the order's status, unchanged
    reported: str  # what the input said (a status name or an event type)
    at: datetime
    cause_event_id: str
    detail: str


@dataclass(frozen=True)
class Decision:
    state: OrderState | Waiting | None
    commands: list[InventoryCommand] = field(default_factory=list)  # keyed by SKU
    changes: list[OrderStatusChanged] = field(default_factory=list)  # keyed by order_id
    notes: list[HistoryNote] = field(default_factory=list)
    #: fulfilment inputs taken in (applied, news or late): the carrier-event log
    scans: list[FulfilmentEvent] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.commands or self.changes)


# --- the entry point -----------------------------------------------------------------------


def decide(state: OrderState | Waiting | None, event: Event) -> Decision:
    """Apply one input to an order. Raises :class:`InvalidRecord` for an input that can never
    apply (its record goes to the dead-letter topic)."""
    if isinstance(event, OrderSubmitted):
        return on_submitted(state, event)
    if isinstance(state, Waiting) or state is None:
        return _park_unknown(state, event)
    if event.event_id in state.seen:
        return Decision(state)
    match event:
        case InventoryOutcome():
            return on_inventory(state, event)
        case PaymentConfirmed():
            return _on_paid(state, event)
        case PaymentFailed():
            return _note(_seen(state, event), event, "PaymentFailed",
                         f"payment failed: {event.reason}")
        case OrderCancelled():
            return _on_cancelled(state, event)
        case FulfilmentEvent():
            return _on_fulfilment(state, event)
    raise InvalidRecord("unexpected_event",
                        f"status-tracking does not take {event.event_type} events")


# --- submission and the reservation saga ---------------------------------------------------


def on_submitted(state: OrderState | Waiting | None, order: OrderSubmitted) -> Decision:
    """Start the saga: SUBMITTED, and one reservation per line. News that came first waits."""
    if isinstance(state, OrderState):
        return Decision(state)  # duplicate submission
    waiting = state.events if isinstance(state, Waiting) else ()
    new = OrderState(
        order_id=order.order_id,
        channel=order.channel.value,
        channel_order_id=order.channel_order_id,
        customer_id=order.customer.customer_id,
        status=S.SUBMITTED,
        paid=order.paid,
        lines={str(ln.line): LineState(sku=ln.sku, quantity=ln.quantity) for ln in order.lines},
        seen=(order.event_id,),
        status_since=order.occurred_at,
        placed_at=order.placed_at,
        last_news_at=order.occurred_at,
        entered={S.SUBMITTED.value: 1},
        version=1,
    )
    commands: list[InventoryCommand] = [
        ReserveStock(
            event_id=derive_id("reserve", order.order_id, ln.line),
            correlation_id=order.order_id,
            order_id=order.order_id, line=ln.line, sku=ln.sku, quantity=ln.quantity,
            paid=order.paid,  # paid at the channel: held as confirmed, no confirm round trip
        )
        for ln in order.lines
    ]
    first = _change(new, None, S.SUBMITTED, order)
    decision = Decision(new, commands, [first])
    # What came first applies now, in arrival order: payments and cancellations at once,
    # fulfilment news waits on (parked) while the order is SUBMITTED.
    for data in waiting:
        decision = _then(decision, _load(data))
    return decision


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
    state = _seen(state, outcome)
    match outcome:
        case StockReserved():
            return _line_reserved(state, key, line, outcome)
        case StockRejected():
            return _line_rejected(state, key, line, outcome)
        case ReservationExpired():
            return _line_expired(state, key, line, outcome)
        case ReservationConfirmed():
            return Decision(_line(state, key, line, "confirmed", only_from=("reserved",)))
        case StockCommitted():
            return Decision(_line(state, key, line, "committed",
                                  only_from=("reserved", "confirmed")))
        case ReservationReleased():
            return Decision(_line(state, key, line, "released",
                                  only_from=("pending", "reserved", "confirmed")))
    return Decision(state)


def _line(state: OrderState, key: str, line: LineState, to: LineStateName, *,
          only_from: tuple[str, ...]) -> OrderState:
    if line.state not in only_from:
        return state
    return replace(state, {"lines": {**state.lines, key: replace(line, {"state": to})}})


def _line_reserved(state: OrderState, key: str, line: LineState,
                   outcome: StockReserved) -> Decision:
    if state.status in TERMINAL and line.state == "pending":
        # The order already failed or was cancelled: give this late hold straight back.
        new = _line(state, key, line, "released", only_from=("pending",))
        return Decision(new, [_release(state, key, line, f"order_{state.status.lower()}")])
    # A hold inventory confirmed at once (the order was paid) needs no ConfirmReservation.
    new = _line(state, key, line, "confirmed" if outcome.confirmed else "reserved",
                only_from=("pending",))
    if state.status == S.SUBMITTED and all(ln.state in HOLDING for ln in new.lines.values()):
        decision = _move(new, S.RESERVED, outcome)
        if new.paid:  # the channel collected payment already: straight on to PAID
            decision = _then_move(decision, S.PAID, outcome)
        return _settled(decision)
    return Decision(new)


def _line_rejected(state: OrderState, key: str, line: LineState,
                   outcome: StockRejected) -> Decision:
    new = _line(state, key, line, "rejected", only_from=("pending",))
    if state.status != S.SUBMITTED:
        return Decision(new)
    decision = _move(new, S.REJECTED, outcome,
                     detail="out of stock: " + ", ".join(new.rejected_skus),
                     release="order_rejected")
    return _settled(decision)


def _line_expired(state: OrderState, key: str, line: LineState,
                  outcome: ReservationExpired) -> Decision:
    new = _line(state, key, line, "expired", only_from=("reserved",))
    if (state.status == S.RESERVED and not state.paid) or state.status == S.SUBMITTED:
        # Unpaid, or (SUBMITTED) a hold ran out before every line was even reserved: the
        # order cannot be completed as it stands. A paid one says "refund" in its detail.
        return _settled(_move(new, S.CANCELLED, outcome, detail="unpaid hold expired",
                              release="hold_expired"))
    if state.status in TERMINAL:
        return Decision(new)
    # Paid, or further on: inventory let a hold go that the order still needs.
    return _note(new, outcome, "ReservationExpired",
                 f"hold of line {key} ({line.sku}) expired while the order was "
                 f"{state.status}: stock must be checked by hand")


def _settled(decision: Decision) -> Decision:
    """The saga settled (RESERVED, REJECTED or CANCELLED): apply the news that waited for
    it, in arrival order; for an order that will not ship it becomes late history."""
    state = decision.state
    assert isinstance(state, OrderState)
    if not state.parked:
        return decision
    decision = Decision(replace(state, {"parked": ()}), decision.commands,
                        decision.changes, decision.notes, decision.scans)
    for data in state.parked:
        decision = _then(decision, _load(data))
    return decision


# --- payment and cancellation --------------------------------------------------------------


def _on_paid(state: OrderState, payment: PaymentConfirmed) -> Decision:
    state = _seen(state, payment)
    if state.status in (S.REJECTED, S.CANCELLED):
        return _note(replace(state, {"paid": True}), payment, "PaymentConfirmed",
                     f"payment arrived for a {state.status} order: refund it")
    if state.paid and state.status != S.RESERVED:
        return Decision(state)
    state = replace(state, {"paid": True})
    if state.status == S.RESERVED:
        return _move(state, S.PAID, payment)
    return Decision(state)  # still reserving (PAID follows RESERVED), or already past PAID


def _on_cancelled(state: OrderState, cancel: OrderCancelled) -> Decision:
    state = _seen(state, cancel)
    if state.status in TERMINAL or state.status == S.DELIVERED:
        return _note(state, cancel, "OrderCancelled",
                     f"cancel ({cancel.reason}) refused: the order is {state.status}")
    rank = state.rank
    if state.status == S.DELIVERY_EXCEPTION or rank is None or rank > LAST_CANCELLABLE:
        return _note(state, cancel, "OrderCancelled",
                     f"cancel ({cancel.reason}) refused: the parcel left the warehouse "
                     f"({state.status}); handle it as a return")
    # News parked for an order that will not ship is then kept as history only.
    return _settled(_move(state, S.CANCELLED, cancel, detail=f"cancelled: {cancel.reason}",
                          release="order_cancelled"))


# --- fulfilment: warehouse and carrier news ------------------------------------------------


def _on_fulfilment(state: OrderState, event: FulfilmentEvent) -> Decision:
    if state.status == S.SUBMITTED:
        return _park(state, event)
    target = FULFILMENT_STATUS[type(event)]
    state = _seen(state, event)
    state = _tracked(state, event)
    if state.status == S.RETURNED and target == S.RETURNED:
        return _news(state, event)
    if state.status in (S.REJECTED, S.CANCELLED, S.RETURNED):
        return _late(state, event)
    if target == S.RETURNED:
        if (state.rank is not None and state.rank >= RANK[S.PICKED_UP]) or (
            state.status == S.DELIVERY_EXCEPTION
        ):
            return _scanned(_move(state, S.RETURNED, event), event)
        return _late(state, event, why="a return before the carrier picked the parcel up")
    if target == S.DELIVERY_EXCEPTION:
        if state.status == S.DELIVERED:
            return _late(state, event)
        if state.status == S.DELIVERY_EXCEPTION:
            return _news(state, event)
        # The carrier reports on the parcel, so it has it: before a pickup scan, that scan
        # was missed (a forward jump), and the parcel resumes from PICKED_UP at least.
        moved = _move(state, S.DELIVERY_EXCEPTION, event, detail=_detail(event))
        assert isinstance(moved.state, OrderState) and state.rank is not None
        interrupted = max(state.rank, RANK[S.PICKED_UP])
        moved = _with_state(moved, replace(moved.state, {"exception_rank": interrupted}))
        return _scanned(moved, event)
    rank, current = RANK[target], state.rank
    if state.status == S.DELIVERY_EXCEPTION:
        # The carrier resolved the problem: the parcel goes on from where it was.
        if current is not None and rank >= current:
            return _scanned(_move(state, target, event), event)
        return _late(state, event)
    assert current is not None
    if rank < current:
        return _late(state, event)
    if rank == current:
        return _news(state, event)
    return _scanned(_move(state, target, event), event)


def _park(state: OrderState, event: FulfilmentEvent) -> Decision:
    if any(d.get("event_id") == event.event_id for d in state.parked):
        return Decision(state)
    if len(state.parked) >= MAX_PARKED:
        raise InvalidRecord("too_many_parked",
                            f"order {state.order_id} already has {MAX_PARKED} fulfilment events "
                            "waiting for its reservation")
    return Decision(replace(state, {"parked": (*state.parked, _dump(event))}))


def _park_unknown(state: Waiting | None, event: Event) -> Decision:
    if not isinstance(event, (FulfilmentEvent, PaymentConfirmed, PaymentFailed,
                              OrderCancelled)):
        order_id = getattr(event, "order_id", "?")
        raise InvalidRecord("unknown_order", f"no order {order_id} for {event.event_type}")
    order_id = event.order_id
    waiting = state or Waiting(order_id=order_id, since=event.occurred_at)
    if any(d.get("event_id") == event.event_id for d in waiting.events):
        return Decision(waiting)
    if len(waiting.events) >= MAX_PARKED:
        raise InvalidRecord("too_many_parked",
                            f"{MAX_PARKED} events already wait for unknown order {order_id}")
    return Decision(replace(waiting, {"events": (*waiting.events, _dump(event))}))


def _tracked(state: OrderState, event: FulfilmentEvent) -> OrderState:
    """Remember the parcel's carrier and number, the newest scan, and when news came."""
    update: dict[str, Any] = {"last_news_at": _later(state.last_news_at, event.occurred_at)}
    if event.tracking_number:
        update["tracking_number"] = event.tracking_number
    if event.carrier:
        update["carrier"] = event.carrier
    if event.scanned_at is not None:
        update["last_scan_at"] = _later(state.last_scan_at, event.scanned_at)
    return replace(state, update)


def _news(state: OrderState, event: FulfilmentEvent) -> Decision:
    """More news for the stage the order is in: a carrier event, no status change."""
    return Decision(_bumped(state), scans=[event])


def _late(state: OrderState, event: FulfilmentEvent, why: str = "") -> Decision:
    reported = FULFILMENT_STATUS[type(event)]
    detail = why or f"late {reported} for an order already {state.status}"
    decision = _note(state, event, reported.value, detail)
    return Decision(decision.state, notes=decision.notes, scans=[event])


def _scanned(decision: Decision, event: FulfilmentEvent) -> Decision:
    return Decision(decision.state, decision.commands, decision.changes, decision.notes,
                    [*decision.scans, event])


def _detail(event: FulfilmentEvent) -> str:
    text = getattr(event, "detail", "") or ""
    return text[:512]


# --- moving ------------------------------------------------------------------------------


def _move(state: OrderState, to: OrderStatus, cause: Event, *, detail: str = "",
          release: str | None = None) -> Decision:
    """Move to ``to`` with the side effects the saga owes at that point."""
    if to in (S.REJECTED, S.CANCELLED) and state.paid:
        detail = f"{detail}; payment was collected: refund it".lstrip("; ")
    change = _change(state, state.status, to, cause, detail)
    entered = {**state.entered, to.value: state.entered.get(to.value, 0) + 1}
    new = replace(state, {
        "version": state.version + 1, "status": to, "status_since": change.at,
        "entered": entered,
        "exception_rank": None if to != S.DELIVERY_EXCEPTION else state.exception_rank,
    })
    commands: list[InventoryCommand] = []
    if release is not None:
        commands, new = _release_held(new, release)
    rank = RANK.get(to)
    # The carrier has the parcel (an exception or return is reported on a parcel it took).
    with_carrier = (rank is not None and rank >= RANK[S.PICKED_UP]) or to in (
        S.RETURNED, S.DELIVERY_EXCEPTION)
    if ((rank is not None and rank >= RANK[S.PAID]) or with_carrier) and not new.confirmed:
        commands += [_confirm(new, k, ln) for k, ln in new.lines.items() if ln.state == "reserved"]
        new = replace(new, {"confirmed": True})
    if with_carrier and not new.committed:
        commands += [_commit(new, k, ln) for k, ln in new.lines.items() if ln.state in HOLDING]
        new = replace(new, {"committed": True})
    return Decision(new, commands, [change])


def _then_move(decision: Decision, to: OrderStatus, cause: Event) -> Decision:
    assert isinstance(decision.state, OrderState)
    return _merge(decision, _move(decision.state, to, cause))


def _then(decision: Decision, event: Event) -> Decision:
    """Apply ``event`` after ``decision``, collecting both decisions' outputs."""
    return _merge(decision, decide(decision.state, event))


def _merge(first: Decision, second: Decision) -> Decision:
    return Decision(second.state, [*first.commands, *second.commands],
                    [*first.changes, *second.changes], [*first.notes, *second.notes],
                    [*first.scans, *second.scans])


def _with_state(decision: Decision, state: OrderState) -> Decision:
    return Decision(state, decision.commands, decision.changes, decision.notes, decision.scans)


def _release_held(state: OrderState, reason: str) -> tuple[list[InventoryCommand], OrderState]:
    """Release every line that holds stock. A line still pending is released when its late
    answer arrives (see :func:`_line_reserved`): releasing before reserving would race."""
    commands: list[InventoryCommand] = [
        _release(state, k, ln, reason) for k, ln in state.lines.items() if ln.state in HOLDING
    ]
    lines = {k: replace(ln, {"state": "released"}) if ln.state in HOLDING else ln
             for k, ln in state.lines.items()}
    return commands, replace(state, {"lines": lines})


def _change(state: OrderState, frm: OrderStatus | None, to: OrderStatus, cause: Event,
            detail: str = "") -> OrderStatusChanged:
    times = state.entered.get(to.value, 0) if frm is not None else 0
    # The first entry keeps the plain id, so a change keeps its id whatever caused it.
    event_id = (derive_id("status", state.order_id, to) if times == 0
                else derive_id("status", state.order_id, to, times))
    at = cause.occurred_at
    if isinstance(cause, FulfilmentEvent) and cause.scanned_at is not None:
        at = cause.scanned_at
    return OrderStatusChanged(
        event_id=event_id,
        correlation_id=state.order_id,
        order_id=state.order_id,
        channel=state.channel,
        channel_order_id=state.channel_order_id,
        customer_id=state.customer_id,
        from_status=frm,
        to_status=to,
        at=at,
        cause_event_id=cause.event_id,
        tracking_number=state.tracking_number,
        carrier=state.carrier,
        detail=detail,
    )


def _note(state: OrderState, cause: Event, reported: str, detail: str) -> Decision:
    at = cause.occurred_at
    if isinstance(cause, FulfilmentEvent) and cause.scanned_at is not None:
        at = cause.scanned_at
    note = HistoryNote(event_id=derive_id("note", state.order_id, cause.event_id),
                       order_id=state.order_id, status=state.status, reported=reported, at=at,
                       cause_event_id=cause.event_id, detail=detail[:512])
    return Decision(_bumped(state), notes=[note])


def _seen(state: OrderState, event: Event) -> OrderState:
    return replace(state, {"seen": (*state.seen, event.event_id),
                           "version": state.version + 1})


def _bumped(state: OrderState) -> OrderState:
    return replace(state, {"version": state.version + 1})


def _release(state: OrderState, key: str, line: LineState, reason: str) -> ReleaseReservation:
    return ReleaseReservation(
        event_id=derive_id("release-cmd", state.order_id, key),
        correlation_id=state.order_id,
        order_id=state.order_id, line=int(key), sku=line.sku, reason=reason,
    )


def _confirm(state: OrderState, key: str, line: LineState) -> ConfirmReservation:
    return ConfirmReservation(
        event_id=derive_id("confirm-cmd", state.order_id, key),
        correlation_id=state.order_id,
        order_id=state.order_id, line=int(key), sku=line.sku,
    )


def _commit(state: OrderState, key: str, line: LineState) -> CommitStock:
    return CommitStock(
        event_id=derive_id("commit-cmd", state.order_id, key),
        correlation_id=state.order_id,
        order_id=state.order_id, line=int(key), sku=line.sku,
    )


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


def _dump(event: Event) -> dict[str, Any]:
    return event.model_dump(mode="json")


def _load(data: Mapping[str, Any]) -> Event:
    return ALL_EVENTS[data["event_type"]].model_validate(data)


# --- schedules: when to poll the carrier, when an order is stale ----------------------------


def next_poll(state: OrderState, every: timedelta) -> datetime | None:
    """When to ask the carrier about a quiet parcel: ``every`` after the last news, for an
    order with the carrier and a tracking number; None when there is nothing to poll."""
    if state.status not in WITH_CARRIER or not state.tracking_number or not state.carrier:
        return None
    base = state.last_news_at or state.status_since
    return None if base is None else base + every


def deadline(state: OrderState | Waiting, stale_after: Mapping[OrderStatus, timedelta]
             ) -> datetime | None:
    """When the order becomes stale in its status (None: no deadline for it). A parcel with
    the carrier is measured from its last scan ("no scan in 48 h"), others from entering."""
    if isinstance(state, Waiting):
        return None
    limit = stale_after.get(state.status)
    if limit is None or state.status_since is None:
        return None
    base = state.status_since
    if state.status in WITH_CARRIER and state.last_scan_at is not None:
        base = max(base, state.last_scan_at)
    return base + limit


def load_state(data: Mapping[str, Any] | None) -> OrderState | Waiting | None:
    """A table value back as the model it was saved from."""
    if data is None:
        return None
    if "events" in data and "status" not in data:
        return Waiting.model_validate(data)
    return OrderState.model_validate(data)
