"""The hot path's decisions: one fetched batch decided against the partitions' stock books,
in memory, into what the writer must write (no I/O here)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition

from services.inventory.book import PartitionBook
from services.inventory.domain import Movement, stock_level
from services.inventory.metrics import InventoryMetrics
from shared import codec
from shared.policy import Record, RecordPolicy, headers_of, text
from shared.sender import Out
from shared.topics import INVENTORY_EVENTS, ORDERS_DLQ, STOCK_LEVELS


@dataclass
class Prepared:
    """A decided batch: what to write, in which order, and the offsets it completes."""

    movements: list[Movement]
    out: list[Out]
    commits: dict[TopicPartition, int]
    started: float
    state: dict[int, list[tuple[bytes, bytes]]]  # changelog records by partition


def _record(topic: str, tp: TopicPartition, message: Any) -> Record:
    return Record(topic=topic, key=text(message.key), value=None,
                  headers=headers_of(message), partition=tp.partition, offset=message.offset,
                  raw=message.value)


def decide_batch(batch: Mapping[TopicPartition, list[Any]], books: Mapping[int, PartitionBook],
                 names: Mapping[str, str], policy: RecordPolicy, metrics: InventoryMetrics,
                 now: datetime) -> Prepared:
    """Decide every record of ``batch`` (consumer records by partition, ``names`` maps full
    topic names to catalogue ones) against ``books``, in partition order. An invalid record
    becomes its one dead letter; the batch goes on."""
    started = time.perf_counter()
    out: list[Out] = []
    movements: list[Movement] = []
    levels: dict[str, tuple[int, str]] = {}  # sku -> (partition, cause event id)
    commits: dict[TopicPartition, int] = {}
    counted_in: Counter[tuple[str, str]] = Counter()  # metrics, added once per batch
    counted_out: Counter[tuple[str, str]] = Counter()
    n = 0
    for tp, records in batch.items():
        topic = names[tp.topic]
        book = books.get(tp.partition)
        if book is None:  # revoked while fetched: the new owner reads them again
            continue
        for message in records:
            n += 1
            key = text(message.key)
            try:
                cmd = codec.decode(topic, message.value)
                counted_in[(topic, cmd.event_type)] += 1
                if key != cmd.sku:
                    raise codec.InvalidRecord(
                        "wrong_key", f"key must be the SKU {cmd.sku!r}, got {key!r}")
                before = book.state(cmd.sku)
                decision = book.apply(topic, message.offset, cmd, now)
                if decision is None:
                    continue  # applied and answered before a restart
            except Exception as exc:  # noqa: BLE001 - invalid, or a bug: its dead letter
                record = _record(topic, tp, message)
                letter = policy.letter(record, exc)
                out.append(Out(ORDERS_DLQ, message.key, codec.encode(letter)))
                counted_out[(ORDERS_DLQ, letter.event_type)] += 1
                continue
            metrics.observe(before, decision)
            for event in decision.events:
                out.append(Out(INVENTORY_EVENTS, event.order_id.encode(),  # type: ignore[attr-defined]
                               codec.encode(event)))
                counted_out[(INVENTORY_EVENTS, event.event_type)] += 1
            movements.extend(decision.movements)
            if decision.changed:
                levels[cmd.sku] = (tp.partition, cmd.event_id)
        commits[tp] = records[-1].offset + 1
    state = {partition: book.changelog() for partition, book in books.items()}
    for sku, (partition, cause) in levels.items():
        event = stock_level(books[partition].state(sku), cause)
        out.append(Out(STOCK_LEVELS, sku.encode(), codec.encode(event)))
        counted_out[(STOCK_LEVELS, event.event_type)] += 1
    for (topic, event_type), count in counted_in.items():
        policy.count_in(topic, event_type, count)
    for (topic, event_type), count in counted_out.items():
        policy.count_out(topic, event_type, count)
    metrics.batches.observe(n)
    return Prepared(movements, out, commits, started, state)
