"""Time helpers: every instant inside orderstream is tz-aware UTC; zones only at the edges."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_utc(value: datetime) -> datetime:
    """Convert an aware datetime to UTC; a naive one is a bug and raises."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: an instant must carry its time zone")
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00+01:00: no such instant in UTC
        raise ValueError(f"instant out of range in UTC: {value.isoformat()}") from exc


def localize(naive: datetime, zone: str) -> datetime:
    """Read a naive wall-clock time in ``zone`` (IANA name) and return it in UTC.

    Ambiguous wall times (the repeated hour when DST ends) resolve to the first
    occurrence (``fold=0``); nonexistent ones (the skipped hour when DST starts) are
    shifted forward by the gap, as ``zoneinfo`` does.
    """
    if naive.tzinfo is not None:
        return to_utc(naive)
    return to_utc(naive.replace(tzinfo=ZoneInfo(zone), fold=0))


def business_day_bounds(day: date, zone: str) -> tuple[datetime, datetime]:
    """The UTC half-open interval [start, end) of calendar day ``day`` in ``zone``."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time.min, tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)
