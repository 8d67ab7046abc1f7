"""What a channel record means given what was seen before: new, duplicate, or an update."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.ingestion.channels import ADAPTERS
from services.ingestion.channels.base import (
    ChannelCustomer,
    ChannelLine,
    ChannelOrder,
    PaymentState,
)
from services.ingestion.domain import Seen, channel_of, decide, order_id_for, read
from shared.codec import InvalidRecord
from shared.events import PaymentConfirmed, PaymentFailed

UNPAID, PAID, CANCELLED = PaymentState.UNPAID, PaymentState.PAID, PaymentState.CANCELLED


def channel_order(payment: PaymentState, order: str = "T-1") -> ChannelOrder:
    return ChannelOrder(
        channel="tmall", channel_order_id=order, currency="CNY",
        placed_at=datetime(2026, 1, 19, 16, 30, tzinfo=UTC),
        customer=ChannelCustomer(customer_id="buyer-1"),
        lines=(ChannelLine(sku="SKU-1", quantity=2, unit_price=Decimal("19.90")),),
        payment=payment,
    )


def test_a_new_order_is_accepted_as_one_order_submitted():
    decision = decide(None, channel_order(UNPAID))
    assert decision.outcome == "accepted"
    assert decision.submitted is not None and decision.submitted.paid is False
    assert decision.submitted.total == Decimal("39.80")
    assert decision.seen == Seen(order_id=order_id_for("tmall", "T-1"), payment=UNPAID)
    assert decision.payments == []


def test_an_order_already_paid_is_submitted_as_paid():
    assert decide(None, channel_order(PAID)).submitted.paid is True


def test_the_same_state_again_is_a_duplicate_that_emits_nothing():
    seen = decide(None, channel_order(UNPAID)).seen
    decision = decide(seen, channel_order(UNPAID))
    assert (decision.outcome, decision.seen, decision.submitted, decision.payments) == (
        "duplicate", None, None, [])


def test_paid_after_created_is_a_payment_confirmed_not_a_second_order():
    seen = decide(None, channel_order(UNPAID)).seen
    decision = decide(seen, channel_order(PAID))
    assert decision.outcome == "payment_update" and decision.submitted is None
    (confirmed,) = decision.payments
    assert isinstance(confirmed, PaymentConfirmed)
    assert confirmed.order_id == seen.order_id and confirmed.amount == Decimal("39.80")
    assert decide(seen, channel_order(PAID)).payments[0].event_id == confirmed.event_id
    assert decision.seen.payment == PAID


def test_cancelled_before_payment_is_a_payment_failed():
    seen = decide(None, channel_order(UNPAID)).seen
    (failed,) = decide(seen, channel_order(CANCELLED)).payments
    assert isinstance(failed, PaymentFailed) and failed.reason == "cancelled_by_channel"


def test_an_older_unpaid_snapshot_after_payment_is_stale_and_changes_nothing():
    seen = Seen(order_id=order_id_for("tmall", "T-1"), payment=PAID)
    decision = decide(seen, channel_order(UNPAID))
    assert (decision.outcome, decision.seen, decision.payments) == ("stale_update", None, [])


def test_an_order_first_seen_cancelled_is_remembered_but_not_submitted():
    decision = decide(None, channel_order(CANCELLED))
    assert decision.outcome == "ignored" and decision.submitted is None
    later = decide(decision.seen, channel_order(PAID))
    assert later.submitted is None and later.payments == []


@given(st.lists(st.sampled_from([UNPAID, PAID, CANCELLED]), min_size=1, max_size=12))
def test_any_sequence_of_snapshots_gives_at_most_one_order_and_one_payment_outcome(states):
    seen, submitted, payments = None, [], []
    for state in states:
        decision = decide(seen, channel_order(state))
        if decision.seen is not None:
            seen = decision.seen
        submitted += [decision.submitted] if decision.submitted else []
        payments += decision.payments
    assert len(submitted) == (0 if states[0] == CANCELLED else 1)
    assert len(payments) <= 1
    if payments:
        assert isinstance(payments[0], PaymentConfirmed | PaymentFailed)
    # replaying the whole sequence from the final state changes nothing more
    for state in states:
        again = decide(seen, channel_order(state))
        assert again.submitted is None
        assert again.payments == [] or again.payments[0].event_id == payments[0].event_id


SAMPLE_BYTES = [p.read_bytes() for p in sorted(
    (Path(__file__).parents[2] / "samples").glob("*/*.json"))]
CHANNELS = sorted(ADAPTERS)


def _mutate(data: bytes, cut: int, junk: bytes) -> bytes:
    return data[: cut % (len(data) + 1)] + junk


@given(
    raw=st.one_of(st.binary(max_size=300), st.sampled_from(SAMPLE_BYTES),
                  st.builds(_mutate, st.sampled_from(SAMPLE_BYTES), st.integers(0, 5000),
                            st.binary(max_size=20))),
    header=st.one_of(st.none(), st.sampled_from([*CHANNELS, "", "amazon"])),
    key=st.one_of(st.none(), st.text(max_size=30),
                  st.sampled_from([f"{c}:x" for c in CHANNELS])),
    zone=st.sampled_from(["Asia/Shanghai", "UTC", "America/New_York"]),
)
def test_any_raw_record_is_an_order_decision_or_a_named_rejection(raw, header, key, zone):
    """What the ingestion agent does before any I/O, for any bytes, header and key: it
    ends in a decision, or in a rejection that names its reason for the dead-letter record
    (pydantic's errors become reason invalid_event). Nothing else may escape."""
    headers = {} if header is None else {"channel": header}
    try:
        channel = channel_of(headers, key)
        decision = decide(None, read(channel, raw, zone=zone))
    except InvalidRecord as exc:
        assert exc.reason and exc.error
        return
    except ValidationError as exc:
        assert exc.error_count() > 0
        return
    assert decision.outcome in ("accepted", "ignored")
    assert decision.submitted is None or decision.submitted.placed_at.tzinfo is UTC
