"""The partition book: deciding through it, its changelog, and restoring after a crash.

The harness at the top models the hot path without Kafka: a *step* is one input record
(topic, offset, decoded command), a *batch* is a list of steps, a *log* is the list of
changelog records made durable so far (oldest first). Per batch the hot path sends the
answers first, then writes the changelog, then commits the input offsets. A crash keeps a
prefix of the changelog records of the batch being written (so if any record survived,
all the batch's answers were sent; if none did, they may or may not have been: modelled
as not sent). The restart restores a fresh book from the durable log (writing nothing)
and redelivers every step whose batch was not committed, possibly in other batches.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.inventory.book import (
    PartitionBook,
    adjustment_key,
    counts_key,
    reservation_record_key,
)
from services.inventory.domain import SkuState
from shared.codec import InvalidRecord
from shared.events import (
    CommitStock,
    ConfirmReservation,
    ExpireHolds,
    ReleaseReservation,
    ReservationConfirmed,
    ReservationExpired,
    ReservationReleased,
    ReserveStock,
    SafetyStockSet,
    StockAdjusted,
    StockCommitted,
    StockLevel,
    StockRejected,
    StockReserved,
    derive_id,
)

CMDS = "inventory.commands"
ADJS = "stock.adjustments"
NOW = datetime(2026, 1, 20, 8, 0, tzinfo=UTC)
HOLD = timedelta(minutes=30)
SKU = "SKU-A"
SKUS = ("SKU-A", "SKU-B", "SKU-C")

Log = list[tuple[bytes, bytes | None]]
StepId = tuple[str, int]


# --- harness ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    topic: str
    offset: int
    cmd: Any

    @property
    def id(self) -> StepId:
        return (self.topic, self.offset)


def answer(book: PartitionBook, step: Step) -> tuple[Any, ...] | None:
    """Apply one step; what the hot path would send for it: its events (without the
    wall-clock ``occurred_at``), the dead letter's reason, or None (skipped: a redelivered
    command the SKU's counts already include)."""
    try:
        decision = book.apply(step.topic, step.offset, step.cmd, NOW)
    except InvalidRecord as exc:
        return ("dead_letter", exc.reason)
    if decision is None:
        return None
    return tuple(e.model_dump(mode="json", exclude={"occurred_at"}) for e in decision.events)


def is_dead_letter(ans: Any) -> bool:
    return bool(ans) and ans[0] == "dead_letter"


def snapshot(book: PartitionBook) -> dict[str, Any]:
    """Everything a book knows, comparable with ==."""
    return {
        "counts": {s: c.model_dump() for s, c in book.counts.items()},
        "applied": {s: dict(a) for s, a in book.applied.items() if a},
        "reservations": {s: {k: r.model_dump() for k, r in rs.items()}
                         for s, rs in book.reservations.items() if rs},
        "adjustments": {s: set(a) for s, a in book.adjustments.items() if a},
        "holds": {s: set(h) for s, h in book.holds.items() if h},
    }


def mixed(skus_from: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A snapshot made of each SKU's part of another snapshot (sku -> snapshot)."""
    out: dict[str, Any] = {f: {} for f in ("counts", "applied", "reservations",
                                           "adjustments", "holds")}
    for sku, snap in skus_from.items():
        for f, per_sku in snap.items():
            if sku in per_sku:
                out[f][sku] = per_sku[sku]
    return out


def check_invariants(book: PartitionBook) -> None:
    """reserved is exactly what held and confirmed reservations hold; the holds index is
    exactly the held reservations; due_skus agrees with the deadlines."""
    for sku in set(book.counts) | set(book.reservations):
        reservations = book.reservations.get(sku, {}).values()
        held = sum(r.quantity for r in reservations if r.state in ("held", "confirmed"))
        assert book.state(sku).reserved == held, sku
        assert book.state(sku).reserved >= 0, sku
    expected_holds = {s: {k for k, r in rs.items() if r.state == "held"}
                      for s, rs in book.reservations.items()}
    assert {s: set(h) for s, h in book.holds.items()} == {
        s: h for s, h in expected_holds.items() if h}
    for minutes in (-60, 0, 10, 30, 45, 90, 600):
        at = NOW + timedelta(minutes=minutes)
        due = {s for s, rs in book.reservations.items() if any(r.due(at) for r in rs.values())}
        assert set(book.due_skus(at)) == due


def run_batch(book: PartitionBook, batch: Sequence[Step]) -> tuple[list[Any], Log]:
    """Apply a batch; its answers and its changelog."""
    answers = []
    for step in batch:
        before = book.state(step.cmd.sku).reserved
        answers.append(answer(book, step))
        after = book.state(step.cmd.sku)
        if isinstance(step.cmd, ReserveStock) and after.reserved > before:
            assert after.available >= 0  # a fresh hold never takes more than is there
    return answers, list(book.changelog())


def events_by_id(answers: Sequence[Any]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for ans in answers:
        if ans is None or is_dead_letter(ans):
            continue
        for event in ans:
            found.setdefault(event["event_id"], set()).add(json.dumps(event, sort_keys=True))
    return found


@dataclass
class Reference:
    """The run without a crash: each batch's answers, changelog and resulting book."""

    batches: list[list[Step]]
    answers: list[list[Any]]
    changelogs: list[Log]
    snapshots: list[dict[str, Any]]  # the book after each batch
    book: PartitionBook
    by_step: dict[StepId, Any] = field(default_factory=dict)
    events: dict[str, set[str]] = field(default_factory=dict)  # event id -> its contents

    def before(self, j: int) -> dict[str, Any]:
        return self.snapshots[j - 1] if j else snapshot(PartitionBook())


def reference(batches: Sequence[Sequence[Step]]) -> Reference:
    book = PartitionBook()
    ref = Reference([list(b) for b in batches], [], [], [], book)
    for batch in batches:
        a, log = run_batch(book, batch)
        assert None not in a  # offsets only grow: nothing is skipped without a crash
        check_invariants(book)
        ref.answers.append(a)
        ref.changelogs.append(log)
        ref.snapshots.append(snapshot(book))
        ref.by_step.update((s.id, x) for s, x in zip(batch, a, strict=True))
    ref.events = events_by_id(list(ref.by_step.values()))
    return ref


@dataclass
class Outbox:
    """What the hot path has sent so far, at least once: each step's answer, and the
    content of every event id."""

    ref: Reference
    sent: dict[StepId, Any] = field(default_factory=dict)
    events: dict[str, set[str]] = field(default_factory=dict)

    def send(self, batch: Sequence[Step], answers: Sequence[Any]) -> None:
        for step, ans in zip(batch, answers, strict=True):
            if ans is None:
                continue  # skipped: nothing sent
            assert ans == self.ref.by_step[step.id], step
            self.sent[step.id] = ans
        for event_id, contents in events_by_id(answers).items():
            self.events.setdefault(event_id, set()).update(contents)

    def copy(self) -> Outbox:
        return Outbox(self.ref, dict(self.sent),
                      {k: set(v) for k, v in self.events.items()})

    def check_complete(self) -> None:
        """Nothing lost (every reference answer was sent), and no event id was sent with
        another type or content than the reference gave it."""
        assert self.sent == self.ref.by_step
        for event_id, contents in self.events.items():
            assert contents <= self.ref.events[event_id], event_id
            assert len({json.loads(c)["event_type"] for c in contents}) == 1, event_id


def sent_before(ref: Reference, crashed: int, kept: int, sent: bool = False) -> Outbox:
    """The outbox when batch ``crashed`` crashed with ``kept`` changelog records durable:
    the answers of every batch before it, and its own if any of its records survived (or,
    ``sent``, if the crash came after the answers but before the first record)."""
    outbox = Outbox(ref)
    for j in range(crashed + (kept > 0 or sent)):
        outbox.send(ref.batches[j], ref.answers[j])
    return outbox


def restart(log: Log) -> tuple[PartitionBook, int]:
    """A fresh book restored from ``log``, and how many effects it undid. Restoring writes
    nothing, and restoring the same log again (a crash during the restart) is the same."""
    book = PartitionBook()
    undone = book.restore(log)
    check_invariants(book)
    again = PartitionBook()
    assert again.restore(log) == undone
    assert snapshot(again) == snapshot(book)
    assert book.changelog() == []
    return book, undone


Redelivered = list[tuple[list[Step], list[Any], Log]]


def redeliver(book: PartitionBook, log: Log, batches: Sequence[Sequence[Step]],
              ref: Reference, outbox: Outbox) -> Redelivered:
    """Run ``batches`` on ``book`` (sending answers to ``outbox``, then appending each
    changelog to ``log``). Every step is either skipped, at or below its SKU's applied
    offset and already answered, or answers as in the reference. Ends as the reference."""
    done: Redelivered = []
    for batch in batches:
        applied = {s: dict(a) for s, a in book.applied.items()}
        got, records = run_batch(book, batch)
        check_invariants(book)
        for step, ans in zip(batch, got, strict=True):
            if ans is None:
                assert step.offset <= applied.get(step.cmd.sku, {}).get(step.topic, -1), step
                assert step.id in outbox.sent, step  # its answer went out before the crash
            else:
                assert ans == ref.by_step[step.id], step
        outbox.send(batch, got)
        log.extend(records)
        done.append((list(batch), got, records))
    assert snapshot(book) == snapshot(ref.book)
    outbox.check_complete()
    return done


def expected_restore(ref: Reference, crashed: int, kept: int) -> tuple[dict[str, Any], int]:
    """What restoring after a crash in batch ``crashed`` that kept ``kept`` records must
    give: every SKU whose counts record survived as the batch left it, every other SKU as
    it was before the batch; and the number of effect records of the latter kind."""
    records = ref.changelogs[crashed][:kept]
    durable = {json.loads(k)[1] for k, _ in records if json.loads(k)[0] == "s"}
    before, after = ref.before(crashed), ref.snapshots[crashed]
    skus = set(before["counts"]) | set(after["counts"])
    undone = sum(1 for k, _ in records
                 if json.loads(k)[0] != "s" and json.loads(k)[1] not in durable)
    return mixed({s: after if s in durable else before for s in skus}), undone


def crash_and_recover(ref: Reference, crashed: int, kept: int,
                      redelivery: Sequence[Sequence[Step]] | None = None, *,
                      second_crash: bool = True, sent: bool = False) -> Redelivered:
    """Run the batches before ``crashed``, keep ``kept`` records of its changelog, restart
    and redeliver everything from ``crashed`` on (in ``redelivery``'s batches if given);
    then, if asked, crash again at every later point (before the first redelivered batch,
    and after every prefix of every redelivered changelog) and check that restart too."""
    batches = ref.batches
    log: Log = [r for j in range(crashed) for r in ref.changelogs[j]]
    log += ref.changelogs[crashed][:kept]
    book, undone = restart(log)
    want, want_undone = expected_restore(ref, crashed, kept)
    assert snapshot(book) == want and undone == want_undone
    start = len(log)
    outbox = sent_before(ref, crashed, kept, sent)
    first_outbox = outbox.copy()
    if redelivery is None:
        redelivery = batches[crashed:]
    assert [s for b in redelivery for s in b] == [s for b in batches[crashed:] for s in b]
    done = redeliver(book, log, redelivery, ref, outbox)
    # only commands of the crashed batch whose SKU's counts record survived are skipped,
    # and all of those but the dead letters (a dead letter moves no applied offset)
    durable = {json.loads(k)[1] for k, _ in ref.changelogs[crashed][:kept]
               if json.loads(k)[0] == "s"}
    skipped = {s.id for b, got, _ in done for s, a in zip(b, got, strict=True) if a is None}
    crashed_steps = zip(batches[crashed], ref.answers[crashed], strict=True)
    may_skip = {s.id: is_dead_letter(a) for s, a in crashed_steps if s.cmd.sku in durable}
    assert skipped <= set(may_skip)
    assert {i for i, dead in may_skip.items() if not dead} <= skipped
    if second_crash:
        at = start
        points: list[tuple[Log, int, Outbox]] = [(log[:start], 0, first_outbox.copy())]
        sent = first_outbox
        for i, (b, got, records) in enumerate(done):
            after = sent.copy()
            after.send(b, got)
            points.extend((log[:at + p], i, after if p else sent) for p in range(len(records) + 1))
            at += len(records)
            sent = after
        for durable_log, i, sent_then in points:
            book2, _ = restart(durable_log)
            redeliver(book2, list(durable_log), redelivery[i:], ref, sent_then.copy())
    return done


# --- generating commands ---------------------------------------------------------------------

LINES = tuple((f"o{i // 2 + 1}", i % 2 + 1) for i in range(6))
HOLD_MINUTES = (None, -10, 5, 20, 60)
DUE_MINUTES = (0, 10, 30, 45, 90, 90)
ADJUSTMENTS = ({"delta": 6}, {"delta": 3}, {"delta": -2}, {"absolute": 4}, {"absolute": 0},
               {"delta": 10})
KINDS = ("reserve",) * 5 + ("release", "confirm", "commit") * 2 + (
    "expire", "expire", "expire", "adjust", "adjust", "safety")


def adjusted(sku: str, n: int) -> StockAdjusted:
    """Adjustment number ``n`` of ``sku``: a replay of the same n is the same event."""
    return StockAdjusted(event_id=f"adj-{sku}-{n}", sku=sku, reason="restock", source="wms",
                         **ADJUSTMENTS[n])


def reserve_cmd(order_id: str, line: int, quantity: int, sku: str = SKU,
                hold_until: datetime | None = None) -> ReserveStock:
    return ReserveStock(order_id=order_id, line=line, sku=sku, quantity=quantity,
                        hold_until=hold_until, correlation_id=order_id)


def confirm_cmd(order_id: str, line: int = 1, sku: str = SKU) -> ConfirmReservation:
    return ConfirmReservation(order_id=order_id, line=line, sku=sku, correlation_id=order_id)


def release_cmd(order_id: str, line: int = 1, sku: str = SKU) -> ReleaseReservation:
    return ReleaseReservation(order_id=order_id, line=line, sku=sku, reason="cancelled",
                              correlation_id=order_id)


def commit_cmd(order_id: str, line: int = 1, sku: str = SKU) -> CommitStock:
    return CommitStock(order_id=order_id, line=line, sku=sku, correlation_id=order_id)


def expire_cmd(due: datetime, sku: str = SKU) -> ExpireHolds:
    return ExpireHolds(event_id=f"tick-{sku}-{due.isoformat()}", sku=sku, due_at=due)


@st.composite
def step_lists(draw: st.DrawFn, max_size: int = 18) -> list[Step]:
    """Commands for 1-3 SKUs on both topics, interleaved, with gaps in the offsets: any
    line may be named several times, expiries may expire several holds at once."""
    skus = SKUS[:draw(st.integers(1, 3))]
    offsets = {CMDS: draw(st.integers(0, 3)), ADJS: draw(st.integers(0, 3))}
    cmds: list[Any] = []
    if draw(st.booleans()):  # usually start with stock, so reserves have something to take
        cmds.extend(adjusted(sku, 0) for sku in skus)
    for _ in range(draw(st.integers(1, max_size))):
        kind = draw(st.sampled_from(KINDS))
        i = draw(st.integers(0, len(LINES) - 1))
        order_id, line = LINES[i]
        sku = skus[i % len(skus)]
        if kind == "reserve":
            minutes = draw(st.sampled_from(HOLD_MINUTES))
            cmds.append(reserve_cmd(order_id, line, draw(st.integers(1, 4)), sku,
                                    None if minutes is None else NOW + timedelta(minutes=minutes)))
        elif kind == "release":
            cmds.append(release_cmd(order_id, line, sku))
        elif kind == "confirm":
            cmds.append(confirm_cmd(order_id, line, sku))
        elif kind == "commit":
            cmds.append(commit_cmd(order_id, line, sku))
        elif kind == "expire":
            cmds.append(expire_cmd(NOW + timedelta(minutes=draw(st.sampled_from(DUE_MINUTES))),
                                   sku))
        elif kind == "adjust":
            cmds.append(adjusted(sku, draw(st.integers(0, len(ADJUSTMENTS) - 1))))
        else:
            cmds.append(SafetyStockSet(sku=sku, threshold=draw(st.integers(0, 3)),
                                       source="operator"))
    steps = []
    for cmd in cmds:
        topic = ADJS if isinstance(cmd, StockAdjusted | SafetyStockSet) else CMDS
        steps.append(Step(topic, offsets[topic], cmd))
        offsets[topic] += draw(st.integers(1, 2))  # gaps: other SKUs' records, dead letters
    return steps


def split(steps: Sequence[Step], cuts: Sequence[bool]) -> list[list[Step]]:
    batches: list[list[Step]] = [[]]
    for step, cut in zip(steps, cuts, strict=False):
        batches[-1].append(step)
        if cut:
            batches.append([])
    batches[-1].extend(steps[len(cuts):])
    return [b for b in batches if b]


def batched(data: st.DataObject, steps: Sequence[Step], label: str) -> list[list[Step]]:
    cuts = data.draw(st.lists(st.booleans(), max_size=len(steps)), label=label)
    return split(steps, cuts)


def crash_points(records: Log) -> st.SearchStrategy[int]:
    """How many of a batch's records a crash keeps: any prefix, often one that ends among
    the counts records (some SKUs' counts durable, others lost)."""
    counts = [n for n, (k, _) in enumerate(records) if json.loads(k)[0] == "s"]
    among = st.sampled_from(counts).map(lambda n: n + 1) if counts else st.just(0)
    return st.one_of(st.integers(0, len(records)), among)


FAST = settings(deadline=None, max_examples=200,
                suppress_health_check=[HealthCheck.too_slow])


# --- 1. basic deciding through the book ------------------------------------------------------


def restocked(qty: int = 10, sku: str = SKU) -> PartitionBook:
    book = PartitionBook()
    book.apply(ADJS, 0, StockAdjusted(event_id="restock", sku=sku, delta=qty,
                                      reason="restock", source="wms"), NOW)
    return book


def decoded(log: Log) -> list[tuple[list[Any], dict[str, Any]]]:
    return [(json.loads(k), json.loads(v)) for k, v in log if v is not None]


def res_json(book: PartitionBook, key: str, sku: str = SKU) -> dict[str, Any]:
    res = book.reservation(sku, key)
    assert res is not None
    return res.model_dump(mode="json")


def test_adjustment_makes_a_sku_known_and_is_remembered():
    book = PartitionBook()
    assert book.state(SKU) == SkuState(sku=SKU)
    assert SKU not in book.counts  # reading does not create
    book.apply(ADJS, 4, StockAdjusted(event_id="e1", sku=SKU, delta=7, reason="restock",
                                      source="wms"), NOW)
    assert book.state(SKU) == SkuState(sku=SKU, on_hand=7, known=True)
    assert book.adjustments == {SKU: {"e1"}}
    assert book.applied == {SKU: {ADJS: 4}}
    assert list(book.skus()) == [SKU]
    assert decoded(book.changelog()) == [
        (["a", SKU, "e1"], {"r": True, "p": None, "src": [ADJS, 4]}),
        (["s", SKU], {"c": book.state(SKU).model_dump(mode="json"), "a": {ADJS: 4}}),
    ]
    assert book.changelog() == []  # a new batch starts empty


def test_replayed_adjustment_changes_nothing_and_writes_no_effect():
    book = restocked(10)
    book.changelog()
    d = book.apply(ADJS, 9, StockAdjusted(event_id="restock", sku=SKU, delta=10,
                                          reason="restock", source="wms"), NOW)
    assert d is not None and not d.changed and d.adjustment is None
    assert book.state(SKU).on_hand == 10
    assert [k for k, _ in book.changelog()] == [counts_key(SKU)]


def test_absolute_adjustment_sets_the_count_and_records_only_its_id():
    book = restocked(10)
    book.changelog()
    book.apply(ADJS, 1, StockAdjusted(event_id="count", sku=SKU, absolute=4,
                                      reason="stocktake", source="wms"), NOW)
    assert book.state(SKU).on_hand == 4
    records = decoded(book.changelog())
    assert records[0] == (["a", SKU, "count"], {"r": True, "p": None, "src": [ADJS, 1]})
    assert records[1][1]["c"]["on_hand"] == 4  # the counts carry the new level


def test_reserve_holds_stock_and_indexes_the_hold():
    book = restocked(10)
    book.changelog()
    d = book.apply(CMDS, 3, reserve_cmd("o1", 1, 4), NOW)
    assert d is not None and [type(e) for e in d.events] == [StockReserved]
    assert d.events[0].hold_until == NOW + HOLD
    assert book.state(SKU) == SkuState(sku=SKU, on_hand=10, reserved=4, known=True)
    res = book.reservation(SKU, "o1:1")
    assert res is not None and res.state == "held" and res.quantity == 4
    assert book.reservations == {SKU: {"o1:1": res}}
    assert book.holds == {SKU: {"o1:1"}}
    assert book.due_skus(NOW) == []
    assert book.due_skus(NOW + HOLD) == [SKU]
    assert book.applied == {SKU: {ADJS: 0, CMDS: 3}}
    assert decoded(book.changelog()) == [
        (["r", SKU, "o1:1"], {"r": res.model_dump(mode="json"), "p": None,
                              "src": [CMDS, 3]}),
        (["s", SKU], {"c": book.state(SKU).model_dump(mode="json"),
                      "a": {ADJS: 0, CMDS: 3}}),
    ]


def test_a_redelivered_offset_is_skipped_and_changes_nothing():
    book = restocked(10)
    book.apply(CMDS, 5, reserve_cmd("o1", 1, 4), NOW)
    book.changelog()
    before = snapshot(book)
    for offset in (5, 4, 0):  # at or below the SKU's applied offset of the topic
        assert book.apply(CMDS, offset, reserve_cmd("o1", 1, 4), NOW) is None
        assert book.apply(CMDS, offset, reserve_cmd("o9", 1, 1), NOW) is None
        assert book.apply(CMDS, offset, confirm_cmd("o7"), NOW) is None  # not even checked
    assert book.apply(ADJS, 0, adjusted(SKU, 1), NOW) is None
    assert snapshot(book) == before and book.changelog() == []
    # offsets are per topic and per SKU: the same offsets elsewhere are decided
    assert book.apply(ADJS, 1, adjusted(SKU, 1), NOW) is not None
    assert book.apply(CMDS, 5, reserve_cmd("o2", 1, 1, sku="SKU-B"), NOW) is not None


def test_reserve_replay_at_a_new_offset_resends_the_same_answer_and_writes_no_effect():
    book = restocked(10)
    first = book.apply(CMDS, 1, reserve_cmd("o1", 1, 4), NOW)
    book.changelog()
    again = book.apply(CMDS, 2, reserve_cmd("o1", 1, 4), NOW + timedelta(minutes=5))
    assert first is not None and again is not None
    assert [(e.event_type, e.event_id, e.hold_until) for e in again.events] == [
        (e.event_type, e.event_id, e.hold_until) for e in first.events]
    assert book.state(SKU).reserved == 4
    assert [k for k, _ in book.changelog()] == [counts_key(SKU)]


def test_confirm_keeps_the_stock_and_drops_the_hold_from_the_index():
    book = restocked(10)
    book.apply(CMDS, 1, reserve_cmd("o1", 1, 4), NOW)
    held = res_json(book, "o1:1")
    book.changelog()
    d = book.apply(CMDS, 2, confirm_cmd("o1"), NOW)
    assert d is not None and [type(e) for e in d.events] == [ReservationConfirmed]
    assert book.reservation(SKU, "o1:1").state == "confirmed"
    assert book.state(SKU).reserved == 4
    assert book.holds == {}
    assert book.due_skus(NOW + timedelta(days=1)) == []
    (key, value), counts = decoded(book.changelog())
    assert key == ["r", SKU, "o1:1"]
    assert value == {"r": res_json(book, "o1:1"), "p": held, "src": [CMDS, 2]}
    assert counts[0] == ["s", SKU]


def test_release_gives_the_stock_back():
    book = restocked(10)
    book.apply(CMDS, 1, reserve_cmd("o1", 1, 4), NOW)
    book.changelog()
    d = book.apply(CMDS, 2, release_cmd("o1"), NOW)
    assert d is not None and [type(e) for e in d.events] == [ReservationReleased]
    assert book.state(SKU).reserved == 0 and book.holds == {}
    assert book.reservation(SKU, "o1:1").state == "released"
    value = decoded(book.changelog())[0][1]
    assert (value["p"]["state"], value["r"]["state"]) == ("held", "released")


def test_commit_takes_the_units_out():
    book = restocked(10)
    book.apply(CMDS, 1, reserve_cmd("o1", 1, 4), NOW)
    book.apply(CMDS, 2, confirm_cmd("o1"), NOW)
    book.changelog()
    d = book.apply(CMDS, 3, commit_cmd("o1"), NOW)
    assert d is not None and [type(e) for e in d.events] == [StockCommitted]
    assert book.state(SKU) == SkuState(sku=SKU, on_hand=6, reserved=0, known=True)
    assert book.reservation(SKU, "o1:1").state == "committed"
    value = decoded(book.changelog())[0][1]
    assert (value["p"]["state"], value["r"]["state"]) == ("confirmed", "committed")


def test_expire_releases_only_due_unpaid_holds():
    book = restocked(10)
    book.apply(CMDS, 1, reserve_cmd("o1", 1, 1, hold_until=NOW + timedelta(minutes=5)), NOW)
    book.apply(CMDS, 2, reserve_cmd("o2", 1, 2, hold_until=NOW + timedelta(minutes=10)), NOW)
    book.apply(CMDS, 3, reserve_cmd("o3", 1, 3, hold_until=NOW + timedelta(minutes=60)), NOW)
    book.apply(CMDS, 4, reserve_cmd("o4", 1, 4, hold_until=NOW + timedelta(minutes=1)), NOW)
    book.apply(CMDS, 5, confirm_cmd("o4"), NOW)
    book.changelog()
    assert book.due_skus(NOW + timedelta(minutes=4)) == []
    assert book.due_skus(NOW + timedelta(minutes=5)) == [SKU]
    d = book.apply(CMDS, 6, expire_cmd(NOW + timedelta(minutes=10)), NOW)
    assert d is not None
    assert [(type(e), e.order_id) for e in d.events] == [(ReservationExpired, "o1"),
                                                         (ReservationExpired, "o2")]
    assert book.state(SKU).reserved == 3 + 4
    assert book.holds == {SKU: {"o3:1"}}
    assert book.due_skus(NOW + timedelta(minutes=59)) == []
    assert book.due_skus(NOW + timedelta(minutes=60)) == [SKU]
    records = decoded(book.changelog())
    assert [(k, v["p"]["state"], v["r"]["state"], v["src"]) for k, v in records[:-1]] == [
        (["r", SKU, "o1:1"], "held", "expired", [CMDS, 6]),
        (["r", SKU, "o2:1"], "held", "expired", [CMDS, 6])]
    assert records[-1][0] == ["s", SKU]
    check_invariants(book)


def test_safety_stock_is_counts_only_and_stops_sales():
    book = restocked(5)
    book.changelog()
    book.apply(ADJS, 1, SafetyStockSet(sku=SKU, threshold=5, source="operator"), NOW)
    assert book.state(SKU).safety_stock == 5 and not book.state(SKU).sellable
    assert [k for k, _ in book.changelog()] == [counts_key(SKU)]
    d = book.apply(CMDS, 1, reserve_cmd("o1", 1, 1), NOW)
    assert d is not None
    assert [(type(e), e.reason) for e in d.events] == [(StockRejected, "not_sellable")]
    assert book.state(SKU).reserved == 0 and book.holds == {}
    assert book.reservation(SKU, "o1:1").state == "rejected"
    # the rejection is written too, so a redelivery repeats it
    assert [k for k, _ in book.changelog()] == [reservation_record_key(SKU, "o1:1"),
                                                counts_key(SKU)]


def test_default_safety_stock_applies_to_new_skus():
    book = PartitionBook(default_safety_stock=2)
    assert book.state("SKU-Z").safety_stock == 2
    book.apply(ADJS, 0, StockAdjusted(event_id="r", sku="SKU-Z", delta=3, reason="restock",
                                      source="wms"), NOW)
    d = book.apply(CMDS, 0, reserve_cmd("o1", 1, 2, sku="SKU-Z"), NOW)
    assert d is not None and [type(e) for e in d.events] == [StockReserved]  # 3 > 2


def test_unknown_sku_and_insufficient_stock_are_rejected():
    book = PartitionBook()
    d = book.apply(CMDS, 0, reserve_cmd("o1", 1, 1), NOW)
    assert d is not None
    assert [(type(e), e.reason) for e in d.events] == [(StockRejected, "unknown_sku")]
    assert not book.state(SKU).known
    book = restocked(3)
    d = book.apply(CMDS, 1, reserve_cmd("o1", 1, 4), NOW)
    assert d is not None
    assert [(type(e), e.reason, e.available) for e in d.events] == [
        (StockRejected, "insufficient_stock", 3)]


def test_release_before_reserve_refuses_the_late_reserve():
    book = restocked(10)
    d = book.apply(CMDS, 1, release_cmd("o1"), NOW)
    assert d is not None and d.events == []
    assert book.reservation(SKU, "o1:1").state == "cancelled"
    d = book.apply(CMDS, 2, reserve_cmd("o1", 1, 2), NOW)
    assert d is not None
    assert [(type(e), e.reason) for e in d.events] == [(StockRejected,
                                                        "released_before_reserve")]
    assert book.state(SKU).reserved == 0 and book.holds == {}


@pytest.mark.parametrize("cmd", [confirm_cmd("o9"), commit_cmd("o9")])
def test_unknown_reservation_is_a_dead_letter_that_changes_nothing(cmd):
    book = restocked(10)
    book.apply(CMDS, 1, reserve_cmd("o1", 1, 4), NOW)
    book.changelog()
    before = snapshot(book)
    with pytest.raises(InvalidRecord) as exc:
        book.apply(CMDS, 2, cmd, NOW)
    assert exc.value.reason == "unknown_reservation"
    assert snapshot(book) == before
    assert book.changelog() == []
    # and in the middle of a batch it leaves the batch's records as they were
    book.apply(CMDS, 3, reserve_cmd("o2", 1, 1), NOW)
    with pytest.raises(InvalidRecord):
        book.apply(CMDS, 4, cmd, NOW)
    records = decoded(book.changelog())
    assert [k for k, _ in records] == [["r", SKU, "o2:1"], ["s", SKU]]
    assert records[1][1]["a"] == {ADJS: 0, CMDS: 3}  # the dead letter's offset is not kept


def test_commit_of_a_released_reservation_is_a_dead_letter():
    book = restocked(10)
    book.apply(CMDS, 1, reserve_cmd("o1", 1, 4), NOW)
    book.apply(CMDS, 2, release_cmd("o1"), NOW)
    book.changelog()
    before = snapshot(book)
    with pytest.raises(InvalidRecord) as exc:
        book.apply(CMDS, 3, commit_cmd("o1"), NOW)
    assert exc.value.reason == "not_held"
    assert snapshot(book) == before and book.changelog() == []


def test_unsupported_command_is_a_dead_letter():
    book = restocked(10)
    book.changelog()
    before = snapshot(book)
    level = StockLevel(sku=SKU, on_hand=1, reserved=0, available=1, safety_stock=0,
                       sellable=True)
    with pytest.raises(InvalidRecord) as exc:
        book.apply(CMDS, 1, level, NOW)
    assert exc.value.reason == "unsupported_command"
    assert snapshot(book) == before and book.changelog() == []


def test_changelog_puts_every_effect_before_every_counts_record():
    book = PartitionBook()
    for n, sku in enumerate(SKUS):
        book.apply(ADJS, n, adjusted(sku, 0), NOW)
    book.apply(CMDS, 0, reserve_cmd("o1", 1, 1, sku="SKU-C"), NOW)
    book.apply(CMDS, 1, reserve_cmd("o2", 1, 1, sku="SKU-A"), NOW)
    kinds = [json.loads(k)[0] for k, _ in book.changelog()]
    assert kinds == ["a", "a", "a", "r", "r", "s", "s", "s"]


# --- restore: unit cases ---------------------------------------------------------------------


def test_restore_applies_tombstones_and_keeps_the_latest_value():
    book = restocked(10)
    book.apply(CMDS, 1, reserve_cmd("o1", 1, 4), NOW)
    first = book.changelog()
    book.apply(CMDS, 2, reserve_cmd("o2", 1, 1), NOW)
    second = book.changelog()
    r_key = reservation_record_key(SKU, "o2:1")
    restored = PartitionBook()
    assert restored.restore([*first, *second, (r_key, None)]) == 0
    assert restored.reservation(SKU, "o2:1") is None
    assert restored.reservation(SKU, "o1:1") == book.reservation(SKU, "o1:1")
    assert restored.state(SKU) == book.state(SKU)
    # a tombstone for a key never written is harmless
    assert PartitionBook().restore([(counts_key("SKU-Q"), None)]) == 0


def test_restore_undoes_an_effect_whose_counts_were_lost():
    book = restocked(10)
    base = book.changelog()
    before = snapshot(book)
    book.apply(CMDS, 7, reserve_cmd("o1", 1, 4), NOW)
    effect, counts = book.changelog()
    restored = PartitionBook()
    assert restored.restore([*base, effect]) == 1
    assert snapshot(restored) == before  # no o1, nothing reserved, no hold indexed
    assert restored.changelog() == []  # restoring writes nothing
    # the redelivered reserve is decided again, the same, and writes the same records
    d = restored.apply(CMDS, 7, reserve_cmd("o1", 1, 4), NOW)
    assert d is not None and [type(e) for e in d.events] == [StockReserved]
    assert restored.changelog() == [effect, counts]
    assert snapshot(restored) == snapshot(book)
    # with the counts durable nothing is undone, and the redelivery is skipped
    fresh = PartitionBook()
    assert fresh.restore([*base, effect, counts]) == 0
    assert snapshot(fresh) == snapshot(book)
    assert fresh.apply(CMDS, 7, reserve_cmd("o1", 1, 4), NOW) is None


def test_restore_undoes_to_the_value_before_the_batch():
    book = restocked(10)
    book.apply(CMDS, 1, reserve_cmd("o1", 1, 4), NOW)
    base = book.changelog()
    before = snapshot(book)
    book.apply(CMDS, 2, confirm_cmd("o1"), NOW)
    book.apply(CMDS, 3, reserve_cmd("o2", 1, 2), NOW)
    records = book.changelog()
    assert [json.loads(v)["p"] is None for _, v in records[:2]] == [False, True]
    restored = PartitionBook()
    assert restored.restore([*base, *records[:2]]) == 2
    assert snapshot(restored) == before
    assert restored.reservation(SKU, "o1:1").state == "held"  # back from confirmed
    assert restored.holds == {SKU: {"o1:1"}}  # and its hold indexed again


def test_restore_drops_an_adjustment_of_a_sku_without_counts():
    book = PartitionBook()
    book.apply(ADJS, 2, StockAdjusted(event_id="e", sku=SKU, delta=5, reason="restock",
                                      source="wms"), NOW)
    effect, _ = book.changelog()
    assert effect[0] == adjustment_key(SKU, "e")
    restored = PartitionBook()
    assert restored.restore([effect]) == 1
    assert snapshot(restored) == snapshot(PartitionBook())
    assert restored.state(SKU) == SkuState(sku=SKU)
    # redelivered, the adjustment applies again (it is not mistaken for a replay)
    d = restored.apply(ADJS, 2, StockAdjusted(event_id="e", sku=SKU, delta=5,
                                              reason="restock", source="wms"), NOW)
    assert d is not None and d.adjustment == "e"
    assert restored.state(SKU) == SkuState(sku=SKU, on_hand=5, known=True)


def test_restore_keeps_the_skus_whose_counts_survived_and_undoes_the_others():
    book = PartitionBook()
    book.apply(ADJS, 0, adjusted("SKU-A", 0), NOW)
    book.apply(ADJS, 1, adjusted("SKU-B", 0), NOW)
    base = book.changelog()
    before = snapshot(book)
    batch = [Step(CMDS, 0, reserve_cmd("o1", 1, 2, sku="SKU-A")),
             Step(CMDS, 1, reserve_cmd("o2", 1, 3, sku="SKU-B"))]
    ref_answers, records = run_batch(book, batch)
    assert [json.loads(k)[0:2] for k, _ in records] == [
        ["r", "SKU-A"], ["r", "SKU-B"], ["s", "SKU-A"], ["s", "SKU-B"]]
    restored = PartitionBook()
    assert restored.restore([*base, *records[:3]]) == 1  # SKU-B's counts lost
    assert snapshot(restored) == mixed({"SKU-A": snapshot(book), "SKU-B": before})
    got, again = run_batch(restored, batch)
    assert got == [None, ref_answers[1]]  # SKU-A's reserve skipped, SKU-B's decided again
    assert again == [records[1], records[3]]
    assert snapshot(restored) == snapshot(book)


# --- 2. round trip ---------------------------------------------------------------------------


@FAST
@given(steps=step_lists(), data=st.data())
def test_restore_of_everything_written_is_the_live_book(steps, data):
    book = PartitionBook()
    restored = PartitionBook()
    log: Log = []
    for batch in batched(data, steps, "cuts"):
        # a book restored after the previous batch decides this one like the live book
        answers, records = run_batch(book, batch)
        assert run_batch(restored, batch) == (answers, records)
        log.extend(records)
        check_invariants(book)
        restored = PartitionBook()
        assert restored.restore(log) == 0
        assert snapshot(restored) == snapshot(book)
        # compaction keeps the latest record of each key, in log order
        latest = {k: n for n, (k, _) in enumerate(log)}
        compacted = [r for n, r in enumerate(log) if latest[r[0]] == n]
        again = PartitionBook()
        assert again.restore(compacted) == 0
        assert snapshot(again) == snapshot(book)


@FAST
@given(steps=step_lists(), data=st.data())
def test_invariants_hold_after_every_batch(steps, data):
    reference(batched(data, steps, "cuts"))  # checks the invariants after every batch


# --- 3. crash safety -------------------------------------------------------------------------


@settings(FAST, max_examples=500)
@given(steps=step_lists(max_size=24), data=st.data())
def test_a_crash_mid_write_changes_nothing(steps, data):
    """The key property, on unrestricted input: crash while batch k+1's changelog is
    written (a prefix survives), restart, redeliver (in the same batches or in others);
    same final book as without the crash, every step skipped (already answered) or
    answered as without the crash, nothing lost, and a second crash anywhere afterwards is
    just as harmless."""
    batches = batched(data, steps, "cuts")
    ref = reference(batches)
    crashed = data.draw(st.integers(0, len(batches) - 1), label="crashed batch")
    kept = data.draw(crash_points(ref.changelogs[crashed]), label="records kept")
    sent = kept == 0 and data.draw(st.booleans(), label="answers sent, no record written")
    redelivery = None
    if data.draw(st.booleans(), label="redelivered in other batches"):
        redelivery = batched(data, [s for b in batches[crashed:] for s in b], "redelivery cuts")
    crash_and_recover(ref, crashed, kept, redelivery, sent=sent)


@FAST
@given(steps=step_lists(), data=st.data())
def test_a_durable_batch_whose_commit_was_lost_is_skipped(steps, data):
    """Every record of the batch durable, offsets not committed: the redelivery skips
    every command it applied and writes nothing. (A dead letter moves no offset: one
    after its SKU's last applied command of the topic is decided again, the same.)"""
    batches = batched(data, steps, "cuts")
    ref = reference(batches)
    crashed = data.draw(st.integers(0, len(batches) - 1), label="crashed batch")
    log = [r for j in range(crashed + 1) for r in ref.changelogs[j]]
    book, undone = restart(log)
    assert undone == 0 and snapshot(book) == ref.snapshots[crashed]
    outbox = sent_before(ref, crashed, len(ref.changelogs[crashed]))
    got, records = run_batch(book, batches[crashed])
    assert records == []
    for step, g, w in zip(batches[crashed], got, ref.answers[crashed], strict=True):
        assert g is None or (is_dead_letter(w) and g == w), step
    assert snapshot(book) == ref.snapshots[crashed]
    outbox.send(batches[crashed], got)
    redeliver(book, log, batches[crashed + 1:], ref, outbox)


def test_a_fully_durable_batch_whose_commit_was_lost_is_a_pure_skip():
    late = NOW - timedelta(minutes=1)
    batches = [[Step(ADJS, 0, adjusted("SKU-A", 0)), Step(ADJS, 1, adjusted("SKU-B", 0)),
                Step(CMDS, 0, reserve_cmd("o1", 1, 1, sku="SKU-B", hold_until=late))],
               [Step(CMDS, 1, reserve_cmd("o2", 1, 2, sku="SKU-A")),
                Step(ADJS, 2, adjusted("SKU-A", 1)),
                Step(CMDS, 2, expire_cmd(NOW, sku="SKU-B")),
                Step(CMDS, 3, confirm_cmd("o2", sku="SKU-A")),
                Step(ADJS, 3, SafetyStockSet(sku="SKU-B", threshold=1, source="operator")),
                Step(CMDS, 4, release_cmd("o2", sku="SKU-A"))]]
    ref = reference(batches)
    assert not any(is_dead_letter(a) for a in ref.answers[1])
    book, undone = restart([*ref.changelogs[0], *ref.changelogs[1]])
    assert undone == 0
    got, records = run_batch(book, batches[1])
    assert got == [None] * len(batches[1]) and records == []
    assert snapshot(book) == snapshot(ref.book)


@FAST
@given(steps=step_lists(), data=st.data())
def test_restart_again_and_again_before_anything_is_redelivered(steps, data):
    """A crash during the restart (or right after it): the durable log is unchanged, so
    every restart restores the same book, and the redelivery still ends as the reference."""
    batches = batched(data, steps, "cuts")
    ref = reference(batches)
    crashed = data.draw(st.integers(0, len(batches) - 1), label="crashed batch")
    kept = data.draw(st.integers(0, len(ref.changelogs[crashed])), label="records kept")
    log: Log = [r for j in range(crashed) for r in ref.changelogs[j]]
    log += ref.changelogs[crashed][:kept]
    first, undone = restart(log)
    for _ in range(2):
        again, undone_again = restart(log)
        assert snapshot(again) == snapshot(first) and undone_again == undone
    redeliver(again, log, batches[crashed:], ref, sent_before(ref, crashed, kept))


# --- 4. coalescing ---------------------------------------------------------------------------


def test_one_key_written_twice_in_a_batch_is_one_record_undoing_to_the_batch_start():
    batches = [[Step(ADJS, 0, adjusted(SKU, 5))],
               [Step(CMDS, 10, reserve_cmd("o1", 1, 4)), Step(CMDS, 11, release_cmd("o1"))]]
    ref = reference(batches)
    book = ref.book
    assert decoded(ref.changelogs[1]) == [
        (["r", SKU, "o1:1"], {"r": res_json(book, "o1:1"), "p": None, "src": [CMDS, 11]}),
        (["s", SKU], {"c": book.state(SKU).model_dump(mode="json"),
                      "a": {ADJS: 0, CMDS: 11}}),
    ]
    assert book.reservation(SKU, "o1:1").state == "released"
    for kept in range(len(ref.changelogs[1]) + 1):
        crash_and_recover(ref, 1, kept)
        crash_and_recover(ref, 1, kept, [[s] for s in batches[1]])


def test_a_key_written_three_times_undoes_to_its_value_before_the_batch():
    book = restocked(10)
    book.apply(CMDS, 1, reserve_cmd("o1", 1, 4), NOW)
    base = book.changelog()
    before = snapshot(book)
    batch = [Step(CMDS, 2, confirm_cmd("o1")), Step(CMDS, 3, commit_cmd("o1")),
             Step(CMDS, 4, commit_cmd("o1"))]  # the last one a replay: same record again
    _, records = run_batch(book, batch)
    assert [(k, v["p"]["state"], v["r"]["state"], v["src"])
            for k, v in decoded(records)[:1]] == [
        (["r", SKU, "o1:1"], "held", "committed", [CMDS, 3])]
    assert len(records) == 2
    restored = PartitionBook()
    assert restored.restore([*base, records[0]]) == 1
    assert snapshot(restored) == before
    assert PartitionBook().restore([*base, *records]) == 0


def test_coalescing_across_skus_with_a_crash_at_every_point():
    """Two SKUs interleaved; each SKU writes its key twice: every crash point of the batch,
    redelivered in the same batches or one step at a time, and every second crash, ends as
    the reference."""
    steps0 = [Step(ADJS, 0, adjusted("SKU-A", 0)), Step(ADJS, 1, adjusted("SKU-B", 0))]
    batch = [Step(CMDS, 0, reserve_cmd("o1", 1, 2, sku="SKU-A")),
             Step(CMDS, 1, reserve_cmd("o2", 1, 3, sku="SKU-B")),
             Step(CMDS, 2, confirm_cmd("o1", sku="SKU-A")),
             Step(CMDS, 3, release_cmd("o2", sku="SKU-B")),
             Step(CMDS, 4, reserve_cmd("o3", 1, 1, sku="SKU-B"))]
    batches = [steps0, batch, [Step(CMDS, 5, commit_cmd("o1", sku="SKU-A"))]]
    ref = reference(batches)
    assert len(ref.changelogs[1]) == 5  # o1, o2, o3 records and two counts
    rest = [*batch, *batches[2]]
    for kept in range(len(ref.changelogs[1]) + 1):
        crash_and_recover(ref, 1, kept)
        crash_and_recover(ref, 1, kept, [[s] for s in rest])
        crash_and_recover(ref, 1, kept, [rest[:3], rest[3:]])


# --- 5. the scenarios of the bugs of the delta design ---------------------------------------
# Each was a strict xfail against the earlier changelog (deltas rolled forward on restore);
# they now assert the behaviour of the undo design.


def test_a_coalesced_record_is_undone_so_an_earlier_command_decides_as_before():
    batches = [[Step(ADJS, 0, StockAdjusted(event_id="r", sku=SKU, delta=5,
                                            reason="restock", source="wms"))],
               [Step(CMDS, 0, reserve_cmd("o1", 1, 5)),   # takes all 5
                Step(CMDS, 1, reserve_cmd("o2", 1, 5)),   # rejected: none available
                Step(CMDS, 2, release_cmd("o1"))]]
    ref = reference(batches)
    assert ref.answers[1][1][0]["event_type"] == "StockRejected"
    # the crash keeps o1's record (released) but not o2's rejection: o1 is undone, so the
    # redelivered reserve of o2 finds o1 holding all 5 again and is rejected again
    book, undone = restart([*ref.changelogs[0], ref.changelogs[1][0]])
    assert undone == 1 and book.reservation(SKU, "o1:1") is None
    got, _ = run_batch(book, batches[1])
    assert got == ref.answers[1]
    crash_and_recover(ref, 1, 1)


def test_a_second_crash_during_the_redelivery_undoes_again():
    batches = [[Step(ADJS, 0, adjusted(SKU, 5))],  # +10
               [Step(CMDS, 0, reserve_cmd("o1", 1, 1)),
                Step(CMDS, 1, reserve_cmd("o2", 1, 2)),
                Step(CMDS, 2, release_cmd("o1"))]]
    ref = reference(batches)
    log = [*ref.changelogs[0], ref.changelogs[1][0]]  # crash keeps o1's record only
    book, undone = restart(log)
    assert undone == 1 and book.state(SKU).reserved == 0
    _, records = run_batch(book, batches[1])
    assert records == ref.changelogs[1]  # decided again, the same
    log += records[:2]  # crash again: both effects survive, the counts do not
    again, undone = restart(log)
    assert undone == 2 and snapshot(again) == ref.snapshots[0]
    crash_and_recover(ref, 1, 1)


def test_a_redelivery_in_smaller_batches_then_a_crash_undoes_only_the_rest():
    batches = [[Step(ADJS, 0, adjusted(SKU, 5))],
               [Step(CMDS, 0, reserve_cmd("o1", 1, 1)), Step(CMDS, 1, reserve_cmd("o2", 1, 1))]]
    ref = reference(batches)
    log = [*ref.changelogs[0], *ref.changelogs[1][:2]]  # both effects, no counts
    book, undone = restart(log)
    assert undone == 2
    # the consumer hands the redelivery back one record at a time
    log += run_batch(book, batches[1][:1])[1]  # o1 again, counts with applied offset 0
    again, undone = restart(log)  # crash before the next batch: o2 (offset 1) is undone
    assert undone == 1 and again.state(SKU).reserved == 1
    assert again.reservation(SKU, "o2:1") is None
    crash_and_recover(ref, 1, 2, [[s] for s in batches[1]])


def test_a_partial_expire_of_two_holds_then_a_second_crash():
    due = NOW - timedelta(minutes=1)
    batches = [[Step(ADJS, 0, adjusted(SKU, 5)),
                Step(CMDS, 0, reserve_cmd("o1", 1, 1, hold_until=due)),
                Step(CMDS, 1, reserve_cmd("o2", 1, 2, hold_until=due))],
               [Step(CMDS, 2, expire_cmd(NOW))]]
    ref = reference(batches)
    assert len(ref.changelogs[1]) == 3
    book, undone = restart([*ref.changelogs[0], ref.changelogs[1][0]])
    assert undone == 1 and book.state(SKU).reserved == 3
    assert book.holds == {SKU: {"o1:1", "o2:1"}}
    for kept in range(4):
        crash_and_recover(ref, 1, kept)


def test_restore_undoes_every_effect_of_a_batch_whose_counts_were_lost():
    batches = [[Step(ADJS, 0, adjusted(SKU, 5)), Step(CMDS, 0, reserve_cmd("o2", 1, 2))],
               [Step(CMDS, 1, reserve_cmd("o1", 1, 3)), Step(CMDS, 2, release_cmd("o2"))]]
    ref = reference(batches)
    assert [k for k, _ in ref.changelogs[1]] == [reservation_record_key(SKU, "o1:1"),
                                                 reservation_record_key(SKU, "o2:1"),
                                                 counts_key(SKU)]
    # one crash, both effects durable, the counts lost: the order of the records (a
    # rewritten old key after a new one) does not matter, both are undone
    book, undone = restart([*ref.changelogs[0], *ref.changelogs[1][:2]])
    assert undone == 2 and snapshot(book) == ref.snapshots[0]
    assert book.state(SKU).reserved == 2  # o2 holds 2 again, o1 is gone
    crash_and_recover(ref, 1, 2)


@pytest.mark.parametrize("kept", [2, 1, 0], ids=["plain-redelivery", "counts-lost", "none"])
def test_a_dead_lettered_confirm_redelivered_is_skipped_or_dead_lettered_again(kept):
    batches = [[Step(ADJS, 0, adjusted(SKU, 5))],
               [Step(CMDS, 0, confirm_cmd("o1")), Step(CMDS, 1, reserve_cmd("o1", 1, 2))]]
    ref = reference(batches)
    assert ref.answers[1][0] == ("dead_letter", "unknown_reservation")
    assert len(ref.changelogs[1]) == 2
    book, _ = restart([*ref.changelogs[0], *ref.changelogs[1][:kept]])
    got, _ = run_batch(book, batches[1])
    # kept=2: the whole changelog was written, only the offset commit was lost: both are
    # skipped (the confirm's offset is below the reserve's); else decided as before
    assert got == ([None, None] if kept == 2 else ref.answers[1])
    crash_and_recover(ref, 1, kept)


@pytest.mark.parametrize("kept", [3, 2, 1, 0])
def test_a_redelivered_confirm_of_a_line_released_later(kept):
    batches = [[Step(ADJS, 0, adjusted(SKU, 5)), Step(CMDS, 0, reserve_cmd("o1", 1, 2))],
               [Step(CMDS, 1, confirm_cmd("o1")), Step(CMDS, 2, release_cmd("o1")),
                Step(CMDS, 3, reserve_cmd("o2", 1, 1))]]
    ref = reference(batches)
    assert ref.answers[1][0][0]["event_type"] == "ReservationConfirmed"
    assert len(ref.changelogs[1]) == 3
    book, _ = restart([*ref.changelogs[0], *ref.changelogs[1][:kept]])
    got, _ = run_batch(book, batches[1])
    # all durable: skipped (answered before the changelog); counts lost: the confirm
    # finds the line held again and re-sends ReservationConfirmed
    assert got == ([None] * 3 if kept == 3 else ref.answers[1])
    crash_and_recover(ref, 1, kept)


@pytest.mark.parametrize("kept", [2, 1, 0])
def test_a_redelivered_expire_does_not_expire_a_hold_written_after_it(kept):
    batches = [[Step(ADJS, 0, adjusted(SKU, 5))],
               [Step(CMDS, 0, expire_cmd(NOW)),
                Step(CMDS, 1, reserve_cmd("o1", 1, 2, hold_until=NOW - timedelta(minutes=5)))]]
    ref = reference(batches)
    assert ref.answers[1][0] == () and ref.book.reservation(SKU, "o1:1").state == "held"
    book, _ = restart([*ref.changelogs[0], *ref.changelogs[1][:kept]])
    got, _ = run_batch(book, batches[1])
    assert got == ([None, None] if kept == 2 else ref.answers[1])
    assert book.reservation(SKU, "o1:1").state == "held"
    crash_and_recover(ref, 1, kept)


def test_a_redelivered_expire_resends_its_answers_unless_they_went_out():
    due = NOW - timedelta(minutes=1)
    batches = [[Step(ADJS, 0, adjusted(SKU, 5)),
                Step(CMDS, 0, reserve_cmd("o1", 1, 1, hold_until=due))],
               [Step(CMDS, 1, expire_cmd(NOW))]]
    ref = reference(batches)
    want = [(e["event_type"], e["event_id"]) for e in ref.answers[1][0]]
    assert want == [("ReservationExpired", derive_id("expire", "o1", 1))]
    # the expiry record survived, its counts did not: undone, and expired again, the same
    book, undone = restart([*ref.changelogs[0], ref.changelogs[1][0]])
    assert undone == 1
    got, _ = run_batch(book, batches[1])
    assert [(e["event_type"], e["event_id"]) for e in got[0]] == want
    assert got == ref.answers[1]
    # both survived: the answers went out before the changelog, so the expire is skipped
    book, undone = restart([*ref.changelogs[0], *ref.changelogs[1]])
    assert undone == 0 and run_batch(book, batches[1]) == ([None], [])
    for kept in range(3):
        crash_and_recover(ref, 1, kept)
