"""Reconciliation rules: table vs ledger vs WMS count, the WMS CSV reader and the CSV report."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.inventory.reconcile import (
    WHATS,
    Difference,
    Report,
    WmsCsvError,
    parse_wms_csv,
    reconcile,
    report_csv,
)


def rows(report: Report) -> list[tuple[str, str, int, int, int]]:
    return [(d.sku, d.what, d.expected, d.actual, d.delta) for d in report.differences]


# --- comparisons ----------------------------------------------------------------------------


def test_nothing_anywhere_is_an_empty_report():
    report = reconcile({}, {})
    assert report.ok and report.differences == () and report.skus_checked == 0
    assert report.counts == dict.fromkeys(WHATS, 0)
    assert not report.wms_compared


def test_three_views_that_agree_give_no_difference():
    table = {"A": (10, 2), "B": (0, 0), "C": (5, 5)}
    report = reconcile(table, dict(table), {"A": 10, "C": 5})
    assert report.ok
    assert report.skus_checked == 3 and report.wms_compared


def test_table_on_hand_against_the_ledger():
    assert rows(reconcile({"A": (8, 0)}, {"A": (10, 0)})) == [
        ("A", "table_vs_ledger_on_hand", 10, 8, -2)]


def test_table_reserved_against_the_ledger():
    assert rows(reconcile({"A": (10, 3)}, {"A": (10, 1)})) == [
        ("A", "table_vs_ledger_reserved", 1, 3, 2)]


def test_both_counts_off_are_two_rows():
    assert rows(reconcile({"A": (7, 0)}, {"A": (10, 2)})) == [
        ("A", "table_vs_ledger_on_hand", 10, 7, -3),
        ("A", "table_vs_ledger_reserved", 2, 0, -2),
    ]


def test_a_sku_only_in_the_ledger_is_missing_in_table():
    assert rows(reconcile({}, {"A": (4, 0)})) == [("A", "missing_in_table", 4, 0, -4)]


def test_missing_in_table_with_reservations_also_reports_reserved():
    assert rows(reconcile({}, {"A": (4, 1)})) == [
        ("A", "missing_in_table", 4, 0, -4),
        ("A", "table_vs_ledger_reserved", 1, 0, -1),
    ]


def test_a_sku_only_in_the_table_is_missing_in_ledger():
    assert rows(reconcile({"A": (6, 0)}, {})) == [("A", "missing_in_ledger", 0, 6, 6)]


def test_absence_against_zero_is_no_difference():
    """Refused reservations of an unknown SKU leave zero-delta ledger rows and no table
    record; a WMS file need not list what it holds none of."""
    report = reconcile({"Z": (0, 0)}, {"R": (0, 0)}, {"W": 0})
    assert report.ok and report.skus_checked == 3


def test_wms_count_against_the_table():
    assert rows(reconcile({"A": (10, 2)}, {"A": (10, 2)}, {"A": 9})) == [
        ("A", "table_vs_wms", 10, 9, -1)]


def test_stock_the_wms_does_not_list_is_missing_in_wms():
    assert rows(reconcile({"A": (3, 0)}, {"A": (3, 0)}, {})) == [("A", "missing_in_wms", 3, 0, -3)]


def test_wms_stock_of_a_sku_nobody_else_knows():
    assert rows(reconcile({}, {}, {"N": 2})) == [("N", "table_vs_wms", 0, 2, 2)]


def test_wms_is_compared_with_the_table_not_the_ledger():
    report = reconcile({"A": (8, 0)}, {"A": (10, 0)}, {"A": 10})
    assert rows(report) == [
        ("A", "table_vs_ledger_on_hand", 10, 8, -2),
        ("A", "table_vs_wms", 8, 10, 2),
    ]


def test_without_a_wms_snapshot_nothing_is_compared_with_it():
    report = reconcile({"A": (3, 0)}, {"A": (3, 0)}, None)
    assert report.ok and not report.wms_compared


def test_rows_sorted_by_sku_then_kind_and_counted():
    report = reconcile(
        {"B": (1, 0), "A": (5, 1), "C": (2, 0)},
        {"A": (4, 0), "C": (2, 0), "D": (7, 0)},
        {"A": 5, "C": 1},
    )
    assert [(d.sku, d.what) for d in report.differences] == [
        ("A", "table_vs_ledger_on_hand"),
        ("A", "table_vs_ledger_reserved"),
        ("B", "missing_in_ledger"),
        ("B", "missing_in_wms"),
        ("C", "table_vs_wms"),
        ("D", "missing_in_table"),
    ]
    assert report.counts == {
        "table_vs_ledger_on_hand": 1, "table_vs_ledger_reserved": 1, "missing_in_table": 1,
        "missing_in_ledger": 1, "table_vs_wms": 1, "missing_in_wms": 1,
    }
    assert report.skus_checked == 4 and report.skus_with_differences == 4


def test_negative_counts_are_compared_like_any_other():
    assert rows(reconcile({"A": (-2, 0)}, {"A": (-2, 0)}, {"A": 0})) == [
        ("A", "table_vs_wms", -2, 0, 2)]


# --- properties ------------------------------------------------------------------------------

SKUS = st.sampled_from(["A", "B", "C", "D"])
COUNT = st.integers(-3, 3)
PAIR = st.tuples(COUNT, COUNT)


@st.composite
def views(draw):
    """Three views, often equal to one truth and sometimes perturbed, so both agreeing and
    disagreeing inputs are common."""
    truth = draw(st.dictionaries(SKUS, PAIR, max_size=4))

    def perturbed(view: dict, values=PAIR) -> dict:
        if draw(st.booleans()):
            return view
        view = dict(view)
        for sku in draw(st.lists(SKUS, max_size=2)):
            if draw(st.booleans()):
                view.pop(sku, None)
            else:
                view[sku] = draw(values)
        return view

    table = perturbed(truth)
    ledger = perturbed(truth)
    wms = None if draw(st.booleans()) else perturbed({s: oh for s, (oh, _) in table.items()}, COUNT)
    return table, ledger, wms


def agree(table, ledger, wms) -> bool:
    """The three views agree, a SKU absent from a view counting as zero there."""
    skus = set(table) | set(ledger) | set(wms or ())
    return all(
        table.get(s, (0, 0)) == ledger.get(s, (0, 0))
        and (wms is None or wms.get(s, 0) == table.get(s, (0, 0))[0])
        for s in skus
    )


@given(views())
def test_a_report_is_empty_exactly_when_all_views_agree(v):
    assert reconcile(*v).ok == agree(*v)


@given(views())
def test_every_row_is_actual_minus_expected_of_the_right_views(v):
    table, ledger, wms = v
    report = reconcile(table, ledger, wms)
    keys = [(d.sku, d.what) for d in report.differences]
    assert len(keys) == len(set(keys))
    assert report.differences == tuple(sorted(report.differences,
                                              key=lambda d: (d.sku, WHATS.index(d.what))))
    assert sum(report.counts.values()) == len(report.differences)
    for d in report.differences:
        assert d.delta == d.actual - d.expected != 0
        t_on_hand, t_reserved = table.get(d.sku, (0, 0))
        l_on_hand, l_reserved = ledger.get(d.sku, (0, 0))
        expected, actual = {
            "table_vs_ledger_on_hand": (l_on_hand, t_on_hand),
            "missing_in_table": (l_on_hand, 0),
            "missing_in_ledger": (0, t_on_hand),
            "table_vs_ledger_reserved": (l_reserved, t_reserved),
            "table_vs_wms": (t_on_hand, (wms or {}).get(d.sku)),
            "missing_in_wms": (t_on_hand, 0),
        }[d.what]
        assert (d.expected, d.actual) == (expected, actual)
        if d.what == "missing_in_table":
            assert d.sku not in table and d.sku in ledger
        if d.what == "missing_in_ledger":
            assert d.sku in table and d.sku not in ledger
        if d.what == "missing_in_wms":
            assert wms is not None and d.sku not in wms
        if d.what == "table_vs_ledger_on_hand":
            assert d.sku in table and d.sku in ledger


@given(views())
def test_fixing_each_view_by_its_deltas_makes_the_report_empty(v):
    """The rows say everything that is wrong: apply them to the table and the WMS count and
    nothing is left to report."""
    table, ledger, wms = v
    report = reconcile(table, ledger, wms)
    fixed = {s: list(p) for s, p in table.items()}
    for d in report.differences:
        if d.what in ("table_vs_ledger_on_hand", "missing_in_table", "missing_in_ledger"):
            fixed.setdefault(d.sku, [0, 0])[0] -= d.delta
        elif d.what == "table_vs_ledger_reserved":
            fixed.setdefault(d.sku, [0, 0])[1] -= d.delta
    new_table = {s: (p[0], p[1]) for s, p in fixed.items()}
    new_wms = None if wms is None else {s: new_table.get(s, (0, 0))[0]
                                        for s in set(wms) | set(new_table)}
    assert reconcile(new_table, ledger, new_wms).ok


# --- the WMS snapshot --------------------------------------------------------------------------


def test_wms_csv_plain():
    assert parse_wms_csv("sku,on_hand\nA-1,10\nB-2,0\n") == {"A-1": 10, "B-2": 0}


def test_wms_csv_tolerates_bom_crlf_spaces_case_and_blank_lines():
    text = "\ufeff SKU , On_Hand \r\n\r\n  A-1 ,  10 \r\n   \r\nB-2,0"
    assert parse_wms_csv(text) == {"A-1": 10, "B-2": 0}


def test_wms_csv_with_header_only_is_an_empty_count():
    assert parse_wms_csv("sku,on_hand\n") == {}


def test_wms_csv_quoted_fields():
    assert parse_wms_csv('"sku","on_hand"\n"A-1","7"\n') == {"A-1": 7}


@pytest.mark.parametrize(("text", "message"), [
    ("", "line 1: empty file"),
    ("\n\n", "line 1: empty file"),
    ("sku;on_hand\nA,1\n", "line 1: header must be 'sku,on_hand'"),
    ("on_hand,sku\n1,A\n", "line 1: header must be 'sku,on_hand'"),
    ("\nsku,qty\n", "line 2: header must be 'sku,on_hand'"),
    ("sku,on_hand\nA,1,2\n", "line 2: expected 2 fields"),
    ("sku,on_hand\nA\n", "line 2: expected 2 fields"),
    ("sku,on_hand\nA,1\nB,-1\n", "line 3: on_hand '-1' for B is not a whole number >= 0"),
    ("sku,on_hand\nA,1.5\n", "line 2: on_hand '1.5'"),
    ("sku,on_hand\nA,\n", "line 2: on_hand ''"),
    ("sku,on_hand\nA,ten\n", "line 2: on_hand 'ten'"),
    ("sku,on_hand\nA,\uff15\n", "line 2: on_hand"),  # a full-width digit
    ("sku,on_hand\nA B,1\n", "line 2: 'A B' is not a valid SKU"),
    ("sku,on_hand\n,1\n", "line 2: '' is not a valid SKU"),
    ("sku,on_hand\nA,1\n\nB,2\nA,3\n", "line 5: A is listed again (first on line 2)"),
])
def test_wms_csv_errors_name_the_line(text, message):
    with pytest.raises(WmsCsvError) as caught:
        parse_wms_csv(text)
    assert str(caught.value).startswith(message)


@given(st.dictionaries(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._\-/]{0,10}", fullmatch=True),
                       st.integers(0, 10**9), max_size=20),
       st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_wms_csv_round_trip(counts, newline, bom):
    text = ("\ufeff" if bom else "") + newline.join(
        ["sku,on_hand", *(f"{sku},{n}" for sku, n in counts.items())]) + newline
    assert parse_wms_csv(text) == counts


# --- the CSV report ------------------------------------------------------------------------------


def test_report_csv_has_a_header_and_one_row_per_difference():
    report = reconcile({"A": (8, 0), "B": (1, 0)}, {"A": (10, 0)}, {"A": 8, "B": 1})
    assert report_csv(report) == (
        "sku,what,expected,actual,delta\n"
        "A,table_vs_ledger_on_hand,10,8,-2\n"
        "B,missing_in_ledger,0,1,1\n"
    )


def test_report_csv_of_an_empty_report_is_the_header():
    assert report_csv(reconcile({}, {})) == "sku,what,expected,actual,delta\n"


@given(views())
def test_report_csv_reads_back_as_the_rows(v):
    report = reconcile(*v)
    back = list(csv.DictReader(io.StringIO(report_csv(report))))
    assert [Difference(r["sku"], r["what"], int(r["expected"]), int(r["actual"]))
            for r in back] == list(report.differences)
    assert all(int(r["delta"]) == int(r["actual"]) - int(r["expected"]) for r in back)
