"""Customers hear, in the app, that their order was confirmed or could not be."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notifier.domain import InAppMessage, in_app_message
from shared.events import Channel, OrderStatus, OrderStatusChanged

T0 = datetime(2026, 1, 20, 8, 0, tzinfo=UTC)
TOLD = {OrderStatus.RESERVED, OrderStatus.REJECTED}


# --- factories ---------------------------------------------------------------------------


def change(to_status: OrderStatus = OrderStatus.RESERVED, *, order_id: str = "ord-1",
           channel_order_id: str = "W-20260120-0001", customer_id: str = "cust-42",
           event_id: str | None = None, minutes: int = 0) -> OrderStatusChanged:
    fields: dict[str, Any] = {
        "order_id": order_id, "channel": Channel.WEB, "channel_order_id": channel_order_id,
        "customer_id": customer_id, "from_status": OrderStatus.SUBMITTED,
        "to_status": to_status, "at": T0 + timedelta(minutes=minutes),
        "cause_event_id": f"cause-{minutes}", "occurred_at": T0 + timedelta(minutes=minutes),
    }
    if event_id is not None:
        fields["event_id"] = event_id
    return OrderStatusChanged(**fields)


def message(to_status: OrderStatus, **kwargs: Any) -> InAppMessage:
    result = in_app_message(change(to_status, **kwargs))
    assert result is not None
    return result


# --- which changes make a message --------------------------------------------------------


@pytest.mark.parametrize("status", sorted(TOLD))
def test_reserved_and_rejected_make_a_message_for_the_order_and_customer(
    status: OrderStatus,
) -> None:
    msg = message(status)
    assert isinstance(msg, InAppMessage)
    assert (msg.order_id, msg.customer_id, msg.status) == ("ord-1", "cust-42", status)
    assert msg.title
    assert "W-20260120-0001" in msg.body
    assert "{" not in msg.body and "}" not in msg.body


@pytest.mark.parametrize("status", sorted(set(OrderStatus) - TOLD))
def test_other_statuses_make_no_message(status: OrderStatus) -> None:
    assert in_app_message(change(status)) is None


def test_reserved_and_rejected_read_differently() -> None:
    ok, ko = message(OrderStatus.RESERVED), message(OrderStatus.REJECTED)
    assert ok.title != ko.title
    assert ok.body != ko.body


# --- the message id: one message per (order, status) -------------------------------------


@pytest.mark.parametrize("status", sorted(TOLD))
def test_replayed_change_yields_the_same_message_id(status: OrderStatus) -> None:
    first = message(status, event_id="e-1", minutes=0)
    replay = message(status, event_id="e-2", minutes=5)
    assert first.message_id == replay.message_id
    assert first == replay


def test_message_id_differs_per_order_and_per_status() -> None:
    ids = {
        message(status, order_id=order_id).message_id
        for status in TOLD for order_id in ("ord-1", "ord-2")
    }
    assert len(ids) == 4


def test_message_id_does_not_depend_on_the_channel_order_id_or_customer() -> None:
    a = message(OrderStatus.RESERVED, channel_order_id="A", customer_id="c-1")
    b = message(OrderStatus.RESERVED, channel_order_id="B", customer_id="c-2")
    assert a.message_id == b.message_id


@given(channel_order_id=st.text(min_size=1, max_size=64), status=st.sampled_from(sorted(TOLD)))
def test_any_channel_order_id_appears_verbatim_in_the_body(
    channel_order_id: str, status: OrderStatus,
) -> None:
    msg = message(status, channel_order_id=channel_order_id)
    assert channel_order_id in msg.body
