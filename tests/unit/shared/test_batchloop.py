"""The batched loop's pure part: decode, decide in order, one dead letter per bad record,
and the state cache a handler writes through. No broker, no database."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from shared import codec
from shared.batchloop import Effects, decide_batch, decode_batch
from shared.codec import InvalidRecord
from shared.events import OrderStatus, OrderStatusChanged
from shared.metrics import StreamMetrics
from shared.policy import Record, RecordPolicy
from shared.state import KeyedState
from shared.topics import ORDERS_DLQ, ORDERS_STATUS


def policy() -> RecordPolicy:
    return RecordPolicy("test", StreamMetrics(CollectorRegistry()), lambda name: f"p.{name}")


def change(order_id: str, to: OrderStatus = OrderStatus.RESERVED) -> bytes:
    return codec.encode(OrderStatusChanged(
        order_id=order_id, correlation_id=order_id, from_status=OrderStatus.SUBMITTED,
        to_status=to, at="2026-01-20T08:00:00Z", cause_event_id="c", channel="web",
        channel_order_id=order_id, customer_id="cust-1"))


def record(raw: bytes, offset: int, partition: int = 0, key: str = "k") -> Record:
    return Record(topic=ORDERS_STATUS, key=key, value=raw, headers={}, partition=partition,
                  offset=offset, raw=raw)


class Counting:
    """Counts changes per order in the table; refuses orders named 'bad'."""

    def state_key(self, record: Record) -> str | None:
        return record.value.order_id

    def handle(self, record: Record, table: MutableMapping[str, Any],
               effects: Effects) -> None:
        order_id = record.value.order_id
        effects.emit(ORDERS_STATUS, order_id, record.value)  # emitted before the refusal
        if order_id.startswith("bad"):
            raise InvalidRecord("refused", f"{order_id} refused")
        table[order_id] = table.get(order_id, 0) + 1
        effects.write((order_id, table[order_id]))

    async def write(self, pool: Any, rows: list[Any]) -> None:
        raise AssertionError("not called here")


def run(records: list[Record], tables: dict[int, dict[str, Any]] | None = None):
    tables = {} if tables is None else tables
    p = policy()
    decoded, done = decode_batch(records, p, lambda name: f"p.{name}")
    decide_batch(decoded, Counting(), lambda part: tables.setdefault(part, {}), p, done)
    return done, tables


def test_a_poison_record_becomes_one_dead_letter_and_the_batch_goes_on() -> None:
    records = [record(change("o1"), 0), record(b"{not json", 1), record(change("bad-1"), 2),
               record(change("o2"), 3)]
    done, tables = run(records)
    letters = [json.loads(o.value) for o in done.out if o.topic == ORDERS_DLQ]
    assert sorted((d["source_offset"], d["reason"]) for d in letters) == [
        (1, "invalid_json"), (2, "refused")]
    assert base_keys(done) == [b"o1", b"o2"]  # the refused record's own output is dropped
    assert done.rows == [("o1", 1), ("o2", 1)]
    assert tables == {0: {"o1": 1, "o2": 1}}
    # every offset counts as done, the dead-lettered ones too
    assert {tp.topic: off for tp, off in done.commits.items()} == {"p.orders.status": 4}


def base_keys(done) -> list[bytes]:
    return [o.key for o in done.out if o.topic == ORDERS_STATUS]


def test_a_dead_letter_is_the_same_on_redelivery() -> None:
    records = [record(b"[]", 7)]
    first, _ = run(records)
    again, _ = run(records)
    assert json.loads(first.out[0].value)["event_id"] == json.loads(again.out[0].value)[
        "event_id"]


def test_records_of_one_key_are_decided_in_order_against_the_table_so_far() -> None:
    done, tables = run([record(change("o1"), n) for n in range(5)])
    assert done.rows == [("o1", n) for n in range(1, 6)]
    assert tables[0] == {"o1": 5}


def test_each_partition_has_its_own_table_and_its_own_commit() -> None:
    done, tables = run([record(change("o1"), 0, partition=0),
                        record(change("o1"), 5, partition=3)])
    assert tables == {0: {"o1": 1}, 3: {"o1": 1}}
    assert sorted((tp.partition, off) for tp, off in done.commits.items()) == [(0, 1), (3, 6)]


@given(st.lists(st.sampled_from(["o1", "o2", "bad", "junk"]), max_size=30))
def test_every_record_ends_as_its_outputs_or_exactly_one_dead_letter(kinds: list[str]) -> None:
    records = [record(b"\xff" if k == "junk" else change(f"{k}-{n}" if k == "bad" else k), n)
               for n, k in enumerate(kinds)]
    done, _ = run(records)
    letters = sorted(json.loads(o.value)["source_offset"] for o in done.out
                     if o.topic == ORDERS_DLQ)
    assert letters == [n for n, k in enumerate(kinds) if k in ("bad", "junk")]
    assert len(base_keys(done)) == sum(k in ("o1", "o2") for k in kinds)
    assert (done.counted_out[(ORDERS_DLQ, "RejectedMessage")], done.counted_out[
        (ORDERS_STATUS, "OrderStatusChanged")]) == (len(letters), len(base_keys(done)))


# --- the state cache -----------------------------------------------------------------------


def state() -> KeyedState[int]:
    return KeyedState("t", encode=str, decode=int, max_cached=3)


def test_a_view_reads_what_was_written_and_marks_it_unsaved() -> None:
    s = state()
    view = s.view(1)
    assert view.get("a") is None
    view["a"] = 1
    assert view["a"] == 1 and s.view(2)["a"] == 1 and s.dirty == 1
    assert list(view) == ["a"] and list(s.view(2)) == []


def test_discarding_the_unsaved_forgets_them() -> None:
    s = state()
    s.view(0)["a"] = 1
    s.discard_unsaved()
    assert s.dirty == 0 and s.view(0).get("a") is None


def test_losing_a_partition_forgets_its_keys_only() -> None:
    s = state()
    s.view(0)["a"] = 1
    s.view(1)["b"] = 2
    s.drop([0])
    assert s.view(0).get("a") is None and s.view(1)["b"] == 2 and s.dirty == 1


def test_effects_encode_key_and_event() -> None:
    effects = Effects()
    event = OrderStatusChanged.model_validate_json(change("o9"))
    effects.emit(ORDERS_STATUS, "o9", event)
    effects.emit(ORDERS_STATUS, None, event)
    (first, kind), (second, _) = effects.out
    assert (first.key, kind, second.key) == (b"o9", "OrderStatusChanged", None)
    assert OrderStatusChanged.model_validate_json(first.value) == event
