"""Time helpers: instants are UTC inside, zones (with their DST quirks) only at the edges."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.timeutil import business_day_bounds, localize, to_utc, utc_now

ZONES = [
    "Asia/Shanghai", "America/New_York", "Europe/Berlin", "America/Santiago",
    "Australia/Lord_Howe", "Asia/Kolkata", "Pacific/Chatham", "UTC",
]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def naive(*args: int) -> datetime:
    return datetime(*args)  # noqa: DTZ001 - wall-clock input is naive by design


class NoOffset(tzinfo):
    """A tzinfo that does not know its offset: still not an instant."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None


# --- to_utc / utc_now ------------------------------------------------------------------------


def test_to_utc_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        to_utc(naive(2026, 1, 20, 8, 0))


def test_to_utc_rejects_a_tzinfo_without_offset() -> None:
    with pytest.raises(ValueError, match="naive"):
        to_utc(datetime(2026, 1, 20, 8, 0, tzinfo=NoOffset()))


def test_to_utc_converts_aware_values_to_the_same_instant_in_utc() -> None:
    local = datetime(2026, 1, 20, 0, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
    converted = to_utc(local)
    assert converted == utc(2026, 1, 19, 16, 30)
    assert converted.tzinfo is UTC


def test_utc_now_is_aware_utc() -> None:
    now = utc_now()
    assert now.tzinfo is UTC
    assert abs(datetime.now(UTC) - now) < timedelta(seconds=5)


# --- localize --------------------------------------------------------------------------------


def test_localize_reads_wall_time_in_the_zone_and_returns_utc() -> None:
    result = localize(naive(2026, 1, 20, 0, 30), "Asia/Shanghai")
    assert result == utc(2026, 1, 19, 16, 30)
    assert result.tzinfo is UTC


def test_localize_passes_aware_values_through_as_utc() -> None:
    aware = datetime(2026, 1, 20, 0, 30, tzinfo=timezone(timedelta(hours=9)))
    assert localize(aware, "Asia/Shanghai") == utc(2026, 1, 19, 15, 30)


def test_localize_rejects_unknown_zone_names() -> None:
    with pytest.raises(ZoneInfoNotFoundError):
        localize(naive(2026, 1, 20), "Mars/Olympus")


@pytest.mark.parametrize(("zone", "wall", "expected"), [
    # New York falls back 02:00 EDT -> 01:00 EST: 01:30 happens twice; the EDT one is first.
    ("America/New_York", naive(2026, 11, 1, 1, 30), utc(2026, 11, 1, 5, 30)),
    # Berlin falls back 03:00 CEST -> 02:00 CET: 02:30 CEST comes first.
    ("Europe/Berlin", naive(2026, 10, 25, 2, 30), utc(2026, 10, 25, 0, 30)),
])
def test_ambiguous_wall_time_resolves_to_the_first_occurrence(
    zone: str, wall: datetime, expected: datetime
) -> None:
    assert localize(wall, zone) == expected
    second = wall.replace(fold=1, tzinfo=ZoneInfo(zone)).astimezone(UTC)
    assert second - expected == timedelta(hours=1)


def test_ambiguous_wall_time_with_fold_1_still_resolves_to_the_first_occurrence() -> None:
    wall = naive(2026, 11, 1, 1, 30).replace(fold=1)
    assert localize(wall, "America/New_York") == utc(2026, 11, 1, 5, 30)


@pytest.mark.parametrize(("zone", "wall", "expected_wall"), [
    # New York springs forward 02:00 EST -> 03:00 EDT: 02:30 does not exist.
    ("America/New_York", naive(2026, 3, 8, 2, 30), naive(2026, 3, 8, 3, 30)),
    # Berlin springs forward 02:00 CET -> 03:00 CEST.
    ("Europe/Berlin", naive(2026, 3, 29, 2, 30), naive(2026, 3, 29, 3, 30)),
])
def test_nonexistent_wall_time_is_shifted_forward_by_the_gap(
    zone: str, wall: datetime, expected_wall: datetime
) -> None:
    result = localize(wall, zone)
    assert result.astimezone(ZoneInfo(zone)).replace(tzinfo=None) == expected_wall
    assert result == localize(expected_wall, zone)


@given(
    instant=st.datetimes(min_value=naive(1990, 1, 1), max_value=naive(2060, 1, 1)),
    zone=st.sampled_from(ZONES),
)
def test_localize_inverts_utc_to_wall_time_for_first_occurrences(
    instant: datetime, zone: str
) -> None:
    moment = instant.replace(tzinfo=UTC)
    wall = moment.astimezone(ZoneInfo(zone))
    read_back = localize(wall.replace(tzinfo=None, fold=0), zone)
    if wall.fold == 0:
        assert read_back == moment
    else:  # the repeated hour: localize picks the first occurrence, one DST step earlier
        assert read_back < moment


# --- business_day_bounds ---------------------------------------------------------------------


def test_business_day_bounds_in_shanghai() -> None:
    start, end = business_day_bounds(date(2026, 1, 20), "Asia/Shanghai")
    assert (start, end) == (utc(2026, 1, 19, 16, 0), utc(2026, 1, 20, 16, 0))
    assert start.tzinfo is UTC and end.tzinfo is UTC


@pytest.mark.parametrize(("zone", "day", "start", "hours"), [
    ("America/New_York", date(2026, 3, 8), utc(2026, 3, 8, 5, 0), 23),
    ("America/New_York", date(2026, 11, 1), utc(2026, 11, 1, 4, 0), 25),
    ("America/New_York", date(2026, 3, 9), utc(2026, 3, 9, 4, 0), 24),
    ("Europe/Berlin", date(2026, 3, 29), utc(2026, 3, 28, 23, 0), 23),
    ("Europe/Berlin", date(2026, 10, 25), utc(2026, 10, 24, 22, 0), 25),
    ("Europe/Berlin", date(2026, 10, 26), utc(2026, 10, 25, 23, 0), 24),
])
def test_business_day_bounds_across_dst_changes(
    zone: str, day: date, start: datetime, hours: int
) -> None:
    assert business_day_bounds(day, zone) == (start, start + timedelta(hours=hours))


@given(
    day=st.dates(min_value=date(2000, 1, 1), max_value=date(2050, 12, 31)),
    zone=st.sampled_from(ZONES),
)
def test_business_days_tile_time_without_gaps_or_overlaps(day: date, zone: str) -> None:
    start, end = business_day_bounds(day, zone)
    next_start, _ = business_day_bounds(day + timedelta(days=1), zone)
    assert end == next_start
    assert timedelta(hours=23) <= end - start <= timedelta(hours=25)
    assert start.astimezone(ZoneInfo(zone)).date() == day
