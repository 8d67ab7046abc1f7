"""Nightly reconciliation: the stock table against its ledger, and both against the WMS count.

Pure: mappings in, a :class:`Report` out; no Kafka, database or files (``report.py`` reads
them). Three views of every SKU are compared:

* **table**  -- what channels sell from: the latest ``StockLevel`` per SKU on ``stock.levels``,
  ``{sku: (on_hand, reserved)}``;
* **ledger** -- the operation log, summed: ``{sku: (on_hand, reserved)}``;
* **WMS**    -- optional warehouse snapshot of counted units: ``{sku: on_hand}``.

The ledger is the record of every movement, so it is the *expected* value against the
table; the table is the record the WMS count is checked against (it is what channels see),
so the count is the *actual* value there. Every row's ``delta`` is ``actual - expected``,
the sign convention of a stocktake (counted - recorded).

A SKU absent from one view counts as zero there: a SKU that only ever had refused
reservations has zero-delta ledger rows and no table record, and a WMS file need not list
SKUs it holds none of. So absence alone is no difference; it is reported when the other
side holds something:

========================  ==================================  ========  ========
what                      when                                expected  actual
========================  ==================================  ========  ========
table_vs_ledger_on_hand   both present, on_hand differs       ledger    table
table_vs_ledger_reserved  reserved differs (absent = 0)       ledger    table
missing_in_table          no table record, ledger on_hand!=0  ledger    0
missing_in_ledger         no ledger rows, table on_hand != 0  0         table
table_vs_wms              WMS lists the SKU, count differs    table     WMS
missing_in_wms            WMS does not list it, table on_hand table     0
                          != 0
========================  ==================================  ========  ========

The WMS comparison uses the table's on_hand (0 when the table has no record). Each
``(sku, what)`` appears at most once and no row has a zero delta; the report is empty
exactly when all views agree.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import TypeAdapter, ValidationError

from shared.events import Sku

#: Every kind of difference, in report order within a SKU: on_hand against the ledger (one of
#: the first three), reserved against the ledger, then the WMS count (one of the last two).
WHATS = (
    "table_vs_ledger_on_hand",
    "missing_in_table",
    "missing_in_ledger",
    "table_vs_ledger_reserved",
    "table_vs_wms",
    "missing_in_wms",
)
CSV_HEADER = ("sku", "what", "expected", "actual", "delta")
WMS_HEADER = ("sku", "on_hand")

Levels = Mapping[str, tuple[int, int]]
_sku = TypeAdapter(Sku)


@dataclass(frozen=True, order=True)
class Difference:
    sku: str
    what: str
    expected: int
    actual: int

    @property
    def delta(self) -> int:
        return self.actual - self.expected


@dataclass(frozen=True)
class Report:
    differences: tuple[Difference, ...]
    skus_checked: int
    wms_compared: bool
    counts: Mapping[str, int] = field(default_factory=dict)  # what -> rows; every WHAT listed

    @property
    def ok(self) -> bool:
        return not self.differences

    @property
    def skus_with_differences(self) -> int:
        return len({d.sku for d in self.differences})


class WmsCsvError(ValueError):
    """A WMS snapshot that cannot be read; the message names the line."""


def reconcile(table: Levels, ledger: Levels, wms: Mapping[str, int] | None = None) -> Report:
    """Compare the three views of every SKU any of them knows (see the module docstring)."""
    skus = set(table) | set(ledger) | set(wms or ())
    found: list[Difference] = []
    for sku in skus:
        t_on_hand, t_reserved = table.get(sku, (0, 0))
        l_on_hand, l_reserved = ledger.get(sku, (0, 0))
        if t_on_hand != l_on_hand:
            what = ("missing_in_table" if sku not in table
                    else "missing_in_ledger" if sku not in ledger
                    else "table_vs_ledger_on_hand")
            found.append(Difference(sku, what, l_on_hand, t_on_hand))
        if t_reserved != l_reserved:
            found.append(Difference(sku, "table_vs_ledger_reserved", l_reserved, t_reserved))
        if wms is not None:
            counted = wms.get(sku, 0)
            if counted != t_on_hand:
                what = "table_vs_wms" if sku in wms else "missing_in_wms"
                found.append(Difference(sku, what, t_on_hand, counted))
    order = {what: i for i, what in enumerate(WHATS)}
    found.sort(key=lambda d: (d.sku, order[d.what]))
    counts = Counter(d.what for d in found)
    return Report(
        differences=tuple(found),
        skus_checked=len(skus),
        wms_compared=wms is not None,
        counts={what: counts[what] for what in WHATS},
    )


def parse_wms_csv(text: str) -> dict[str, int]:
    """A WMS snapshot ``sku,on_hand`` (header first) as ``{sku: counted on_hand}``.

    Tolerates a UTF-8 byte-order mark, CRLF line ends, blank lines, spaces around fields and
    header case. Refuses, naming the line: a missing or different header, a row without
    exactly two fields, an invalid SKU, a count that is not a whole number >= 0, and a SKU
    listed twice.
    """
    rows = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    header: tuple[str, ...] | None = None
    seen: dict[str, int] = {}  # sku -> line it was listed on
    counts: dict[str, int] = {}
    for fields in rows:
        line = rows.line_num
        cells = tuple(f.strip() for f in fields)
        if not any(cells):
            continue
        if header is None:
            header = tuple(c.lower() for c in cells)
            if header != WMS_HEADER:
                raise WmsCsvError(f"line {line}: header must be 'sku,on_hand', got "
                                  f"{','.join(cells)!r}")
            continue
        if len(cells) != 2:
            raise WmsCsvError(f"line {line}: expected 2 fields (sku,on_hand), got {len(cells)}")
        sku, raw = cells
        try:
            _sku.validate_python(sku)
        except ValidationError:
            raise WmsCsvError(f"line {line}: {sku!r} is not a valid SKU") from None
        if not raw.isdigit() or not raw.isascii():
            raise WmsCsvError(f"line {line}: on_hand {raw!r} for {sku} is not a whole number >= 0")
        if sku in seen:
            raise WmsCsvError(f"line {line}: {sku} is listed again (first on line {seen[sku]})")
        seen[sku] = line
        counts[sku] = int(raw)
    if header is None:
        raise WmsCsvError("line 1: empty file, expected the header 'sku,on_hand'")
    return counts


def report_csv(report: Report) -> str:
    """The report as CSV: ``sku,what,expected,actual,delta``, one row per difference."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for d in report.differences:
        writer.writerow((d.sku, d.what, d.expected, d.actual, d.delta))
    return out.getvalue()
