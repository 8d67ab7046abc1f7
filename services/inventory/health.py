"""Inventory health score, per SKU and overall, for management. Pure: aggregates in, scores out.

Four components, weights and full-mark thresholds from the requirements (Problem 2):

==========  ======  =====================================================  ==============
component   weight  measure (over the period, default the last 90 days)    full marks
==========  ======  =====================================================  ==============
turnover    30 %    days of stock: average on_hand / units sold per day    < 45 days
slow        25 %    share of stocked SKUs with no sale in 90 days          < 5 %
stockout    25 %    refused reservation lines / all reservation lines      < 1 %
accuracy    20 %    share of counted SKUs whose last stocktake matched     > 98 %
==========  ======  =====================================================  ==============

**Partial marks.** One rule for all four, on the "bad" quantity ``x`` (days, slow share,
stock-out rate, mismatch share = 1 - accuracy) with full-mark threshold ``t``: full marks up
to ``t``, falling linearly to zero at ``3 t``, zero beyond:
``marks = clamp((3t - x) / 2t, 0, 1)``. So twice the threshold earns half marks: 90 days of
stock, 10 % slow SKUs, 2 % stock-outs or 96 % accuracy each score 50 %; 135 days, 15 %, 3 %
and 94 % score nothing. Linear is easy to explain to management and to check by hand; it is
continuous, so a SKU exactly at a threshold gets full marks (the requirement's "< 45 days" and
"> 98 %" differ from "<=" only at a point where both give 100 %). A zero point at 3x keeps the
slope gentle enough that one bad week does not zero a component, while anything three
times worse than target clearly is unhealthy.

**Measures.**

* *Units sold* = units shipped (ledger ``commit`` rows) plus store sales (``adjust`` rows with
  reason ``pos_sale``), both taken as ``-on_hand_delta`` within the period: a store sale is a
  sale, and leaving it out would make store-heavy SKUs look slow.
* *Turnover days* = time-weighted average on_hand over the period / (units sold / period days).
  No sale while holding stock is the worst case (infinite days, zero marks). No stock and no
  sale: nothing to turn over, so unknown.
* *Slow-moving*: a SKU holding stock now (on_hand > 0) whose last sale is 90 or more days ago
  (or never), and that has been in the ledger for at least 90 days (a SKU stocked last week has
  not had the chance to be slow). The share is over SKUs holding stock; SKUs without stock
  are not slow-moving *stock* and are left out.
* *Stock-out rate*: ledger ``reject`` rows / (``reserve`` + ``reject`` rows) within the period,
  i.e. per order line, every refusal reason counted (an unsellable SKU is out of stock to the
  customer).
* *Accuracy*: a SKU's last stocktake (``adjust`` with reason ``stocktake``, at any time)
  matched when its ``on_hand_delta`` (counted - expected) was 0. Share over SKUs ever counted.

**No data.** A component without evidence is *unknown* (``None``), shown as ``n/a`` and its
weight is redistributed proportionally over the known components (score = sum of weight x
marks / sum of known weights). Unknown means: no stocktake (accuracy), no reservation line
in the period (stock-out rate), no stock (slow-moving), neither stock nor sales (turnover).
Scoring an unknown component 0 would mark a SKU down for a missing measurement rather than
for its health, and 100 would hide it; redistributing keeps the score about what is known
and the ``n/a`` keeps the gap visible. With no known component at all the score is ``None``.

**Overall** is computed from the pooled measures, not by averaging SKU scores: total average
on_hand / total units sold per day; slow SKUs / stocked SKUs; all refused lines / all lines;
matched SKUs / counted SKUs. So big sellers weigh in on turnover and stock-outs by volume.

Scores are 0..100 points; component marks are 0..1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

SLOW_MOVING_DAYS = 90
#: A bad quantity at this many times its threshold scores zero (linear in between).
ZERO_AT = 3.0


@dataclass(frozen=True)
class Rule:
    name: str
    weight: float
    threshold: float  # full marks up to here, of the "bad" quantity


TURNOVER = Rule("turnover", 0.30, 45.0)  # days of stock
SLOW = Rule("slow", 0.25, 0.05)  # share of stocked SKUs
STOCKOUT = Rule("stockout", 0.25, 0.01)  # share of reservation lines
ACCURACY = Rule("accuracy", 0.20, 0.02)  # share of counted SKUs off: 1 - accuracy
RULES = (TURNOVER, SLOW, STOCKOUT, ACCURACY)


@dataclass(frozen=True)
class SkuActivity:
    """One SKU's ledger aggregates, as of ``now`` over the period (``report.py`` computes them)."""

    sku: str
    on_hand: int = 0  # now
    avg_on_hand: float = 0.0  # time-weighted over the period
    units_sold: int = 0  # commits + POS sales in the period
    last_sale_at: datetime | None = None  # any time up to now
    first_seen_at: datetime | None = None  # first ledger row
    reservation_lines: int = 0  # reserve + reject rows in the period
    rejected_lines: int = 0  # reject rows in the period
    last_stocktake_delta: int | None = None  # counted - expected of the latest stocktake


@dataclass(frozen=True)
class Component:
    rule: Rule
    value: float | None  # days, or a share 0..1 (accuracy: matched share); None unknown
    marks: float | None  # 0..1; None unknown

    @property
    def points(self) -> float | None:
        return None if self.marks is None else 100 * self.rule.weight * self.marks


@dataclass(frozen=True)
class Health:
    subject: str  # a SKU, or "overall"
    components: tuple[Component, ...]  # in RULES order

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.rule.name == name)

    @property
    def score(self) -> float | None:
        """0..100: weighted marks of the known components, their weights rescaled to 1."""
        known = [c for c in self.components if c.marks is not None]
        if not known:
            return None
        total = sum(c.rule.weight for c in known)
        return 100 * sum(c.rule.weight * c.marks for c in known) / total


def marks(bad: float, threshold: float) -> float:
    """Full marks up to ``threshold``, linear to zero at ``ZERO_AT`` x threshold, then zero."""
    if bad <= threshold:
        return 1.0
    return max(0.0, (ZERO_AT * threshold - bad) / ((ZERO_AT - 1) * threshold))


def turnover_days(avg_on_hand: float, units_sold: float, period_days: float) -> float | None:
    """Days of stock at the period's sales rate; ``inf`` with stock and no sales; ``None`` with
    neither."""
    stock = max(avg_on_hand, 0.0)
    if units_sold <= 0:
        return math.inf if stock > 0 else None
    return stock / (units_sold / period_days)


def is_slow_moving(a: SkuActivity, now: datetime) -> bool | None:
    """``None`` when the SKU holds no stock (not slow-moving stock, not counted)."""
    if a.on_hand <= 0:
        return None
    window = timedelta(days=SLOW_MOVING_DAYS)
    if a.first_seen_at is None or now - a.first_seen_at < window:
        return False
    return a.last_sale_at is None or now - a.last_sale_at >= window


def _component(rule: Rule, bad: float | None, value: float | None = None) -> Component:
    if bad is None:
        return Component(rule, None, None)
    shown = bad if value is None else value
    return Component(rule, shown, marks(bad, rule.threshold))


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _health(subject: str, days: float | None, slow: tuple[int, int], refused: tuple[int, int],
            mismatched: tuple[int, int]) -> Health:
    """From a measure per component: (count, out of) for the three shares."""
    mismatch = _share(*mismatched)
    return Health(subject, (
        _component(TURNOVER, days),
        _component(SLOW, _share(*slow)),
        _component(STOCKOUT, _share(*refused)),
        _component(ACCURACY, mismatch, None if mismatch is None else 1 - mismatch),
    ))


def sku_health(a: SkuActivity, now: datetime, period_days: float = 90) -> Health:
    slow = is_slow_moving(a, now)
    counted = a.last_stocktake_delta is not None
    return _health(
        a.sku,
        turnover_days(a.avg_on_hand, a.units_sold, period_days),
        (int(bool(slow)), int(slow is not None)),
        (a.rejected_lines, a.reservation_lines),
        (int(counted and a.last_stocktake_delta != 0), int(counted)),
    )


def overall_health(activities: Sequence[SkuActivity], now: datetime,
                   period_days: float = 90) -> Health:
    slow = [is_slow_moving(a, now) for a in activities]
    counted = [a.last_stocktake_delta for a in activities if a.last_stocktake_delta is not None]
    return _health(
        "overall",
        turnover_days(sum(max(a.avg_on_hand, 0.0) for a in activities),
                      sum(a.units_sold for a in activities), period_days),
        (sum(s is True for s in slow), sum(s is not None for s in slow)),
        (sum(a.rejected_lines for a in activities),
         sum(a.reservation_lines for a in activities)),
        (sum(d != 0 for d in counted), len(counted)),
    )


def score(activities: Sequence[SkuActivity], now: datetime,
          period_days: float = 90) -> tuple[list[Health], Health]:
    """Per-SKU health (sorted by SKU) and the overall health."""
    per_sku = [sku_health(a, now, period_days) for a in sorted(activities, key=lambda a: a.sku)]
    return per_sku, overall_health(activities, now, period_days)
