"""The hot path's writer: decided batches written in order — ledger rows and answers, then
the changelog, then the local copy, then the offsets (see hotpath.py and book.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer

from services.inventory import store
from services.inventory.bookstore import RocksBookStore
from services.inventory.decisions import Prepared
from services.inventory.domain import Movement
from services.inventory.metrics import InventoryMetrics
from shared.clients import commit
from shared.policy import RecordPolicy
from shared.sender import BatchSender, Out
from shared.topics import INVENTORY_STATE


class StockWriter:
    """Writes one decided batch at a time while the next is decided (one batch ahead at
    most). If it fails past its retries it stops, and so must the worker: the books are
    ahead of what was written, and a restart restores them and redelivers."""

    def __init__(self, sender: BatchSender, consumer: AIOKafkaConsumer,
                 pool: Callable[[], Awaitable[asyncpg.Pool]], policy: RecordPolicy,
                 metrics: InventoryMetrics, stores: Mapping[int, RocksBookStore],
                 full_name: Callable[[str], str]) -> None:
        self.sender = sender
        self.consumer = consumer
        self.pool = pool
        self.policy = policy
        self.metrics = metrics
        self.stores = stores
        self.full_name = full_name
        self.queue: asyncio.Queue[Prepared] = asyncio.Queue(maxsize=1)
        self.task: asyncio.Task[None] = asyncio.create_task(self._run(), name="stock-writer")

    def check(self) -> None:
        """Raise what stopped the writer, if it stopped."""
        if self.task.done():
            self.task.result()
            raise RuntimeError("the stock writer stopped")

    async def until_alive(self, step: Awaitable[Any]) -> None:
        """Await ``step`` unless the writer dies first (then raise its error)."""
        task = asyncio.ensure_future(step)
        await asyncio.wait({task, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            self.check()
        task.result()

    async def put(self, prepared: Prepared) -> None:
        await self.until_alive(self.queue.put(prepared))

    async def drain(self) -> None:
        """Return once every batch decided so far is written and committed."""
        await self.until_alive(self.queue.join())

    def close(self) -> None:
        self.task.cancel()

    async def _run(self) -> None:
        while True:
            prepared = await self.queue.get()
            # Ledger rows and answers before the changelog: once a SKU's counts are durable,
            # a redelivered command for it is skipped, so what it caused must exist by then.
            await asyncio.gather(self._append_ledger(prepared.movements),
                                 self.sender.send_all(prepared.out))
            written = await self.sender.send_all([
                Out(INVENTORY_STATE, k, v, partition)
                for partition, records in prepared.state.items() for k, v in records])
            for partition, records in prepared.state.items():
                local = self.stores.get(partition)
                where = (self.full_name(INVENTORY_STATE), partition)
                if local is not None and where in written:
                    await asyncio.to_thread(local.save, records, written[where])
            await commit(self.consumer, prepared.commits, "inventory")
            self.metrics.batch_seconds.observe(time.perf_counter() - prepared.started)
            self.queue.task_done()

    async def _append_ledger(self, movements: list[Movement]) -> None:
        pool = await self.pool()
        # Past its retries the worker stops; a restart redelivers the batch.
        await self.policy.retrying("inventory.ledger",
                                   lambda: store.append_movements(pool, movements))
