"""The reservation saga: SUBMITTED, then RESERVED when every line holds, or REJECTED (and the
held lines released) as soon as one line is refused. Replays never move an order twice."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.status.domain import Decision, OrderState, on_inventory, on_submitted
from shared.codec import InvalidRecord
from shared.events import (
    Channel,
    Customer,
    InventoryOutcome,
    OrderLine,
    OrderStatus,
    OrderSubmitted,
    ReleaseReservation,
    ReservationReleased,
    ReserveStock,
    StockRejected,
    StockReserved,
    derive_id,
)

ORDER = "ord-1"
T0 = datetime(2026, 1, 20, 8, 0, tzinfo=UTC)
TERMINAL = {OrderStatus.RESERVED, OrderStatus.REJECTED}


# --- factories ---------------------------------------------------------------------------


def sku_of(line: int) -> str:
    return f"SKU-{line:03d}"


def submitted(n_lines: int = 3, *, order_id: str = ORDER, paid: bool = False) -> OrderSubmitted:
    return OrderSubmitted(
        event_id=derive_id("submitted", "web", order_id),
        occurred_at=T0,
        correlation_id=order_id,
        order_id=order_id,
        channel=Channel.WEB,
        channel_order_id=f"W-{order_id}",
        customer=Customer(customer_id="cust-42"),
        lines=tuple(OrderLine(line=i, sku=sku_of(i), quantity=i, unit_price="10.00")
                    for i in range(1, n_lines + 1)),
        currency="CNY",
        total=sum(10 * i for i in range(1, n_lines + 1)),
        paid=paid,
        placed_at=T0 - timedelta(minutes=1),
    )


def outcome_id(line: int, order_id: str = ORDER) -> str:
    # Inventory answers a (order, line) once, under this id, whether reserved or rejected.
    return derive_id("reserve-outcome", order_id, line)


def reserved(line: int, *, order_id: str = ORDER, minutes: int = 1) -> StockReserved:
    return StockReserved(event_id=outcome_id(line, order_id), correlation_id=order_id,
                         occurred_at=T0 + timedelta(minutes=minutes), order_id=order_id,
                         line=line, sku=sku_of(line), quantity=line)


def rejected(line: int, *, order_id: str = ORDER, minutes: int = 1,
             reason: str = "insufficient_stock") -> StockRejected:
    return StockRejected(event_id=outcome_id(line, order_id), correlation_id=order_id,
                         occurred_at=T0 + timedelta(minutes=minutes), order_id=order_id,
                         line=line, sku=sku_of(line), quantity=line, reason=reason)


def started(n_lines: int = 3) -> OrderState:
    state = on_submitted(None, submitted(n_lines)).state
    assert state is not None
    return state


def run(state: OrderState, outcomes: list[InventoryOutcome]) -> tuple[OrderState, list[Decision]]:
    decisions = []
    for outcome in outcomes:
        decision = on_inventory(state, outcome)
        assert decision.state is not None
        state = decision.state
        decisions.append(decision)
    return state, decisions


def releases_by_line(decisions: list[Decision]) -> Counter[int]:
    return Counter(c.line for d in decisions for c in d.commands
                   if isinstance(c, ReleaseReservation))


def terminal_changes(decisions: list[Decision]) -> list[Any]:
    return [ch for d in decisions for ch in d.changes if ch.to_status in TERMINAL]


def outcome_for(line: int, ok: bool, minutes: int = 1) -> InventoryOutcome:
    return reserved(line, minutes=minutes) if ok else rejected(line, minutes=minutes)


# --- on_submitted ------------------------------------------------------------------------


def test_submitted_order_starts_submitted_with_one_reserve_command_per_line() -> None:
    order = submitted(3, paid=True)
    decision = on_submitted(None, order)

    state = decision.state
    assert state is not None
    assert state.status is OrderStatus.SUBMITTED
    assert (state.order_id, state.channel, state.channel_order_id, state.customer_id) == (
        ORDER, "web", "W-ord-1", "cust-42")
    assert state.paid is True
    assert {k: (ln.sku, ln.quantity, ln.state) for k, ln in state.lines.items()} == {
        "1": ("SKU-001", 1, "pending"), "2": ("SKU-002", 2, "pending"),
        "3": ("SKU-003", 3, "pending")}

    assert all(isinstance(c, ReserveStock) for c in decision.commands)
    assert [(c.line, c.sku, c.quantity) for c in decision.commands] == [
        (1, "SKU-001", 1), (2, "SKU-002", 2), (3, "SKU-003", 3)]
    assert [c.event_id for c in decision.commands] == [
        derive_id("reserve", ORDER, i) for i in (1, 2, 3)]
    assert {c.order_id for c in decision.commands} == {ORDER}
    assert {c.correlation_id for c in decision.commands} == {ORDER}


def test_submitted_order_emits_one_change_from_nothing_to_submitted() -> None:
    order = submitted(2)
    [change] = on_submitted(None, order).changes
    assert (change.from_status, change.to_status) == (None, OrderStatus.SUBMITTED)
    assert (change.order_id, change.channel, change.channel_order_id, change.customer_id) == (
        ORDER, Channel.WEB, "W-ord-1", "cust-42")
    assert (change.at, change.cause_event_id) == (T0, order.event_id)
    assert change.event_id == derive_id("status", ORDER, OrderStatus.SUBMITTED)
    assert change.correlation_id == ORDER


def test_submitted_order_yields_the_same_ids_every_time() -> None:
    a, b = on_submitted(None, submitted()), on_submitted(None, submitted())
    assert [c.event_id for c in a.commands] == [c.event_id for c in b.commands]
    assert [c.event_id for c in a.changes] == [c.event_id for c in b.changes]
    assert a.state == b.state


def test_duplicate_submission_changes_nothing() -> None:
    state = started()
    decision = on_submitted(state, submitted())
    assert decision.state is state
    assert (decision.commands, decision.changes, decision.changed) == ([], [], False)


# --- all lines reserved ------------------------------------------------------------------


@pytest.mark.parametrize("order", list(itertools.permutations([1, 2, 3])))
def test_all_lines_reserved_in_any_order_moves_to_reserved_exactly_once(
    order: tuple[int, ...],
) -> None:
    state, decisions = run(started(3), [reserved(line, minutes=i)
                                        for i, line in enumerate(order, start=1)])
    assert state.status is OrderStatus.RESERVED
    assert all(d.commands == [] for d in decisions)
    assert [d.changes for d in decisions[:-1]] == [[], []]
    [change] = decisions[-1].changes
    assert (change.from_status, change.to_status) == (OrderStatus.SUBMITTED, OrderStatus.RESERVED)
    assert change.cause_event_id == outcome_id(order[-1])
    assert change.at == T0 + timedelta(minutes=3)
    assert change.event_id == derive_id("status", ORDER, OrderStatus.RESERVED)


def test_partly_reserved_order_stays_submitted() -> None:
    state, decisions = run(started(3), [reserved(1), reserved(3)])
    assert state.status is OrderStatus.SUBMITTED
    assert {k: ln.state for k, ln in state.lines.items()} == {
        "1": "reserved", "2": "pending", "3": "reserved"}
    assert not any(d.changed for d in decisions)


def test_single_line_order_is_reserved_by_its_one_reservation() -> None:
    state, [decision] = run(started(1), [reserved(1)])
    assert state.status is OrderStatus.RESERVED
    assert [c.to_status for c in decision.changes] == [OrderStatus.RESERVED]


# --- a refused line ----------------------------------------------------------------------


def test_rejection_moves_to_rejected_and_releases_the_lines_already_reserved() -> None:
    state, decisions = run(started(3), [reserved(1), reserved(2), rejected(3)])
    last = decisions[-1]
    assert state.status is OrderStatus.REJECTED
    assert all(isinstance(c, ReleaseReservation) for c in last.commands)
    assert sorted((c.line, c.sku, c.reason) for c in last.commands) == [
        (1, "SKU-001", "order_rejected"), (2, "SKU-002", "order_rejected")]
    assert {c.event_id for c in last.commands} == {
        derive_id("release-cmd", ORDER, "1"), derive_id("release-cmd", ORDER, "2")}
    [change] = last.changes
    assert (change.from_status, change.to_status) == (OrderStatus.SUBMITTED, OrderStatus.REJECTED)
    assert change.cause_event_id == outcome_id(3)
    assert "SKU-003" in change.detail
    assert "SKU-001" not in change.detail and "SKU-002" not in change.detail
    assert {k: ln.state for k, ln in state.lines.items()} == {
        "1": "released", "2": "released", "3": "rejected"}


def test_first_outcome_rejected_moves_to_rejected_with_nothing_to_release() -> None:
    state, [decision] = run(started(3), [rejected(2, reason="unknown_sku")])
    assert state.status is OrderStatus.REJECTED
    assert decision.commands == []
    [change] = decision.changes
    assert change.to_status is OrderStatus.REJECTED
    assert change.detail == "out of stock: SKU-002"


def test_late_reservation_after_rejection_is_released() -> None:
    state, decisions = run(started(3), [rejected(1), reserved(2)])
    late = decisions[-1]
    assert state.status is OrderStatus.REJECTED
    assert late.changes == []
    [release] = late.commands
    assert isinstance(release, ReleaseReservation)
    assert (release.line, release.sku, release.reason) == (2, "SKU-002", "order_rejected")
    assert release.event_id == derive_id("release-cmd", ORDER, "2")
    assert state.lines["2"].state == "released"


def test_second_rejection_after_rejected_changes_no_status() -> None:
    state, decisions = run(started(3), [rejected(1), rejected(2)])
    assert state.status is OrderStatus.REJECTED
    assert (decisions[-1].commands, decisions[-1].changes) == ([], [])
    assert state.lines["2"].state == "rejected"


def test_other_inventory_outcomes_are_only_remembered() -> None:
    state = started(2)
    echo = ReservationReleased(order_id=ORDER, line=1, sku=sku_of(1), quantity=1,
                               reason="order_rejected")
    decision = on_inventory(state, echo)
    assert decision.state is not None
    assert (decision.commands, decision.changes) == ([], [])
    assert decision.state.status is OrderStatus.SUBMITTED
    assert echo.event_id in decision.state.seen


# --- replays and strays ------------------------------------------------------------------

SEQUENCES = {
    "all_reserved": [reserved(1), reserved(2), reserved(3)],
    "rejected_last": [reserved(1), reserved(2), rejected(3)],
    "rejected_first_then_late_holds": [rejected(2), reserved(1), reserved(3)],
    "rejected_twice": [reserved(3), rejected(1), rejected(2)],
}


@pytest.mark.parametrize("outcomes", list(SEQUENCES.values()), ids=list(SEQUENCES))
def test_replaying_any_outcome_at_any_point_changes_nothing(
    outcomes: list[InventoryOutcome],
) -> None:
    state = started(3)
    for outcome in outcomes:
        decision = on_inventory(state, outcome)
        assert decision.state is not None
        state = decision.state
        for seen_before in outcomes[: outcomes.index(outcome) + 1]:
            replay = on_inventory(state, seen_before)
            assert replay.state == state
            assert (replay.commands, replay.changes, replay.changed) == ([], [], False)


def test_outcome_for_an_unknown_order_is_rejected_unknown_order() -> None:
    with pytest.raises(InvalidRecord) as info:
        on_inventory(None, reserved(1))
    assert info.value.reason == "unknown_order"


def test_outcome_for_a_line_the_order_does_not_have_is_rejected_unknown_line() -> None:
    with pytest.raises(InvalidRecord) as info:
        on_inventory(started(2), reserved(3))
    assert info.value.reason == "unknown_line"


# --- exhaustive and property-based: any delivery, the same end ---------------------------


def check_saga(results: dict[int, bool], deliveries: list[int]) -> None:
    """Deliver each line's outcome in ``deliveries`` order (repeats are redeliveries)."""
    n = len(results)
    first = on_submitted(None, submitted(n))
    assert first.state is not None
    state, decisions = run(first.state, [outcome_for(line, results[line], minutes=i)
                                         for i, line in enumerate(deliveries, start=1)])
    all_reserved = all(results.values())
    assert state.status is (OrderStatus.RESERVED if all_reserved else OrderStatus.REJECTED)

    changes = [ch for d in [first, *decisions] for ch in d.changes]
    assert [ch.to_status for ch in changes] == [OrderStatus.SUBMITTED, state.status]
    [terminal] = terminal_changes(decisions)
    assert terminal.from_status is OrderStatus.SUBMITTED

    released = releases_by_line(decisions)
    if all_reserved:
        assert released == Counter()
    else:
        # every line inventory held is given back, exactly once; no refused line is
        assert released == Counter({line: 1 for line, ok in results.items() if ok})
    assert not any(isinstance(c, ReserveStock) for d in decisions for c in d.commands)


@pytest.mark.parametrize(
    ("results", "deliveries"),
    [
        (dict(enumerate(oks, start=1)), list(perm))
        for oks in itertools.product([True, False], repeat=3)
        for perm in itertools.permutations([1, 2, 3])
    ],
)
def test_every_outcome_mix_in_every_order_of_three_lines(
    results: dict[int, bool], deliveries: list[int],
) -> None:
    check_saga(results, deliveries)


@st.composite
def deliveries_of_outcomes(draw: st.DrawFn) -> tuple[dict[int, bool], list[int]]:
    n = draw(st.integers(1, 5))
    results = {line: draw(st.booleans()) for line in range(1, n + 1)}
    order = draw(st.permutations(list(results)))
    duplicates = draw(st.lists(st.sampled_from(list(results)), max_size=2 * n))
    deliveries = list(order)
    for line in duplicates:
        # a redelivery comes after the original, anywhere later
        earliest = deliveries.index(line) + 1
        deliveries.insert(draw(st.integers(earliest, len(deliveries))), line)
    return results, deliveries


@given(deliveries_of_outcomes())
def test_any_delivery_order_with_duplicates_ends_in_the_one_right_terminal_status(
    case: tuple[dict[int, bool], list[int]],
) -> None:
    results, deliveries = case
    check_saga(results, deliveries)
