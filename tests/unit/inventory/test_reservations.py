"""Stock rules for one SKU: reserve, release, adjust; every command is idempotent."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from services.inventory.domain import (
    Decision,
    Reservation,
    SkuState,
    adjust,
    commit,
    confirm,
    expire,
    new_state,
    release,
    reservation_key,
    reserve,
    set_safety_stock,
)
from shared.codec import InvalidRecord
from shared.events import (
    CommitStock,
    ConfirmReservation,
    ExpireHolds,
    ReleaseReservation,
    ReservationConfirmed,
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

SKU = "SKU-1001"
NOW = datetime(2026, 1, 20, 8, 0, tzinfo=UTC)
HOLD = timedelta(minutes=30)


# --- the store beside the rules ----------------------------------------------------------


class Book:
    """What the service keeps for one SKU: its counts, its reservations by ``order:line``,
    and the event ids of the adjustments applied to it."""

    def __init__(self, state: SkuState) -> None:
        self.state = state
        self.reservations: dict[str, Reservation] = {}
        self.applied: set[str] = set()

    def get(self, order_id: str, line: int) -> Reservation | None:
        return self.reservations.get(reservation_key(order_id, line))

    def states(self) -> dict[str, str]:
        return {key: r.state for key, r in self.reservations.items()}

    def apply(self, decision: Decision) -> Decision:
        self.reservations.update(decision.reservations)
        if decision.adjustment is not None:
            self.applied.add(decision.adjustment)
        self.state = decision.state
        return decision


def assert_writes_at_most(decision: Decision, key: str) -> None:
    """A keyed command writes no reservation but the one it names, and no adjustment."""
    assert set(decision.reservations) <= {key}, decision.reservations
    for written_key, res in decision.reservations.items():
        assert reservation_key(res.order_id, res.line) == written_key
    assert decision.adjustment is None


def decide(book: Book, cmd: Any) -> Decision:
    """The rule for ``cmd`` given what ``book`` keeps (not applied), checking that the decision
    writes only what its command may write."""
    state = book.state
    if isinstance(cmd, StockAdjusted):
        applied = cmd.event_id in book.applied
        decision = adjust(state, cmd, applied=applied)
        assert decision.reservations == {}
        assert decision.adjustment == (None if applied else cmd.event_id)
    elif isinstance(cmd, SafetyStockSet):
        decision = set_safety_stock(state, cmd)
        assert (decision.reservations, decision.adjustment) == ({}, None)
    elif isinstance(cmd, ExpireHolds):
        decision = expire(state, book.reservations.values(), cmd)
        # exactly the due unpaid holds, each now expired and otherwise unchanged
        due = {k: r for k, r in book.reservations.items() if r.due(cmd.due_at)}
        assert decision.reservations == {
            k: r.model_copy(update={"state": "expired"}) for k, r in due.items()}
        assert decision.adjustment is None
    else:
        existing = book.get(cmd.order_id, cmd.line)
        if isinstance(cmd, ReserveStock):
            decision = reserve(state, existing, cmd, now=NOW, hold=HOLD)
        elif isinstance(cmd, ReleaseReservation):
            decision = release(state, existing, cmd, now=NOW)
        elif isinstance(cmd, ConfirmReservation):
            decision = confirm(state, existing, cmd)
        else:
            assert isinstance(cmd, CommitStock)
            decision = commit(state, existing, cmd, now=NOW)
        assert_writes_at_most(decision, reservation_key(cmd.order_id, cmd.line))
    assert decision.state.sku == SKU
    decision.level(cmd.event_id)  # a StockLevel must always be publishable
    return decision


def do(book: Book, cmd: Any) -> Decision:
    """Decide ``cmd`` and apply the decision to ``book``."""
    return book.apply(decide(book, cmd))


# --- factories ---------------------------------------------------------------------------


def assert_logged_refusal(decision: Decision) -> None:
    """A refusal moves no stock but is written to the operation log (stock-out rate)."""
    (logged,) = decision.movements
    assert (logged.kind, logged.on_hand_delta, logged.reserved_delta) == ("reject", 0, 0)


def adjusted(delta: int | None = None, *, absolute: int | None = None,
             event_id: str | None = None, reason: str = "restock") -> StockAdjusted:
    fields: dict[str, Any] = {"sku": SKU, "delta": delta, "absolute": absolute,
                              "reason": reason, "source": "wms", "occurred_at": NOW}
    if event_id is not None:
        fields["event_id"] = event_id
    return StockAdjusted(**fields)


def reserve_cmd(order_id: str = "ord-1", line: int = 1, quantity: int = 1,
                hold_until: datetime | None = None, *, paid: bool = False) -> ReserveStock:
    return ReserveStock(event_id=derive_id("reserve", order_id, line), correlation_id=order_id,
                        order_id=order_id, line=line, sku=SKU, quantity=quantity,
                        hold_until=hold_until, paid=paid)


def release_cmd(order_id: str = "ord-1", line: int = 1,
                reason: str = "order_rejected") -> ReleaseReservation:
    return ReleaseReservation(event_id=derive_id("release-cmd", order_id, line),
                              correlation_id=order_id, order_id=order_id, line=line, sku=SKU,
                              reason=reason)


def confirm_cmd(order_id: str = "ord-1", line: int = 1) -> ConfirmReservation:
    return ConfirmReservation(order_id=order_id, line=line, sku=SKU, correlation_id=order_id)


def commit_cmd(order_id: str = "ord-1", line: int = 1) -> CommitStock:
    return CommitStock(order_id=order_id, line=line, sku=SKU, correlation_id=order_id)


def expire_cmd(due_at: datetime) -> ExpireHolds:
    return ExpireHolds(sku=SKU, due_at=due_at)


def safety(threshold: int) -> SafetyStockSet:
    return SafetyStockSet(sku=SKU, threshold=threshold, source="operator:li")


def stocked(on_hand: int, safety_stock: int = 0) -> Book:
    """A known SKU with ``on_hand`` units, the given safety stock and no reservations."""
    book = Book(new_state(SKU, safety_stock))
    do(book, adjusted(on_hand) if on_hand else adjusted(absolute=0))
    return book


def counts(state: SkuState) -> tuple[int, int, int]:
    return state.on_hand, state.reserved, state.available


def only_event(decision: Decision) -> Any:
    assert len(decision.events) == 1, decision.events
    return decision.events[0]


def without_time(event: Any) -> dict[str, Any]:
    return event.model_dump(exclude={"occurred_at"})


# --- reserve -----------------------------------------------------------------------------


def test_new_sku_is_unknown_and_not_sellable() -> None:
    state = new_state(SKU, 3)
    assert (state.known, state.sellable, state.safety_stock) == (False, False, 3)


def test_reserve_on_an_unknown_sku_is_rejected_unknown_sku() -> None:
    book = Book(new_state(SKU, 0))
    decision = do(book, reserve_cmd(quantity=2))
    event = only_event(decision)
    assert isinstance(event, StockRejected)
    assert (event.reason, event.quantity, event.available) == ("unknown_sku", 2, 0)
    assert event.event_id == derive_id("reserve-outcome", "ord-1", 1)
    assert counts(decision.state) == (0, 0, 0)
    assert_logged_refusal(decision)
    assert decision.changed is False
    (res,) = decision.reservations.values()
    assert (res.state, res.reason, res.outcome_event_id) == (
        "rejected", "unknown_sku", event.event_id)
    assert book.states() == {"ord-1:1": "rejected"}


def test_reserve_within_available_holds_the_stock() -> None:
    book = stocked(5)
    decision = do(book, reserve_cmd(quantity=3))

    event = only_event(decision)
    assert isinstance(event, StockReserved)
    assert (event.order_id, event.line, event.sku, event.quantity) == ("ord-1", 1, SKU, 3)
    assert event.correlation_id == "ord-1"
    assert event.hold_until == NOW + HOLD
    assert counts(decision.state) == (5, 3, 2)
    assert decision.changed is True
    [movement] = decision.movements
    assert (movement.kind, movement.on_hand_delta, movement.reserved_delta) == ("reserve", 0, 3)
    assert (movement.order_id, movement.line, movement.movement_id) == ("ord-1", 1, event.event_id)
    assert set(decision.reservations) == {"ord-1:1"}
    res = book.reservations["ord-1:1"]
    assert (res.state, res.quantity, res.hold_until) == ("held", 3, NOW + HOLD)
    assert res.holds_stock is True


def test_reserve_keeps_the_hold_until_the_command_asks_for() -> None:
    until = NOW + timedelta(hours=4)
    decision = do(stocked(5), reserve_cmd(hold_until=until))
    assert only_event(decision).hold_until == until
    assert decision.reservations["ord-1:1"].hold_until == until


def test_reserve_does_not_mutate_the_input_state() -> None:
    state = stocked(5).state
    before = state.model_dump()
    reserve(state, None, reserve_cmd(quantity=3), now=NOW, hold=HOLD)
    assert state.model_dump() == before


def test_release_does_not_mutate_the_input_state_or_reservation() -> None:
    book = stocked(5)
    do(book, reserve_cmd(quantity=3))
    state, existing = book.state, book.reservations["ord-1:1"]
    before = (state.model_dump(), existing.model_dump())
    decision = release(state, existing, release_cmd(), now=NOW)
    assert decision.reservations["ord-1:1"].state == "released"
    assert (state.model_dump(), existing.model_dump()) == before


@pytest.mark.parametrize("quantity", [6, 7, 100])
def test_reserve_more_than_available_is_rejected_insufficient_stock(quantity: int) -> None:
    book = stocked(10)
    do(book, reserve_cmd("ord-0", quantity=5))  # available 5
    state = book.state
    decision = do(book, reserve_cmd(quantity=quantity))
    event = only_event(decision)
    assert isinstance(event, StockRejected)
    assert (event.reason, event.available, event.quantity) == ("insufficient_stock", 5, quantity)
    assert counts(decision.state) == counts(state) == (10, 5, 5)
    assert decision.changed is False
    assert_logged_refusal(decision)
    assert book.states() == {"ord-0:1": "held", "ord-1:1": "rejected"}


def test_reserve_of_exactly_the_available_stock_succeeds() -> None:
    decision = do(stocked(4), reserve_cmd(quantity=4))
    assert isinstance(only_event(decision), StockReserved)
    assert counts(decision.state) == (4, 4, 0)


def test_reserve_on_a_known_sku_with_nothing_on_hand_is_not_sellable() -> None:
    event = only_event(do(stocked(0), reserve_cmd()))
    assert (event.event_type, event.reason) == ("StockRejected", "not_sellable")


@pytest.mark.parametrize(("on_hand", "threshold", "quantity"),
                         list(itertools.product(range(7), range(5), range(1, 8))))
def test_reserve_outcome_for_every_small_stock_threshold_and_quantity(
    on_hand: int, threshold: int, quantity: int,
) -> None:
    book = stocked(on_hand, safety_stock=threshold)
    assert book.state.sellable is (on_hand > threshold)
    decision = do(book, reserve_cmd(quantity=quantity))
    event = only_event(decision)
    if on_hand <= threshold:
        assert (event.event_type, event.reason) == ("StockRejected", "not_sellable")
    elif quantity > on_hand:
        assert (event.event_type, event.reason) == ("StockRejected", "insufficient_stock")
    else:
        assert event.event_type == "StockReserved"
        assert counts(decision.state) == (on_hand, quantity, on_hand - quantity)
        assert book.states() == {"ord-1:1": "held"}
        return
    assert counts(decision.state) == (on_hand, 0, on_hand)
    assert book.states() == {"ord-1:1": "rejected"}


def test_safety_stock_makes_a_sku_unsellable_once_available_drops_to_the_threshold() -> None:
    book = stocked(5)
    do(book, safety(3))
    do(book, reserve_cmd("ord-1", quantity=2))  # available 3 == threshold
    assert book.state.sellable is False
    event = only_event(do(book, reserve_cmd("ord-2", quantity=1)))
    assert (event.event_type, event.reason, event.available) == ("StockRejected", "not_sellable", 3)


def test_set_safety_stock_changes_only_when_the_threshold_differs() -> None:
    state = stocked(5, safety_stock=2).state
    same = set_safety_stock(state, safety(2))
    assert (same.changed, same.state) == (False, state)
    other = set_safety_stock(state, safety(5))
    assert other.changed is True
    assert (other.state.safety_stock, other.state.sellable) == (5, False)
    assert (other.events, other.movements) == ([], [])
    assert (other.reservations, other.adjustment) == ({}, None)


def test_level_reports_the_counts_with_an_id_derived_from_the_cause() -> None:
    decision = do(stocked(5, safety_stock=1), reserve_cmd(quantity=3))
    level = decision.level("cause-1")
    assert isinstance(level, StockLevel)
    assert (level.sku, level.on_hand, level.reserved, level.available) == (SKU, 5, 3, 2)
    assert (level.safety_stock, level.sellable) == (1, True)
    assert level.event_id == decision.level("cause-1").event_id
    assert level.event_id != decision.level("cause-2").event_id


# --- replays -----------------------------------------------------------------------------


def test_replayed_reserve_returns_the_same_outcome_and_changes_nothing() -> None:
    book = stocked(5)
    first = do(book, reserve_cmd(quantity=3))
    reservations = dict(book.reservations)
    replay = do(book, reserve_cmd(quantity=3))
    event = only_event(replay)
    assert isinstance(event, StockReserved)
    assert event.event_id == first.events[0].event_id
    assert replay.state == first.state
    assert (replay.movements, replay.changed, replay.reservations) == ([], False, {})
    assert book.reservations == reservations


def test_replayed_rejection_stays_rejected_with_the_same_id_after_a_restock() -> None:
    book = stocked(2)
    first = do(book, reserve_cmd(quantity=3))
    assert first.events[0].reason == "insufficient_stock"
    restocked = do(book, adjusted(100)).state
    replay = do(book, reserve_cmd(quantity=3))
    event = only_event(replay)
    assert isinstance(event, StockRejected)
    assert (event.event_id, event.reason) == (first.events[0].event_id, "insufficient_stock")
    assert replay.state == restocked
    assert counts(replay.state) == (102, 0, 102)
    assert (replay.movements, replay.changed, replay.reservations) == ([], False, {})
    assert book.states() == {"ord-1:1": "rejected"}


def test_replayed_unknown_sku_rejection_stays_rejected_once_the_sku_is_known() -> None:
    book = Book(new_state(SKU, 0))
    first = do(book, reserve_cmd())
    do(book, adjusted(10))
    replay = do(book, reserve_cmd())
    event = only_event(replay)
    assert (event.event_type, event.reason, event.event_id) == (
        "StockRejected", "unknown_sku", first.events[0].event_id)
    assert replay.reservations == {}


SCENARIOS = {
    "reserved": (5, 0, 3),
    "insufficient_stock": (2, 0, 3),
    "not_sellable": (2, 2, 1),
}


@pytest.mark.parametrize(("on_hand", "threshold", "quantity"), list(SCENARIOS.values()),
                         ids=list(SCENARIOS))
def test_replayed_outcome_is_the_original_answer_resent_unchanged(
    on_hand: int, threshold: int, quantity: int,
) -> None:
    # _outcome_of promises "the answer a reservation already gave, re-sent unchanged".
    book = stocked(on_hand, threshold)
    first = do(book, reserve_cmd(quantity=quantity))
    replay = do(book, reserve_cmd(quantity=quantity))
    assert without_time(only_event(replay)) == without_time(only_event(first))
    assert replay.reservations == {}


# --- release -----------------------------------------------------------------------------


def test_release_of_a_held_reservation_gives_the_stock_back() -> None:
    book = stocked(5)
    do(book, reserve_cmd(quantity=3))
    decision = do(book, release_cmd(reason="payment_failed"))
    event = only_event(decision)
    assert isinstance(event, ReservationReleased)
    assert (event.order_id, event.line, event.quantity, event.reason) == (
        "ord-1", 1, 3, "payment_failed")
    assert event.event_id == derive_id("release", "ord-1", 1)
    assert counts(decision.state) == (5, 0, 5)
    assert decision.changed is True
    [movement] = decision.movements
    assert (movement.kind, movement.on_hand_delta, movement.reserved_delta) == ("release", 0, -3)
    assert set(decision.reservations) == {"ord-1:1"}
    res = book.reservations["ord-1:1"]
    assert (res.state, res.reason, res.holds_stock) == ("released", "payment_failed", False)


def test_replayed_release_re_sends_the_same_event_and_changes_nothing() -> None:
    book = stocked(5)
    do(book, reserve_cmd(quantity=3))
    first = do(book, release_cmd())
    replay = do(book, release_cmd())
    assert only_event(replay).event_id == first.events[0].event_id
    assert replay.state == first.state
    assert (replay.movements, replay.changed, replay.reservations) == ([], False, {})
    assert book.states() == {"ord-1:1": "released"}


def test_release_of_a_rejected_reservation_does_nothing() -> None:
    book = stocked(1)
    do(book, reserve_cmd(quantity=3))
    rejected = book.state
    decision = do(book, release_cmd())
    assert decision.state == rejected
    assert (decision.events, decision.movements, decision.changed) == ([], [], False)
    assert decision.reservations == {}
    assert book.states() == {"ord-1:1": "rejected"}


def test_release_touches_only_its_own_reservation() -> None:
    book = stocked(10)
    do(book, reserve_cmd("ord-1", 1, 2))
    do(book, reserve_cmd("ord-1", 2, 3))
    do(book, reserve_cmd("ord-2", 1, 4))
    decision = do(book, release_cmd("ord-1", 2))
    assert set(decision.reservations) == {"ord-1:2"}
    assert counts(book.state) == (10, 6, 4)
    assert book.states() == {"ord-1:1": "held", "ord-1:2": "released", "ord-2:1": "held"}


def test_release_before_reserve_makes_the_late_reserve_rejected() -> None:
    book = stocked(10)
    early = do(book, release_cmd())
    assert (early.events, early.movements, early.changed) == ([], [], False)
    assert counts(early.state) == (10, 0, 10)
    assert set(early.reservations) == {"ord-1:1"}
    assert (early.reservations["ord-1:1"].state, early.reservations["ord-1:1"].quantity) == (
        "cancelled", 0)

    late = do(book, reserve_cmd(quantity=5))
    event = only_event(late)
    assert isinstance(event, StockRejected)
    assert event.reason == "released_before_reserve"
    assert event.event_id == derive_id("reserve-outcome", "ord-1", 1)
    assert counts(late.state) == (10, 0, 10)
    assert (late.movements, late.changed, late.reservations) == ([], False, {})
    # and the early release, replayed, still changes nothing
    again = do(book, release_cmd())
    assert (again.state, again.events, again.changed, again.reservations) == (
        late.state, [], False, {})
    assert book.states() == {"ord-1:1": "cancelled"}


def test_late_reserve_rejection_reports_the_commanded_quantity() -> None:
    book = stocked(10)
    do(book, release_cmd())
    event = only_event(do(book, reserve_cmd(quantity=5)))
    assert event.quantity == 5


# --- adjust ------------------------------------------------------------------------------


def test_first_adjustment_makes_the_sku_known() -> None:
    book = Book(new_state(SKU, 0))
    decision = do(book, adjusted(5, event_id="adj-1"))
    assert decision.state.known is True
    assert counts(decision.state) == (5, 0, 5)
    assert decision.changed is True
    assert decision.events == []
    [movement] = decision.movements
    assert (movement.kind, movement.on_hand_delta, movement.reserved_delta) == ("adjust", 5, 0)
    assert (movement.reason, movement.source, movement.occurred_at) == ("restock", "wms", NOW)
    assert (decision.adjustment, decision.reservations) == ("adj-1", {})
    assert book.applied == {"adj-1"}


def test_replayed_adjustment_with_the_same_event_id_changes_nothing() -> None:
    cmd = adjusted(5, event_id="adj-1")
    book = stocked(2)
    first = do(book, cmd)
    assert first.adjustment == "adj-1" and "adj-1" in book.applied
    replay = decide(book, cmd)  # decide passes applied=True: the id was applied before
    assert replay.state == first.state
    assert counts(replay.state) == (7, 0, 7)
    assert (replay.events, replay.movements, replay.changed) == ([], [], False)
    assert (replay.adjustment, replay.reservations) == (None, {})


def test_distinct_adjustments_with_equal_deltas_both_apply() -> None:
    book = stocked(0)
    do(book, adjusted(5, event_id="adj-1"))
    do(book, adjusted(5, event_id="adj-2"))
    assert book.state.on_hand == 10
    assert {"adj-1", "adj-2"} <= book.applied


def test_stocktake_sets_on_hand_and_keeps_reservations() -> None:
    book = stocked(10)
    do(book, reserve_cmd(quantity=4))
    decision = do(book, adjusted(absolute=7, reason="stocktake"))
    assert counts(decision.state) == (7, 4, 3)
    assert decision.reservations == {}
    assert book.states() == {"ord-1:1": "held"}
    [movement] = decision.movements
    assert movement.on_hand_delta == -3
    assert decision.adjustment == movement.movement_id
    replay = do(book, adjusted(absolute=7, event_id=movement.movement_id))
    assert replay.state == decision.state
    assert (replay.movements, replay.changed) == ([], False)


def test_negative_adjustment_may_take_on_hand_below_reserved() -> None:
    # Damage is a fact, not a request: it applies even when stock is promised.
    book = stocked(5)
    do(book, reserve_cmd(quantity=5))
    do(book, adjusted(-3, reason="damage"))
    assert counts(book.state) == (2, 5, -3)
    assert book.state.sellable is False
    assert book.states() == {"ord-1:1": "held"}
    event = only_event(do(book, reserve_cmd("ord-2")))
    assert (event.reason, event.available) == ("not_sellable", 0)


# --- stateful: any sequence of commands keeps the books straight -------------------------

ORDERS = st.sampled_from(["o-1", "o-2", "o-3"])
LINES = st.integers(1, 3)


class OneSku(RuleBasedStateMachine):
    """Drives one SKU with adjustments, reservations, releases and replays, against a model."""

    def __init__(self) -> None:
        super().__init__()
        self.book = Book(new_state(SKU, 0))
        self.history: list[tuple[str, Any]] = []
        self.adjustments = 0
        # the model: what each (order, line) should be, and the counts
        self.on_hand = 0
        self.known = False
        self.held: dict[str, int] = {}
        #: key -> (event_type, event_id, confirmed or None for a rejection)
        self.answered: dict[str, tuple[str, str, bool | None]] = {}
        self.cancelled: set[str] = set()
        self.released: set[str] = set()
        self.confirmed: dict[str, int] = {}
        self.committed: set[str] = set()
        self.expired: set[str] = set()

    @property
    def state(self) -> SkuState:
        return self.book.state

    @rule(delta=st.integers(-3, 10).filter(bool))
    def adjust_by(self, delta: int) -> None:
        self.adjustments += 1
        cmd = adjusted(delta, event_id=f"adj-{self.adjustments}")
        decision = do(self.book, cmd)
        self.on_hand += delta
        self.known = True
        assert decision.changed and len(decision.movements) == 1
        assert decision.adjustment == cmd.event_id
        self.history.append(("adjust", cmd))

    @rule(absolute=st.integers(0, 10))
    def stocktake(self, absolute: int) -> None:
        self.adjustments += 1
        cmd = adjusted(absolute=absolute, event_id=f"adj-{self.adjustments}")
        decision = do(self.book, cmd)
        assert decision.adjustment == cmd.event_id
        self.on_hand = absolute
        self.known = True
        self.history.append(("adjust", cmd))

    @rule(threshold=st.integers(0, 3))
    def set_threshold(self, threshold: int) -> None:
        cmd = safety(threshold)
        do(self.book, cmd)
        assert self.state.safety_stock == threshold
        self.history.append(("safety", cmd))

    @rule(order=ORDERS, line=LINES, quantity=st.integers(1, 6), paid=st.booleans())
    def reserve_line(self, order: str, line: int, quantity: int, paid: bool) -> None:
        key = f"{order}:{line}"
        before = self.state
        cmd = reserve_cmd(order, line, quantity, paid=paid)
        decision = decide(self.book, cmd)
        event = only_event(decision)
        assert event.event_id == derive_id("reserve-outcome", order, line)
        self.history.append(("reserve", cmd))
        if key in self.answered:  # a second command for the line: the first answer stands
            assert (event.event_type, event.event_id,
                    getattr(event, "confirmed", None)) == self.answered[key]
            assert decision.state == before
            assert decision.reservations == {}
            return
        if key in self.cancelled:
            assert (event.event_type, event.reason) == ("StockRejected", "released_before_reserve")
            assert decision.state == before
            assert decision.reservations == {}
            return
        available = self.on_hand - sum(self.held.values()) - sum(self.confirmed.values())
        if not self.known:
            expected = "unknown_sku"
        elif available <= before.safety_stock:
            expected = "not_sellable"
        elif available < quantity:
            expected = "insufficient_stock"
        else:
            expected = ""
        assert set(decision.reservations) == {key}
        if expected:
            assert (event.event_type, event.reason) == ("StockRejected", expected)
            assert counts(decision.state) == counts(before)
            assert decision.reservations[key].state == "rejected"
        else:
            assert event.event_type == "StockReserved"
            assert decision.state.reserved == before.reserved + quantity
            # the promise: a reserve never takes more than is available
            assert decision.state.available >= 0
            assert decision.state.available >= before.safety_stock - quantity + 1
            # a paid order's hold is confirmed at once and has no deadline
            assert event.confirmed is paid and (event.hold_until is None) is paid
            assert decision.reservations[key].state == ("confirmed" if paid else "held")
            (self.confirmed if paid else self.held)[key] = quantity
        self.answered[key] = (event.event_type, event.event_id,
                              getattr(event, "confirmed", None))
        self.book.apply(decision)

    @rule(order=ORDERS, line=LINES)
    def release_line(self, order: str, line: int) -> None:
        key = f"{order}:{line}"
        before = self.state
        cmd = release_cmd(order, line)
        decision = decide(self.book, cmd)
        if key in self.held or key in self.confirmed:
            event = only_event(decision)
            assert isinstance(event, ReservationReleased)
            assert event.quantity == (self.held.pop(key, 0) or self.confirmed.pop(key))
            assert set(decision.reservations) == {key}
            self.released.add(key)
        elif key in self.released:
            assert isinstance(only_event(decision), ReservationReleased)
            assert decision.state == before
            assert decision.reservations == {}
        else:
            assert decision.events == []
            assert counts(decision.state) == counts(before)
            if key in self.answered or key in self.cancelled:
                assert decision.reservations == {}  # rejected, expired, committed, cancelled
            else:
                assert set(decision.reservations) == {key}  # remembered as cancelled
                self.cancelled.add(key)
        self.book.apply(decision)
        self.history.append(("release", cmd))

    @rule(order=ORDERS, line=LINES)
    def confirm_line(self, order: str, line: int) -> None:
        key, before = f"{order}:{line}", self.state
        cmd = confirm_cmd(order, line)
        if key in self.held or key in self.confirmed or key in self.committed:
            decision = decide(self.book, cmd)
            assert isinstance(only_event(decision), ReservationConfirmed)
            assert counts(decision.state) == counts(before)
            if key in self.held:
                assert set(decision.reservations) == {key}
                self.confirmed[key] = self.held.pop(key)
            else:
                assert decision.reservations == {}
            self.book.apply(decision)
            self.history.append(("confirm", cmd))
        else:
            with pytest.raises(InvalidRecord):
                decide(self.book, cmd)

    @rule(order=ORDERS, line=LINES)
    def commit_line(self, order: str, line: int) -> None:
        key, before = f"{order}:{line}", self.state
        cmd = commit_cmd(order, line)
        if key in self.held or key in self.confirmed:
            decision = decide(self.book, cmd)
            quantity = self.held.pop(key, 0) or self.confirmed.pop(key)
            assert isinstance(only_event(decision), StockCommitted)
            assert counts(decision.state)[:2] == (before.on_hand - quantity,
                                                  before.reserved - quantity)
            assert set(decision.reservations) == {key}
            self.on_hand -= quantity
            self.committed.add(key)
            self.book.apply(decision)
            self.history.append(("commit", cmd))
        elif key in self.committed:
            decision = decide(self.book, cmd)
            assert decision.state == before
            assert (decision.movements, decision.reservations) == ([], {})
        else:
            with pytest.raises(InvalidRecord):
                decide(self.book, cmd)

    @rule(late=st.booleans())
    def expire_due_holds(self, late: bool) -> None:
        due_at = NOW + HOLD + (timedelta(seconds=1) if late else -timedelta(seconds=1))
        cmd = expire_cmd(due_at)
        decision = decide(self.book, cmd)
        if late:  # every unpaid hold is due; paid (confirmed) ones never expire
            assert {e.order_id + ":" + str(e.line) for e in decision.events} == set(self.held)
            assert set(decision.reservations) == set(self.held)
            self.expired |= set(self.held)
            self.held.clear()
        else:
            assert decision.events == [] and decision.state == self.state
            assert decision.reservations == {}
        self.book.apply(decision)
        self.history.append(("expire", cmd))

    @precondition(lambda self: bool(self.history))
    @rule(data=st.data())
    def replay_a_past_command(self, data: st.DataObject) -> None:
        index = data.draw(st.sampled_from([len(self.history) - 1, *range(len(self.history))]))
        kind, cmd = self.history[index]
        if kind == "safety" and cmd.threshold != self.state.safety_stock:
            return  # a threshold is a setting, not a keyed command: a later one wins
        if kind == "expire":
            # A tick releases what is due by its time, whenever it arrives (with real clocks
            # a hold made after a tick is due after it; the frozen test clock makes later
            # holds due too): a replayed tick is just a tick.
            self.expire_due_holds(late=cmd.due_at > NOW + HOLD)
            return
        if kind == "adjust":
            assert cmd.event_id in self.book.applied  # so decide passes applied=True
        try:
            decision = decide(self.book, cmd)
        except InvalidRecord:
            assert kind in ("confirm", "commit")  # e.g. confirm after the hold was released
            return
        assert decision.state == self.state
        assert decision.changed is False
        assert decision.movements == []
        assert decision.reservations == {}
        assert decision.adjustment is None

    @invariant()
    def reserved_is_the_sum_of_held_reservations(self) -> None:
        held = sum(r.quantity for r in self.book.reservations.values() if r.holds_stock)
        assert self.state.reserved == held == sum(self.held.values()) + sum(
            self.confirmed.values())
        assert self.state.reserved >= 0

    @invariant()
    def on_hand_follows_the_adjustments(self) -> None:
        assert self.state.on_hand == self.on_hand
        assert self.state.known is self.known
        assert self.book.applied == {f"adj-{n}" for n in range(1, self.adjustments + 1)}

    @invariant()
    def every_reservation_is_in_the_state_the_model_expects(self) -> None:
        states = self.book.states()
        assert set(states) == set(self.answered) | self.cancelled
        for key in self.held:
            assert states[key] == "held"
        for key in self.released:
            assert states[key] == "released"
        for key in self.cancelled:
            assert states[key] == "cancelled"
        for key in self.confirmed:
            assert states[key] == "confirmed"
        for key in self.committed:
            assert states[key] == "committed"
        for key in self.expired:
            assert states[key] == "expired"
        for key, (event_type, _, _) in self.answered.items():
            if event_type == "StockRejected":
                assert states[key] == "rejected"
        assert all(isinstance(r, Reservation) for r in self.book.reservations.values())


OneSku.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestOneSku = OneSku.TestCase


# --- confirm, commit, expiry ------------------------------------------------------------------


def test_a_confirmed_hold_survives_the_expiry_that_releases_an_unpaid_one() -> None:
    book = stocked(10)
    do(book, reserve_cmd("paid", quantity=2))
    do(book, reserve_cmd("unpaid", quantity=3))
    confirmed = do(book, confirm_cmd("paid"))
    assert set(confirmed.reservations) == {"paid:1"}
    decision = do(book, expire_cmd(NOW + HOLD))
    (expired,) = decision.events
    assert (expired.event_type, expired.order_id, expired.quantity) == (
        "ReservationExpired", "unpaid", 3)
    assert counts(decision.state) == (10, 2, 8)
    (movement,) = decision.movements
    assert (movement.kind, movement.on_hand_delta, movement.reserved_delta) == ("expire", 0, -3)
    assert set(decision.reservations) == {"unpaid:1"}
    assert book.states() == {"paid:1": "confirmed", "unpaid:1": "expired"}
    again = do(book, expire_cmd(NOW + 2 * HOLD))
    assert again.events == [] and again.state == decision.state  # released exactly once
    assert (again.movements, again.changed, again.reservations) == ([], False, {})


def test_a_paid_orders_reserve_is_confirmed_at_once_and_never_expires() -> None:
    book = stocked(10)
    decision = do(book, reserve_cmd("paid", quantity=2, paid=True))
    answer = only_event(decision)
    assert isinstance(answer, StockReserved)
    assert answer.confirmed and answer.hold_until is None
    assert book.states() == {"paid:1": "confirmed"} and counts(book.state) == (10, 2, 8)
    expiry = do(book, expire_cmd(NOW + 10 * HOLD))
    assert expiry.events == [] and book.states() == {"paid:1": "confirmed"}
    replay = do(book, reserve_cmd("paid", quantity=2, paid=True))
    assert without_time(only_event(replay)) == without_time(answer)  # the same answer
    assert isinstance(only_event(do(book, confirm_cmd("paid"))), ReservationConfirmed)
    assert book.states() == {"paid:1": "confirmed"}  # a confirm after it changes nothing
    committed = do(book, commit_cmd("paid"))
    assert isinstance(only_event(committed), StockCommitted)
    assert counts(committed.state) == (8, 0, 8)


def test_a_paid_orders_confirmed_hold_is_released_like_any_other() -> None:
    book = stocked(5)
    do(book, reserve_cmd("paid", quantity=3, paid=True))
    released = only_event(do(book, release_cmd("paid")))
    assert isinstance(released, ReservationReleased) and released.quantity == 3
    assert counts(book.state) == (5, 0, 5)
    replay = only_event(do(book, reserve_cmd("paid", quantity=3, paid=True)))
    assert isinstance(replay, StockReserved) and replay.confirmed  # the original answer


def test_an_unpaid_hold_is_not_released_before_its_deadline() -> None:
    book = stocked(5)
    state = do(book, reserve_cmd(quantity=1)).state
    decision = do(book, expire_cmd(NOW + HOLD - timedelta(seconds=1)))
    assert decision.events == [] and decision.state == state
    assert decision.reservations == {}
    assert book.states() == {"ord-1:1": "held"}


def test_commit_takes_the_units_out_of_on_hand_and_reserved_once() -> None:
    book = stocked(10)
    do(book, reserve_cmd(quantity=4))
    do(book, confirm_cmd())
    decision = do(book, commit_cmd())
    (event,) = decision.events
    assert isinstance(event, StockCommitted) and event.quantity == 4
    assert counts(decision.state) == (6, 0, 6)
    (movement,) = decision.movements
    assert (movement.kind, movement.on_hand_delta, movement.reserved_delta) == ("commit", -4, -4)
    assert set(decision.reservations) == {"ord-1:1"}
    assert book.states() == {"ord-1:1": "committed"}
    replay = do(book, commit_cmd())
    assert replay.state == decision.state and replay.events[0].event_id == event.event_id
    assert replay.movements == []
    assert replay.reservations == {}


def test_an_unpaid_hold_can_be_committed_directly() -> None:
    book = stocked(3)
    do(book, reserve_cmd(quantity=1))
    assert counts(do(book, commit_cmd()).state) == (2, 0, 2)
    assert book.states() == {"ord-1:1": "committed"}


@pytest.mark.parametrize(
    ("command", "cmd"),
    [(confirm, confirm_cmd()),
     (lambda s, r, c: commit(s, r, c, now=NOW), commit_cmd())],
    ids=["confirm", "commit"])
def test_confirm_or_commit_of_an_unknown_reservation_is_a_named_rejection(command, cmd) -> None:
    with pytest.raises(InvalidRecord) as info:
        command(stocked(5).state, None, cmd)
    assert info.value.reason == "unknown_reservation"


def test_commit_of_a_refused_reservation_is_rejected_not_held() -> None:
    book = stocked(1)
    do(book, reserve_cmd(quantity=5))  # refused
    with pytest.raises(InvalidRecord) as info:
        decide(book, commit_cmd())
    assert info.value.reason == "not_held"
