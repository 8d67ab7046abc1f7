"""The outage in the requirements, replayed: Shopify orders of 2026-01-20 00:00-08:00
Asia/Shanghai relayed with naive local times were stored as if UTC, and a scheduler that
took "today's" orders saw them as yesterday's. Read in the channel's zone, they land in the
merchant's 2026-01-20 business day."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from services.ingestion.domain import normalise
from shared.timeutil import business_day_bounds

SAMPLE = Path(__file__).parents[2] / "samples" / "shopify" / "paid.json"


def relayed_without_offset(hour: int, minute: int) -> dict:
    order = json.loads(SAMPLE.read_text())
    order = order.get("order", order)
    order["id"] = 5_000_000_000_000 + hour * 60 + minute
    naive = f"2026-01-20T{hour:02d}:{minute:02d}:00"
    for key in ("created_at", "processed_at", "updated_at"):
        if key in order:
            order[key] = naive
    return order


@pytest.mark.parametrize(("hour", "minute"), [(0, 0), (0, 30), (3, 15), (7, 59)])
def test_naive_shopify_times_of_early_morning_shanghai_are_in_that_business_day(hour, minute):
    placed = normalise("shopify", relayed_without_offset(hour, minute),
                       zone="Asia/Shanghai").placed_at
    start, end = business_day_bounds(date(2026, 1, 20), "Asia/Shanghai")
    assert start <= placed < end
    assert placed == datetime(2026, 1, 19, 16 + hour, minute, tzinfo=UTC)
    # In UTC these instants are on 2026-01-19: a scheduler asking for "today" in UTC on
    # the 20th does not see them. "Today" is always asked in the merchant's zone.
    utc_start, utc_end = business_day_bounds(date(2026, 1, 20), "UTC")
    assert not utc_start <= placed < utc_end


def test_the_same_orders_with_offsets_are_unaffected_by_the_channel_zone():
    order = relayed_without_offset(1, 0)
    order["created_at"] = "2026-01-20T01:00:00+08:00"
    for zone in ("Asia/Shanghai", "UTC", "America/New_York"):
        assert normalise("shopify", order, zone=zone).placed_at == datetime(
            2026, 1, 19, 17, tzinfo=UTC)
