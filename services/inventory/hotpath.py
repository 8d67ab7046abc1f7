"""The inventory hot path: stock commands read, decided and written in batches.

Why not a Faust agent: Faust hands an agent one event at a time and allows table writes
only inside that per-event iteration. Measured here, Faust's per-event delivery alone (an
agent that does nothing) tops out near 13,000 events/s on one partition, and a naive agent
that reads a table, writes it and sends an answer does about 2,600/s — below the
PostgreSQL row lock it should beat. So this is the small layer of our own the design
allows, running inside the inventory's Faust worker (which keeps the HTTP pages, metrics,
timers and life cycle):

1. ``getmany`` up to ``batch_max`` records from ``inventory.commands`` and
   ``stock.adjustments`` (one consumer group, range assignment, so partition *p* of both
   topics has one owner and one SKU's commands stay in order);
2. decide each record in memory against the partition's :class:`~book.PartitionBook`;
3. append the batch's ledger movements to PostgreSQL in one statement (idempotent by
   movement id; transient failures retried in place);
4. send the answers, one ``StockLevel`` per changed SKU and any dead letters (while 3
   runs), then the changelog records (effects, then counts: see ``book``), as producer
   batches, each step waiting for the broker's acknowledgements;
5. commit the offsets.

Steps 3-5 of one batch run while the next batch is decided (one batch ahead at most); a
rebalance waits until every decided batch is written and committed.

A crash anywhere before 5 redelivers the batch; restoring undoes what the batch wrote for
SKUs whose counts did not reach the log, and skips the commands of SKUs whose counts did,
so the redelivery decides what the first delivery decided (same event ids).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import struct
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.partitioner import DefaultPartitioner

from services.inventory import store
from services.inventory.book import PartitionBook
from services.inventory.bookstore import RocksBookStore
from services.inventory.domain import Movement, stock_level
from services.inventory.metrics import InventoryMetrics
from services.inventory.settings import InventorySettings
from shared import codec
from shared.events import Event, ExpireHolds, derive_id
from shared.kafka_admin import StartBeforeBeginning, read_to_end
from shared.runtime import RETRY_BACKOFF, Record, Runtime, headers_of, is_transient, text
from shared.timeutil import utc_now
from shared.topics import (
    INVENTORY_COMMANDS,
    INVENTORY_EVENTS,
    INVENTORY_STATE,
    ORDERS_DLQ,
    STOCK_ADJUSTMENTS,
    STOCK_LEVELS,
)

log = logging.getLogger(__name__)

INPUTS = (INVENTORY_COMMANDS, STOCK_ADJUSTMENTS)
#: Longest a partition's changelog may take to read before the worker gives up and stops.
RESTORE_TIMEOUT = 900.0


@dataclass
class _Out:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None


@dataclass
class _Prepared:
    """A decided batch: what to write, in which order, and the offsets it completes."""

    movements: list[Movement]
    out: list[_Out]
    commits: dict[TopicPartition, int]
    started: float
    state: dict[int, list[tuple[bytes, bytes]]]  # changelog records by partition


def _record(topic: str, tp: TopicPartition, message: Any) -> Record:
    return Record(topic=topic, key=text(message.key), value=None,
                  headers=headers_of(message), partition=tp.partition, offset=message.offset,
                  raw=message.value)


class HotPath(ConsumerRebalanceListener):
    """Owns the stock books of the partitions this worker is assigned."""

    def __init__(self, runtime: Runtime, settings: InventorySettings,
                 metrics: InventoryMetrics) -> None:
        self.runtime = runtime
        self.settings = settings
        self.metrics = metrics
        self.conn = runtime.conn
        self.books: dict[int, PartitionBook] = {}
        self.stores: dict[int, RocksBookStore] = {}  # the rocksdb store's local copies
        self.ready = False
        self.lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        #: decided batches waiting to be written; one being decided while one is written
        self._queue: asyncio.Queue[_Prepared] = asyncio.Queue(maxsize=1)
        self._writer: asyncio.Task[None] | None = None
        self._partitions: dict[str, list[int]] = {}
        self._in: dict[tuple[str, str], Any] = {}
        self._out: dict[tuple[str, str], Any] = {}
        self._partitioner = DefaultPartitioner()
        self._names = {self.conn.topic(n): n for n in INPUTS}

    # --- life cycle -------------------------------------------------------------------------

    async def run(self) -> None:
        conn = self.conn
        self.producer = AIOKafkaProducer(
            bootstrap_servers=conn.bootstrap_list, acks="all",
            enable_idempotence=self.runtime.idempotent, linger_ms=5,
            max_batch_size=1024 * 1024, max_request_size=4 * 1024 * 1024)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=conn.bootstrap_list,
            group_id=conn.topic("orderstream-inventory-stock"),
            enable_auto_commit=False, auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=int(conn.kafka_session_timeout * 1000),
            heartbeat_interval_ms=int(conn.kafka_heartbeat_interval * 1000),
            rebalance_timeout_ms=int(conn.kafka_rebalance_timeout * 1000),
            fetch_max_wait_ms=conn.kafka_fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.consumer.subscribe([conn.topic(n) for n in INPUTS], listener=self)
        await self.consumer.start()
        # A batch allocates many short-lived objects (models, dicts, records); with the
        # default thresholds the cyclic collector runs every 700 allocations and rescans
        # the books each time. Start-up objects are frozen out of its way, and it runs less
        # often: measured on the hot-SKU benchmark.
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        self._writer = asyncio.create_task(self._write_loop(), name="stock-writer")
        try:
            while True:
                batch = await self.consumer.getmany(timeout_ms=200,
                                                    max_records=self.settings.batch_max)
                if not batch:
                    self._check_writer()
                    continue
                async with self.lock:
                    prepared = self._decide(batch)
                    await self._until_writer(self._queue.put(prepared))
        finally:
            self.ready = False
            self._writer.cancel()
            await self.consumer.stop()
            await self.producer.stop()
            for store in self.stores.values():
                store.close()

    def _check_writer(self) -> None:
        if self._writer is not None and self._writer.done():
            self._writer.result()  # raises what stopped it
            raise RuntimeError("the stock writer stopped")

    async def _until_writer(self, step: Any) -> None:
        """Await ``step`` unless the writer dies first (then raise its error: the books
        are ahead of what was written, so the worker must stop and restore)."""
        assert self._writer is not None
        task = asyncio.ensure_future(step)
        await asyncio.wait({task, self._writer}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            self._check_writer()
        task.result()

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        async with self.lock:  # batches decided so far are written and committed first
            self.ready = False
            if self._writer is not None:
                await self._until_writer(self._queue.join())
            for tp in revoked:
                self.books.pop(tp.partition, None)
                store = self.stores.pop(tp.partition, None)
                if store is not None:
                    store.close()

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        async with self.lock:
            started = time.perf_counter()
            partitions = sorted({tp.partition for tp in assigned})
            for partition in partitions:
                if partition not in self.books:
                    self.books[partition] = await self._restore(partition)
            self.ready = True
            log.info("event=stock_books_ready partitions=%s skus=%d seconds=%.2f", partitions,
                     sum(len(b.counts) for b in self.books.values()),
                     time.perf_counter() - started)

    async def _restore(self, partition: int) -> PartitionBook:
        """Load the local copy (``rocksdb`` store) and read the changelog from where it ends
        to the end; the book undoes an interrupted batch (see book.py)."""
        book = PartitionBook(self.settings.default_safety_stock, self.settings.hold)
        tp = TopicPartition(self.conn.topic(INVENTORY_STATE), partition)
        local: list[tuple[bytes, bytes | None]] = []
        start: int | None = None
        store = self._open_store(partition)
        if store is not None:
            local, start = await asyncio.to_thread(store.load)
        records: list[tuple[bytes, bytes | None]] = []

        def keep(record: Any) -> None:
            records.append((record.key, record.value))

        try:
            reached = await read_to_end(self.conn, [tp], keep, timeout=RESTORE_TIMEOUT,
                                        start=None if start is None else {tp: start})
        except StartBeforeBeginning as exc:
            # The local copy misses records that are gone from the changelog: start over.
            log.warning("event=stock_book_local_copy_dropped partition=%d reason=%s",
                        partition, exc)
            assert store is not None
            await asyncio.to_thread(store.reset)
            local = []
            records.clear()
            reached = await read_to_end(self.conn, [tp], keep, timeout=RESTORE_TIMEOUT)
        position = reached[tp]
        undone = book.restore([*local, *records])
        if store is not None:
            await asyncio.to_thread(store.save, records, position)
        log.info("event=stock_book_restored partition=%d local=%d changelog=%d undone=%d",
                 partition, len(local), len(records), undone)
        return book

    def _open_store(self, partition: int) -> RocksBookStore | None:
        if not self.settings.table_store.startswith("rocksdb"):
            return None
        store = self.stores.get(partition)
        if store is None:
            # One directory per worker (by its HTTP port): two workers on one machine must
            # not share a RocksDB.
            directory = (self.conn.data_dir / self.conn.topic("inventory")
                         / f"books-{self.settings.http_port}" / f"p{partition}")
            store = self.stores[partition] = RocksBookStore(directory)
        return store

    # --- one batch --------------------------------------------------------------------------

    def _decide(self, batch: dict[TopicPartition, list[Any]]) -> _Prepared:
        """Decide every record of ``batch`` against the books (no I/O)."""
        started = time.perf_counter()
        now = utc_now()
        out: list[_Out] = []
        movements: list[Movement] = []
        levels: dict[str, tuple[int, str]] = {}  # sku -> (partition, cause event id)
        commits: dict[TopicPartition, int] = {}
        counted_in: Counter[tuple[str, str]] = Counter()  # metrics, added once per batch
        counted_out: Counter[tuple[str, str]] = Counter()
        n = 0
        for tp, records in batch.items():
            topic = self._names[tp.topic]
            book = self.books.get(tp.partition)
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
                except codec.InvalidRecord as exc:
                    out.append(self._dead_letter(_record(topic, tp, message), exc.reason,
                                                 exc.error, exc.field_errors))
                    continue
                except Exception as exc:  # a bug or an input nothing above recognised
                    log.exception("event=processing_failed topic=%s offset=%s", topic,
                                  message.offset)
                    out.append(self._dead_letter(_record(topic, tp, message),
                                                 "processing_failed",
                                                 f"{type(exc).__name__}: {exc}"))
                    continue
                self.metrics.observe(before, decision)
                for event in decision.events:
                    out.append(_Out(INVENTORY_EVENTS, event.order_id.encode(),  # type: ignore[attr-defined]
                                    codec.encode(event)))
                    counted_out[(INVENTORY_EVENTS, event.event_type)] += 1
                movements.extend(decision.movements)
                if decision.changed:
                    levels[cmd.sku] = (tp.partition, cmd.event_id)
            commits[tp] = records[-1].offset + 1
        state = {partition: book.changelog() for partition, book in self.books.items()}
        for sku, (partition, cause) in levels.items():
            event = stock_level(self.books[partition].state(sku), cause)
            out.append(_Out(STOCK_LEVELS, sku.encode(), codec.encode(event)))
            counted_out[(STOCK_LEVELS, event.event_type)] += 1
        for (topic, event_type), count in counted_in.items():
            self._counter(self._in, self.runtime.metrics.events_in, topic, event_type).inc(count)
        for (topic, event_type), count in counted_out.items():
            self._counter(self._out, self.runtime.metrics.events_out, topic,
                          event_type).inc(count)
        self.metrics.batches.observe(n)
        return _Prepared(movements, out, commits, started, state)

    async def _write_loop(self) -> None:
        """Write decided batches in order: ledger rows and answers, then the changelog,
        then the offsets (see the module docstring and book.py)."""
        while True:
            prepared = await self._queue.get()
            # Ledger rows and answers before the changelog: once a SKU's counts are durable,
            # a redelivered command for it is skipped, so what it caused must exist by then.
            await asyncio.gather(self._append_ledger(prepared.movements),
                                 self._send_all(prepared.out))
            written = await self._send_all([
                _Out(INVENTORY_STATE, k, v, partition)
                for partition, records in prepared.state.items() for k, v in records])
            for partition, records in prepared.state.items():
                store = self.stores.get(partition)
                where = (self.conn.topic(INVENTORY_STATE), partition)
                if store is not None and where in written:
                    await asyncio.to_thread(store.save, records, written[where])
            await self._commit(prepared.commits)
            self.metrics.batch_seconds.observe(time.perf_counter() - prepared.started)
            self._queue.task_done()

    def _count_out(self, topic: str, event: Event) -> None:
        self._counter(self._out, self.runtime.metrics.events_out, topic, event.event_type).inc()

    @staticmethod
    def _counter(cache: dict[tuple[str, str], Any], metric: Any, topic: str,
                 event_type: str) -> Any:
        """A labelled child, looked up once (``labels()`` costs more than ``inc()``)."""
        child = cache.get((topic, event_type))
        if child is None:
            child = cache[(topic, event_type)] = metric.labels(topic, event_type)
        return child

    def _dead_letter(self, record: Record, reason: str, error: str,
                     field_errors: tuple[dict[str, Any], ...] = ()) -> _Out:
        rejected = self.runtime.rejection(record, reason, error, field_errors)
        self._count_out(ORDERS_DLQ, rejected)
        return _Out(ORDERS_DLQ, record.key.encode() if record.key else None,
                    codec.encode(rejected))

    async def _append_ledger(self, movements: list[Movement]) -> None:
        attempt = 0
        while True:
            try:
                await store.append_movements(await self.runtime.db.pool(), movements)
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise  # the worker stops; a restart redelivers the batch
                delay = RETRY_BACKOFF[min(attempt, len(RETRY_BACKOFF) - 1)]
                attempt += 1
                self.runtime.metrics.retries.labels("inventory.ledger").inc()
                log.warning("event=transient_failure stage=ledger attempt=%d retry_in=%.1fs "
                            "error=%r", attempt, delay, exc)
                await asyncio.sleep(delay)

    async def _send_all(self, out: list[_Out]) -> dict[tuple[str, int], int]:
        """Send every record, as producer batches per partition (in order), wait until the
        broker has acknowledged all of them, and return each partition's next offset."""
        assert self.producer is not None
        producer = self.producer
        builders: dict[tuple[str, int], list[Any]] = {}
        for o in out:
            name = self.conn.topic(o.topic)
            partition = o.partition if o.partition is not None else (
                await self._partition_of(name, o.key))
            chain = builders.setdefault((name, partition), [])
            if not chain or chain[-1].append(key=o.key, value=o.value, timestamp=None) is None:
                chain.append(producer.create_batch())
                if chain[-1].append(key=o.key, value=o.value, timestamp=None) is None:
                    raise ValueError(f"a record for {name} is larger than a producer batch")
        sent = [(where, batch.record_count(),
                 await producer.send_batch(batch, where[0], partition=where[1]))
                for where, chain in builders.items() for batch in chain]
        metadata = await asyncio.gather(*(future for _, _, future in sent))
        next_offsets: dict[tuple[str, int], int] = {}
        for (where, count, _), meta in zip(sent, metadata, strict=True):
            next_offsets[where] = max(next_offsets.get(where, 0), meta.offset + count)
        return next_offsets

    async def _partition_of(self, topic: str, key: bytes | None) -> int:
        """The partition the default (murmur2) partitioner gives ``key``: the one every
        other producer of this topic, Faust's included, would pick."""
        partitions = self._partitions.get(topic)
        if partitions is None:
            assert self.producer is not None
            partitions = self._partitions[topic] = sorted(
                await self.producer.partitions_for(topic))
        if key is None:
            return self._partitioner(key, partitions, partitions)  # random, as Kafka's
        return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]

    async def _commit(self, commits: dict[TopicPartition, int]) -> None:
        assert self.consumer is not None
        if not commits:
            return
        try:
            await self.consumer.commit(commits)
        except (CommitFailedError, IllegalStateError) as exc:
            # Rebalanced meanwhile: the new owner reads these records again, and they change
            # nothing there but re-send the same answers.
            log.warning("event=commit_skipped reason=%r", exc)

    # --- hold expiry --------------------------------------------------------------------------

    async def tick_due_holds(self) -> int:
        """Send an ExpireHolds tick for every owned SKU with a due unpaid hold; the release
        itself happens in the batch loop, in the SKU's order, once."""
        if self.producer is None or not self.ready:
            return 0
        now = utc_now()
        out = []
        for book in list(self.books.values()):
            for sku in book.due_skus(now):
                tick = ExpireHolds(event_id=derive_id("expire-tick", sku, now.isoformat()),
                                   sku=sku, due_at=now)
                out.append(_Out(INVENTORY_COMMANDS, sku.encode(), codec.encode(tick)))
        try:
            await self._send_all(out)
        except KafkaError as exc:  # the next tick tries again
            log.warning("event=expiry_tick_failed error=%r", exc)
        return len(out)


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the default partitioner's hash), equal to
    ``aiokafka.partitioner.murmur2`` but reading four bytes at a time: it runs once per
    answer on the hot path."""
    length = len(data)
    m = 0x5BD1E995
    h = 0x9747B28C ^ length
    for k in struct.unpack_from(f"<{length >> 2}I", data):
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        h = ((h * m) & 0xFFFFFFFF) ^ ((k * m) & 0xFFFFFFFF)
    tail, base = length & 3, length & ~3
    if tail >= 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h = ((h ^ data[base]) * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    return h ^ (h >> 15)
