"""Stale-order digests: grouped by status, times in the merchant's zone, every WeCom message
within its byte limit, and no order silently dropped — listed, or counted in a "more" line."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.status.notices import (
    StaleNotice,
    digest_email,
    digest_markdown,
    format_stuck,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 1, 20, 18, 0, tzinfo=UTC)  # 2026-01-21 02:00 in Shanghai

ORDER_LINE = re.compile(r"^- `([^`]*)` ")
MORE_LINE = re.compile(r"^> … and ([\d,]+) more ")
HEADING = re.compile(r"^\*\*(.+)\*\* · [\d,]+ orders?( \(cont\.\))?$")


def notice(order_id: str = "ord-1", *, status: str = "PAID", stuck: timedelta = timedelta(hours=3),
           channel: str = "tmall", alerts: int = 1, carrier: str | None = None,
           tracking: str | None = None) -> StaleNotice:
    since = NOW - stuck
    return StaleNotice(order_id=order_id, channel=channel, status=status, since=since,
                       deadline=since + timedelta(hours=1), alert_count=alerts,
                       tracking_number=tracking, carrier=carrier)


def parse(messages: list[str]) -> tuple[Counter[str], Counter[str]]:
    """(order ids listed, orders counted in "more" lines) per status, from the messages."""
    listed: Counter[str] = Counter()
    more: Counter[str] = Counter()
    for message in messages:
        status = None
        for line in message.splitlines():
            if heading := HEADING.match(line):
                status = heading.group(1)
            elif order := ORDER_LINE.match(line):
                assert status is not None, "an order line before any status heading"
                listed[f"{status}/{order.group(1)}"] += 1
            elif extra := MORE_LINE.match(line):
                assert status is not None
                more[status] += int(extra.group(1).replace(",", ""))
    return listed, more


# --- layout ------------------------------------------------------------------------------


def test_orders_are_grouped_by_status_in_lifecycle_order_with_counts() -> None:
    notices = [notice("a", status="PACKED"), notice("b", status="PAID"),
               notice("c", status="PACKED"), notice("d", status="IN_TRANSIT")]

    [message] = digest_markdown(notices, zone=SHANGHAI, now=NOW)

    headings = [line for line in message.splitlines() if HEADING.match(line)]
    assert headings == ["**PAID** · 1 order", "**PACKED** · 2 orders",
                        "**IN_TRANSIT** · 1 order"]
    assert message.startswith("## Stale orders: 4\n")


def test_each_line_shows_how_long_the_order_has_been_stuck_longest_first() -> None:
    notices = [notice("short", stuck=timedelta(minutes=45)),
               notice("long", stuck=timedelta(hours=3, minutes=12))]

    [message] = digest_markdown(notices, zone=SHANGHAI, now=NOW)

    lines = [line for line in message.splitlines() if ORDER_LINE.match(line)]
    assert "`long`" in lines[0] and "stuck 3 h 12 min" in lines[0]
    assert "`short`" in lines[1] and "stuck 45 min" in lines[1]


@pytest.mark.parametrize(("delta", "text"), [
    (timedelta(seconds=59), "0 min"),
    (timedelta(minutes=45), "45 min"),
    (timedelta(hours=3, minutes=12, seconds=59), "3 h 12 min"),
    (timedelta(days=2, hours=5, minutes=30), "2 d 5 h"),
    (timedelta(minutes=-5), "0 min"),  # clock skew never shows a negative age
])
def test_time_stuck_reads_at_a_glance(delta: timedelta, text: str) -> None:
    assert format_stuck(delta) == text


def test_times_are_shown_in_the_merchant_zone_even_on_another_calendar_day() -> None:
    # 2026-01-20 17:30 UTC is already 2026-01-21 01:30 in Shanghai.
    since = datetime(2026, 1, 20, 17, 30, tzinfo=UTC)
    stuck = StaleNotice("ord-night", "jd", "PAID", since, since + timedelta(minutes=20), 1,
                        None, None)

    [message] = digest_markdown([stuck], zone=SHANGHAI, now=NOW)

    assert "Asia/Shanghai (UTC+08:00)" in message
    assert "as of 2026-01-21 02:00" in message
    assert "since 01-21 01:30" in message and "due 01-21 01:50" in message
    assert "01-20 17:30" not in message
    mail = digest_email([stuck], zone=SHANGHAI, now=NOW, sender="a@shop.example",
                        recipients=["ops@shop.example"])
    body = mail.get_content()
    assert "since 2026-01-21 01:30" in body and "Asia/Shanghai (UTC+08:00)" in body


def test_shipping_details_and_repeat_alerts_are_shown() -> None:
    [message] = digest_markdown(
        [notice("o1", status="IN_TRANSIT", carrier="顺丰", tracking="SF1234567890", alerts=3)],
        zone=SHANGHAI, now=NOW)
    assert "alert #3" in message and "顺丰 SF1234567890" in message


def test_markup_in_free_text_cannot_break_the_line_or_inject_tags() -> None:
    [message] = digest_markdown(
        [notice("ord`1\n**x**", channel='<font color="warning">x</font>')],
        zone=SHANGHAI, now=NOW)
    order_lines = [line for line in message.splitlines() if line.startswith("- ")]
    assert len(order_lines) == 1
    assert "<font" not in message and "`ord'1 **x**`" in order_lines[0]


def test_no_notices_means_no_messages() -> None:
    assert digest_markdown([], zone=SHANGHAI, now=NOW) == []


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="tz-aware"):
        StaleNotice("o", "web", "PAID", datetime(2026, 1, 1), NOW, 1, None, None)  # noqa: DTZ001
    with pytest.raises(ValueError, match="tz-aware"):
        digest_markdown([notice()], zone=SHANGHAI, now=datetime(2026, 1, 1))  # noqa: DTZ001


# --- limits --------------------------------------------------------------------------------


def test_an_alert_storm_stays_within_a_few_messages_and_counts_the_rest() -> None:
    statuses = ["PAID", "PACKED", "IN_TRANSIT", "OUT_FOR_DELIVERY"]
    notices = [notice(f"订单-{i:05d}", status=statuses[i % 4], stuck=timedelta(minutes=i),
                      carrier="中通快递", tracking=f"ZT{i:012d}") for i in range(5000)]

    messages = digest_markdown(notices, zone=SHANGHAI, now=NOW)

    assert len(messages) <= 3
    assert all(len(m.encode("utf-8")) <= 4096 for m in messages)
    listed, more = parse(messages)
    assert sum(listed.values()) + sum(more.values()) == 5000
    assert "> … and 1,235 more PAID" in "\n".join(messages)
    assert messages[0].startswith("## Stale orders: 5,000 (1/")


def test_a_small_digest_is_one_message_and_a_long_one_is_split_between_lines() -> None:
    notices = [notice(f"订单-{i}", stuck=timedelta(hours=i)) for i in range(60)]

    one = digest_markdown(notices[:5], zone=SHANGHAI, now=NOW)
    split = digest_markdown(notices, zone=SHANGHAI, now=NOW, limit_bytes=2048)

    assert len(one) == 1
    assert len(split) > 1
    assert all(len(m.encode("utf-8")) <= 2048 for m in split)
    assert split[1].splitlines()[2] == "**PAID** · 60 orders (cont.)"
    assert [m.splitlines()[0] for m in split] == [
        f"## Stale orders: 60 ({i}/{len(split)})" for i in range(1, len(split) + 1)]


statuses = st.sampled_from(["PAID", "PACKED", "SUBMITTED", "IN_TRANSIT", "待发货", "异常"])
texts = st.text(alphabet=st.sampled_from("abcXYZ0189-_订单号顺丰京东 é"), min_size=1, max_size=18)
ids = st.text(alphabet=st.sampled_from("abcXYZ0189-_订单号é"), min_size=1, max_size=18)


@st.composite
def notice_lists(draw: st.DrawFn) -> list[StaleNotice]:
    """Up to 300 notices. Hypothesis draws the shape (count, pools of names and texts) and a
    seeded generator fills in the many per-order values, which keeps big lists cheap."""
    count = draw(st.integers(0, 300))
    names = draw(st.lists(statuses, min_size=1, max_size=6))
    words = draw(st.lists(texts, min_size=1, max_size=6))
    id_stems = draw(st.lists(ids, min_size=1, max_size=6))
    rng = draw(st.randoms(use_true_random=False))
    result = []
    for i in range(count):
        since = NOW - timedelta(minutes=rng.randint(-10, 60 * 24 * 40))
        result.append(StaleNotice(
            order_id=f"{rng.choice(id_stems)}#{i}",  # unique, so each can be found again
            channel=rng.choice(words), status=rng.choice(names), since=since,
            deadline=since + timedelta(minutes=rng.randint(1, 60 * 72)),
            alert_count=rng.randint(1, 500),
            tracking_number=rng.choice([None, *words]), carrier=rng.choice([None, *words]),
        ))
    return result


@settings(max_examples=200, deadline=None)
@given(notices=notice_lists(), limit=st.integers(1024, 4096), max_listed=st.integers(0, 120))
def test_every_message_fits_and_every_order_is_listed_or_counted(
        notices: list[StaleNotice], limit: int, max_listed: int) -> None:
    messages = digest_markdown(notices, zone=SHANGHAI, now=NOW, limit_bytes=limit,
                               max_listed=max_listed)

    assert all(len(m.encode("utf-8")) <= limit for m in messages)
    listed, more = parse(messages)
    expected = Counter(f"{n.status}/{n.order_id}" for n in notices)
    assert max(listed.values(), default=1) == 1, "an order listed twice"
    assert set(listed) <= set(expected)
    per_status = Counter(n.status for n in notices)
    listed_per_status = Counter(key.split("/", 1)[0] for key in listed)
    for status, count in per_status.items():
        assert listed_per_status[status] + more[status] == count, status
    assert sum(listed.values()) <= max_listed


# --- e-mail ----------------------------------------------------------------------------------


def test_the_mail_lists_every_order_and_its_subject_says_how_many_and_where() -> None:
    notices = [notice(f"订单-{i}", status=["PAID", "PACKED"][i % 2]) for i in range(700)]

    mail = digest_email(notices, zone=SHANGHAI, now=NOW, sender="alerts@shop.example",
                        recipients=["ops@shop.example", "lead@shop.example"],
                        subject_prefix="[订单告警] ")
    parsed = message_from_bytes(mail.as_bytes(), policy=policy.default)

    assert parsed["Subject"] == "[订单告警] 700 stale orders: PAID 350, PACKED 350"
    assert parsed["To"] == "ops@shop.example, lead@shop.example"
    body = parsed.get_content()
    assert all(f"  订单-{i}  " in body for i in range(700))
    assert "PAID — 350 orders" in body and "PACKED — 350 orders" in body


def test_the_mail_subject_stays_short_when_there_are_many_statuses() -> None:
    notices = [notice(f"o{i}", status=s) for i, s in enumerate(
        ["SUBMITTED", "RESERVED", "PAID", "PACKED", "PICKED_UP", "IN_TRANSIT"])]
    mail = digest_email(notices, zone=SHANGHAI, now=NOW, sender="a@shop.example",
                        recipients=["ops@shop.example"])
    assert mail["Subject"] == (
        "[orderstream] 6 stale orders: SUBMITTED 1, RESERVED 1, PAID 1, PACKED 1, …")
