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

It keeps its own design beside the shared loop (``shared/batchloop.py``): its state is a
changelog of books decided one batch ahead of the writes, not rows read per batch. Its
jobs are split: this module owns the consumer, rebalances, restores and hold ticks;
``decisions.py`` decides a batch (step 2); ``writer.py`` writes it (steps 3-5). The
per-record policy (decode, dead letter, retry, metrics) is the shared ``RecordPolicy``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from services.inventory.book import PartitionBook
from services.inventory.bookstore import RocksBookStore
from services.inventory.decisions import decide_batch
from services.inventory.metrics import InventoryMetrics
from services.inventory.settings import InventorySettings
from services.inventory.writer import StockWriter
from shared import codec
from shared.clients import consumer_for, producer_for, tune_gc
from shared.events import ExpireHolds, derive_id
from shared.kafka_admin import StartBeforeBeginning, read_to_end
from shared.runtime import Runtime
from shared.sender import BatchSender, Out
from shared.timeutil import utc_now
from shared.topics import (
    INVENTORY_COMMANDS,
    INVENTORY_STATE,
    STOCK_ADJUSTMENTS,
)

log = logging.getLogger(__name__)

INPUTS = (INVENTORY_COMMANDS, STOCK_ADJUSTMENTS)
#: Longest a partition's changelog may take to read before the worker gives up and stops.
RESTORE_TIMEOUT = 900.0


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
        #: writes decided batches; one being decided while one is written
        self.writer: StockWriter | None = None
        self.policy = runtime.policy
        self.sender: BatchSender | None = None
        self._names = {self.conn.topic(n): n for n in INPUTS}

    # --- life cycle -------------------------------------------------------------------------

    async def run(self) -> None:
        conn = self.conn
        self.producer = producer_for(conn, idempotent=self.runtime.idempotent)
        await self.producer.start()
        self.sender = BatchSender(self.producer, conn.topic)
        self.consumer = consumer_for(conn, conn.topic("orderstream-inventory-stock"))
        self.consumer.subscribe([conn.topic(n) for n in INPUTS], listener=self)
        await self.consumer.start()
        tune_gc()
        self.writer = writer = StockWriter(self.sender, self.consumer, self.runtime.db.pool,
                                           self.policy, self.metrics, self.stores, conn.topic)
        try:
            while True:
                batch = await self.consumer.getmany(timeout_ms=200,
                                                    max_records=self.settings.batch_max)
                if not batch:
                    writer.check()
                    continue
                async with self.lock:
                    await writer.put(decide_batch(batch, self.books, self._names, self.policy,
                                                  self.metrics, utc_now()))
        finally:
            self.ready = False
            writer.close()
            await self.consumer.stop()
            await self.producer.stop()
            for store in self.stores.values():
                store.close()

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        async with self.lock:  # batches decided so far are written and committed first
            self.ready = False
            if self.writer is not None:
                await self.writer.drain()
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
                out.append(Out(INVENTORY_COMMANDS, sku.encode(), codec.encode(tick)))
        try:
            await self.sender.send_all(out)  # type: ignore[union-attr]
        except KafkaError as exc:  # the next tick tries again
            log.warning("event=expiry_tick_failed error=%r", exc)
        return len(out)
