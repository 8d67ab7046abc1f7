"""GET /v1/stock/{sku}: what every channel may sell, from the published stock.levels.

Every inventory worker tails the compacted ``stock.levels`` topic from the beginning, so
any worker answers for any SKU, whichever partition owns it; the answer is what inventory
last published, never a channel's own copy.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer

from shared.codec import InvalidRecord, decode
from shared.kafka_admin import partitions_of
from shared.runtime import Runtime
from shared.topics import STOCK_LEVELS

log = logging.getLogger(__name__)


class LevelsView:
    """The latest StockLevel per SKU, tailed from stock.levels."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.levels: dict[str, dict[str, Any]] = {}
        self.caught_up = asyncio.Event()

    async def run(self) -> None:
        conn = self.runtime.conn
        topic = conn.topic(STOCK_LEVELS)
        consumer = AIOKafkaConsumer(bootstrap_servers=conn.bootstrap_list, group_id=None,
                                    enable_auto_commit=False,
                                    fetch_max_wait_ms=conn.kafka_fetch_max_wait_ms)
        await consumer.start()
        try:
            partitions = await partitions_of(conn, topic)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        self._apply(record.value)
                if not self.caught_up.is_set() and not batch:
                    # Past the end offsets *and* a fetch that brought nothing: the embedded
                    # broker can report an end offset below the last record of a batch.
                    positions = [await consumer.position(tp) for tp in partitions]
                    if all(pos >= ends[tp] for pos, tp in zip(positions, partitions,
                                                               strict=True)):
                        self.caught_up.set()
                        log.info("event=stock_levels_caught_up skus=%d", len(self.levels))
        finally:
            await consumer.stop()

    def _apply(self, value: bytes | None) -> None:
        try:
            level = decode(STOCK_LEVELS, value)
        except InvalidRecord as exc:  # not ours to dead-letter: inventory wrote it
            log.warning("event=stock_level_unreadable reason=%s", exc.reason)
            return
        self.levels[level.sku] = level.model_dump(mode="json")


def register(runtime: Runtime) -> LevelsView:
    view = LevelsView(runtime)
    runtime.app.task(view.run)

    @runtime.app.page("/v1/stock/{sku}", name="stock_level")
    class StockLevelView(faust.web.View):
        async def get(self, request: faust.web.Request, sku: str) -> faust.web.Response:
            if not view.caught_up.is_set():
                return self.json({"error": "starting", "reason": "stock levels not loaded"},
                                 status=503)
            level = view.levels.get(sku)
            if level is None:
                return self.json({"error": "unknown_sku", "reason": f"no stock for {sku!r}"},
                                 status=404)
            return self.json(level)

    return view
