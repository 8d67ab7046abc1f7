"""Inventory health score: each component at and around its threshold, unknowns, the total."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.inventory.health import (
    ACCURACY,
    RULES,
    SLOW,
    STOCKOUT,
    TURNOVER,
    Component,
    Health,
    SkuActivity,
    is_slow_moving,
    marks,
    overall_health,
    score,
    sku_health,
    turnover_days,
)

NOW = datetime(2026, 4, 1, tzinfo=UTC)
OLD = NOW - timedelta(days=365)  # in the ledger long enough to be slow-moving
DAY = timedelta(days=1)


def sku(name: str = "S", **fields) -> SkuActivity:
    return SkuActivity(sku=name, **fields)


def component_marks(h: Health) -> dict[str, float | None]:
    return {c.rule.name: c.marks for c in h.components}


# --- the partial-marks rule ------------------------------------------------------------------


def test_weights_are_the_requirements_and_add_up_to_one():
    assert [(r.name, r.weight) for r in RULES] == [
        ("turnover", 0.30), ("slow", 0.25), ("stockout", 0.25), ("accuracy", 0.20)]
    assert math.isclose(sum(r.weight for r in RULES), 1.0)
    assert (TURNOVER.threshold, SLOW.threshold, STOCKOUT.threshold, ACCURACY.threshold) == (
        45, 0.05, 0.01, 0.02)


@pytest.mark.parametrize("threshold", [r.threshold for r in RULES])
def test_full_marks_to_the_threshold_then_linear_to_zero_at_three_times(threshold):
    t = threshold
    assert marks(0, t) == 1.0
    assert marks(t * 0.999, t) == 1.0
    assert marks(t, t) == 1.0
    assert 0.999 < marks(t * 1.001, t) < 1.0
    assert marks(1.5 * t, t) == pytest.approx(0.75)
    assert marks(2 * t, t) == pytest.approx(0.5)
    assert marks(2.5 * t, t) == pytest.approx(0.25)
    assert 0 < marks(t * 2.999, t) < 0.001
    assert marks(3 * t, t) == 0.0
    assert marks(10 * t, t) == 0.0
    assert marks(math.inf, t) == 0.0


@given(st.floats(0, 1000), st.floats(0, 1000))
def test_marks_never_rise_as_things_get_worse(a, b):
    low, high = sorted((a, b))
    assert 0.0 <= marks(high, 45) <= marks(low, 45) <= 1.0


# --- turnover ------------------------------------------------------------------------------------


def test_turnover_days_is_average_stock_over_daily_sales():
    assert turnover_days(45, 90, 90) == 45.0  # 1 unit a day, 45 on the shelf
    assert turnover_days(100, 30, 30) == 100.0
    assert turnover_days(0, 5, 90) == 0.0


def test_turnover_without_sales_is_worst_with_stock_and_unknown_without():
    assert turnover_days(10, 0, 90) == math.inf
    assert turnover_days(0, 0, 90) is None
    assert turnover_days(-3, 0, 90) is None  # a negative average is no stock


@pytest.mark.parametrize(("avg", "expected"), [
    (44.9, 1.0), (45, 1.0), (45.9, pytest.approx(1 - 0.9 / 90)), (90, 0.5), (134.1, 0.01),
    (135, 0.0), (200, 0.0),
])
def test_turnover_component_around_45_days(avg, expected):
    h = sku_health(sku(avg_on_hand=avg, units_sold=90, on_hand=1, first_seen_at=NOW), NOW, 90)
    c = h.component("turnover")
    assert c.value == pytest.approx(avg)
    assert c.marks == pytest.approx(expected)


def test_turnover_of_stock_that_never_sold_scores_zero():
    c = sku_health(sku(avg_on_hand=5, on_hand=5), NOW).component("turnover")
    assert c.value == math.inf and c.marks == 0.0


def test_turnover_uses_the_period_length():
    # 30 sold in a 30-day period is 1 a day: 45 on average is 45 days
    assert sku_health(sku(avg_on_hand=45, units_sold=30), NOW, 30).component(
        "turnover").value == 45.0


# --- slow-moving ------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "slow"), [
    ({"on_hand": 0, "first_seen_at": OLD}, None),  # no stock: not slow-moving stock
    ({"on_hand": -1, "first_seen_at": OLD}, None),
    ({"on_hand": 5, "first_seen_at": OLD}, True),  # never sold
    ({"on_hand": 5, "first_seen_at": OLD, "last_sale_at": NOW - 90 * DAY}, True),
    ({"on_hand": 5, "first_seen_at": OLD,
      "last_sale_at": NOW - 90 * DAY + timedelta(seconds=1)}, False),
    ({"on_hand": 5, "first_seen_at": OLD, "last_sale_at": NOW - DAY}, False),
    ({"on_hand": 5, "first_seen_at": NOW - 89 * DAY}, False),  # too new to be slow
    ({"on_hand": 5, "first_seen_at": NOW - 90 * DAY}, True),
    ({"on_hand": 5}, False),  # no ledger history at all
])
def test_slow_moving_is_stock_without_a_sale_in_90_days(fields, slow):
    assert is_slow_moving(sku(**fields), NOW) is slow


def test_slow_component_of_one_sku_is_all_or_nothing():
    assert sku_health(sku(on_hand=5, first_seen_at=OLD), NOW).component("slow").marks == 0.0
    fresh = sku(on_hand=5, first_seen_at=OLD, last_sale_at=NOW - DAY)
    assert sku_health(fresh, NOW).component("slow").marks == 1.0
    assert sku_health(sku(on_hand=0), NOW).component("slow").marks is None


@pytest.mark.parametrize(("slow", "expected"), [(0, 1.0), (1, 1.0), (2, 0.5), (3, 0.0)])
def test_overall_slow_share_around_5_percent_of_stocked_skus(slow, expected):
    stocked = [sku(f"S{i}", on_hand=3, first_seen_at=OLD,
                   last_sale_at=None if i < slow else NOW - DAY) for i in range(20)]
    empty = [sku(f"E{i}", on_hand=0, first_seen_at=OLD) for i in range(50)]  # not counted
    c = overall_health(stocked + empty, NOW).component("slow")
    assert c.value == pytest.approx(slow / 20)
    assert c.marks == pytest.approx(expected)


# --- stock-out rate ----------------------------------------------------------------------------


@pytest.mark.parametrize(("rejected", "lines", "expected"), [
    (0, 100, 1.0), (1, 100, 1.0), (1, 99, pytest.approx(1 - (1 / 99 - 0.01) / 0.02)),
    (3, 200, 0.75), (2, 100, 0.5), (3, 100, 0.0), (10, 10, 0.0),
])
def test_stockout_rate_around_1_percent(rejected, lines, expected):
    c = sku_health(sku(rejected_lines=rejected, reservation_lines=lines), NOW).component(
        "stockout")
    assert c.value == pytest.approx(rejected / lines)
    assert c.marks == pytest.approx(expected)


def test_no_reservation_lines_is_an_unknown_stockout_rate():
    assert sku_health(sku(), NOW).component("stockout") == Component(STOCKOUT, None, None)


def test_overall_stockout_rate_pools_lines_not_sku_rates():
    big = sku("BIG", rejected_lines=1, reservation_lines=199)
    small = sku("SMALL", rejected_lines=1, reservation_lines=1)  # 100% alone
    c = overall_health([big, small], NOW).component("stockout")
    assert c.value == 0.01 and c.marks == 1.0


# --- accuracy ------------------------------------------------------------------------------------


def test_accuracy_of_one_sku_is_its_last_stocktake():
    assert sku_health(sku(last_stocktake_delta=0), NOW).component("accuracy").marks == 1.0
    off = sku_health(sku(last_stocktake_delta=-2), NOW).component("accuracy")
    assert off.value == 0.0 and off.marks == 0.0
    assert sku_health(sku(), NOW).component("accuracy").marks is None


@pytest.mark.parametrize(("mismatched", "expected"), [
    (0, 1.0), (1, 1.0), (2, 0.5), (3, 0.0), (10, 0.0),
])
def test_overall_accuracy_around_98_percent_of_counted_skus(mismatched, expected):
    counted = [sku(f"S{i}", last_stocktake_delta=1 if i < mismatched else 0) for i in range(50)]
    never = [sku(f"N{i}") for i in range(30)]  # never counted: not in the share
    c = overall_health(counted + never, NOW).component("accuracy")
    assert c.value == pytest.approx(1 - mismatched / 50)  # 98% matched with one off
    assert c.marks == pytest.approx(expected)


# --- the weighted total ---------------------------------------------------------------------


def healthy(name: str = "S", **changes) -> SkuActivity:
    fields = {"on_hand": 10, "avg_on_hand": 10, "units_sold": 90,
              "last_sale_at": NOW - DAY, "first_seen_at": OLD, "reservation_lines": 100,
              "rejected_lines": 0, "last_stocktake_delta": 0} | changes
    return sku(name, **fields)


def test_a_healthy_sku_scores_100():
    h = sku_health(healthy(), NOW)
    assert component_marks(h) == {"turnover": 1.0, "slow": 1.0, "stockout": 1.0,
                                  "accuracy": 1.0}
    assert h.score == 100.0
    assert [c.points for c in h.components] == [30.0, 25.0, 25.0, 20.0]


def test_weighted_total_of_partial_marks():
    h = sku_health(healthy(avg_on_hand=90, rejected_lines=3), NOW)  # 90 days, 3% stock-outs
    assert component_marks(h) == {"turnover": 0.5, "slow": 1.0, "stockout": 0.0,
                                  "accuracy": 1.0}
    assert h.score == pytest.approx(30 * 0.5 + 25 + 0 + 20)  # 60
    assert [c.points for c in h.components] == pytest.approx([15.0, 25.0, 0.0, 20.0])


def test_each_component_alone_costs_its_weight():
    assert sku_health(healthy(units_sold=0), NOW).score == pytest.approx(70)
    assert sku_health(healthy(last_sale_at=None), NOW).score == pytest.approx(75)
    assert sku_health(healthy(rejected_lines=100), NOW).score == pytest.approx(75)
    assert sku_health(healthy(last_stocktake_delta=4), NOW).score == pytest.approx(80)


def test_unknown_components_share_their_weight_among_the_known():
    # no stocktake: accuracy unknown; turnover full, slow full, stock-outs zero
    h = sku_health(healthy(last_stocktake_delta=None, rejected_lines=5), NOW)
    assert component_marks(h)["accuracy"] is None
    assert h.score == pytest.approx(100 * (0.30 + 0.25) / 0.80)  # 68.75
    # no orders either: stock-out unknown too
    h = sku_health(healthy(last_stocktake_delta=None, reservation_lines=0), NOW)
    assert h.score == 100.0
    assert h.component("accuracy").points is None


def test_nothing_known_is_no_score():
    h = sku_health(sku(), NOW)
    assert all(c.marks is None for c in h.components)
    assert h.score is None
    assert overall_health([], NOW).score is None


def test_overall_uses_pooled_measures():
    fast = healthy("FAST", avg_on_hand=10, units_sold=90)  # 10 days
    idle = healthy("IDLE", avg_on_hand=80, units_sold=0, last_sale_at=OLD)  # never sells
    per_sku, overall = score([idle, fast], NOW, 90)
    assert [h.subject for h in per_sku] == ["FAST", "IDLE"]
    assert overall.subject == "overall"
    turnover = overall.component("turnover")
    assert turnover.value == pytest.approx(90 / (90 / 90))  # 90 units on hand, 1 sold a day
    assert turnover.marks == pytest.approx(0.5)
    slow = overall.component("slow")
    assert slow.value == 0.5 and slow.marks == 0.0  # 1 of 2 stocked SKUs is slow
    assert overall.score == pytest.approx(15 + 0 + 25 + 20)


@given(st.lists(st.builds(
    SkuActivity,
    sku=st.sampled_from("ABCDEF"),
    on_hand=st.integers(-5, 100),
    avg_on_hand=st.floats(-5, 500, allow_nan=False),
    units_sold=st.integers(0, 500),
    last_sale_at=st.none() | st.sampled_from([NOW - DAY, NOW - 100 * DAY]),
    first_seen_at=st.none() | st.sampled_from([NOW - DAY, OLD]),
    reservation_lines=st.integers(0, 50),
    rejected_lines=st.integers(0, 50),
    last_stocktake_delta=st.none() | st.integers(-3, 3),
), max_size=8))
def test_scores_stay_between_0_and_100(activities):
    per_sku, overall = score(activities, NOW)
    for h in (*per_sku, overall):
        assert h.score is None or 0.0 <= h.score <= 100.0
        assert [c.rule for c in h.components] == list(RULES)
        known = [c.points for c in h.components if c.points is not None]
        assert (h.score is None) == (not known)
