"""Warehouse notices and carrier scans as fulfilment events; stale alerts; the settings'
poll floor; the poller's rate limit."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.status.carriers import Scan, Stage
from services.status.poller import TokenBucket
from services.status.settings import StatusSettings
from services.status.stale import stale_alert
from services.status.tracking import news, notice_event, scan_event, scan_id
from shared.codec import InvalidRecord
from shared.events import Delivered, DeliveryException, OrderStatus, PickedUp

NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


def scan(stage: Stage = Stage.DELIVERED, at: datetime = NOW) -> Scan:
    return Scan(carrier="SF", tracking_number="SF100", stage=stage, scanned_at=at,
                description="已签收", location="深圳", provider_state="3")


# --- carrier scans ---------------------------------------------------------------------------


def test_a_scan_has_one_id_whichever_way_it_came() -> None:
    by_callback = scan_event(scan(), "ord-1", "carrier:kuaidi100", NOW + timedelta(seconds=1))
    by_poll = scan_event(scan(), "ord-1", "poller:kuaidi100", NOW + timedelta(minutes=6))
    assert by_callback.event_id == by_poll.event_id == scan_id(scan())
    assert isinstance(by_poll, Delivered)
    assert (by_poll.carrier, by_poll.tracking_number, by_poll.scanned_at, by_poll.location) == (
        "SF", "SF100", NOW, "深圳")
    assert by_poll.occurred_at == NOW + timedelta(minutes=6)  # when we heard: the poll clock


@given(st.sampled_from(list(Stage)), st.sampled_from(list(Stage)),
       st.integers(0, 10**6), st.integers(0, 10**6))
def test_different_scans_have_different_ids(a: Stage, b: Stage, s1: int, s2: int) -> None:
    first, second = scan(a, NOW + timedelta(seconds=s1)), scan(b, NOW + timedelta(seconds=s2))
    assert (scan_id(first) == scan_id(second)) == ((a, s1) == (b, s2))


def test_an_exception_scan_keeps_the_carriers_words() -> None:
    event = scan_event(scan(Stage.EXCEPTION), "ord-1", "poller:kuaidi100", NOW)
    assert isinstance(event, DeliveryException) and event.detail == "已签收"


# --- JSON notices ----------------------------------------------------------------------------


def body(**fields: object) -> bytes:
    return json.dumps({"event_type": "PickedUp", "order_id": "ord-1", "carrier": "sf",
                       "tracking_number": "SF100", **fields}).encode()


def test_a_notice_becomes_its_event_with_our_carrier_code() -> None:
    event = notice_event(body(scanned_at="2026-11-25T10:00:00+08:00"), "wms", NOW)
    assert isinstance(event, PickedUp)
    assert (event.carrier, event.source, event.scanned_at) == ("SF", "wms", NOW)


def test_a_resent_notice_is_the_same_event_and_a_sender_id_decides_when_given() -> None:
    assert notice_event(body(), "wms", NOW).event_id == notice_event(
        body(), "wms", NOW + timedelta(hours=1)).event_id
    assert notice_event(body(event_id="w-1"), "wms", NOW).event_id != notice_event(
        body(event_id="w-2"), "wms", NOW).event_id
    assert notice_event(body(), "wms", NOW).event_id != notice_event(body(), "wms-2", NOW).event_id


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{oops", "invalid_json"),
    (b"[1, 2]", "invalid_notice"),
    (b'\xff\xfe', "invalid_json"),
    (body(event_type="Teleported"), "invalid_notice"),
    (body(surprise=1), "invalid_notice"),
    (body(scanned_at="2026-11-25T10:00:00"), "invalid_notice"),  # naive: no zone, no guess
    (body(carrier="ACME"), "unknown_carrier"),
    (body(tracking_number=None), "invalid_notice"),
])
def test_a_bad_notice_says_why(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        notice_event(raw, "wms", NOW)
    assert info.value.reason == reason


# --- stale alerts ------------------------------------------------------------------------------


def stale_row(alerts: int = 0) -> dict[str, object]:
    return {"order_id": "ord-1", "channel": "web", "status": "PAID",
            "status_since": NOW - timedelta(hours=25), "deadline_at": NOW - timedelta(hours=1),
            "alerts": alerts, "carrier": None, "tracking_number": None, "last_scan_at": None}


def test_a_republished_stale_alert_is_a_duplicate_and_a_repeat_is_not() -> None:
    first, again, repeat = (stale_alert(stale_row(), NOW), stale_alert(stale_row(), NOW),
                            stale_alert(stale_row(alerts=1), NOW + timedelta(hours=6)))
    assert first.event_id == again.event_id != repeat.event_id
    assert first.alert_key == repeat.alert_key == "stale_order:ord-1"
    assert first.details["alert_number"] == 1 and repeat.details["alert_number"] == 2
    assert "PAID" in first.subject and "60 min past" in first.subject


# --- settings ----------------------------------------------------------------------------------


def test_polling_more_often_than_every_five_minutes_needs_saying_so() -> None:
    with pytest.raises(ValueError, match="below the minimum"):
        StatusSettings(poll_interval=60)
    assert StatusSettings(poll_interval=60, allow_short_poll=True).poll_interval == timedelta(
        seconds=60)


def test_stale_deadlines_merge_over_the_defaults_and_null_removes_one() -> None:
    settings = StatusSettings(stale_after={"PAID": "PT12H", "SUBMITTED": None})
    assert settings.stale_after[OrderStatus.PAID] == timedelta(hours=12)
    assert OrderStatus.SUBMITTED not in settings.stale_after
    assert settings.stale_after[OrderStatus.PICKED_UP] == timedelta(hours=48)


# --- the poller's rate limit -------------------------------------------------------------------


async def test_a_token_bucket_holds_callers_to_its_rate() -> None:
    bucket = TokenBucket(rate=20.0, burst=1.0)
    started = time.monotonic()
    for _ in range(6):
        await bucket.take()
    assert time.monotonic() - started >= 5 / 20 * 0.9  # the first is free, 5 waits of 50 ms


async def test_a_paused_bucket_waits_out_the_pause() -> None:
    bucket = TokenBucket(rate=1000.0)
    bucket.pause(0.2)
    started = time.monotonic()
    await asyncio.wait_for(bucket.take(), 5)
    assert time.monotonic() - started >= 0.18


# --- what of a provider's answer is news -------------------------------------------------------


def test_news_is_what_is_at_least_as_new_as_the_orders_newest_scan() -> None:
    scans = [scan(Stage.PICKED_UP, NOW), scan(Stage.IN_TRANSIT, NOW + timedelta(hours=1)),
             scan(Stage.DELIVERED, NOW + timedelta(hours=2))]
    assert news(scans, None) == scans
    assert news(scans, NOW + timedelta(hours=1)) == scans[1:]
    # the provider's whole seconds: a scan in the same second as the known one is kept
    assert news(scans, NOW + timedelta(hours=1, microseconds=500_000)) == scans[1:]
    assert news(scans, NOW + timedelta(hours=3)) == []
