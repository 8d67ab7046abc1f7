"""Benchmark: the WHOLE order flow through the four services, against a logic-free relay.

What is measured: seeded orders from all seven channels (``bench/orders.py``: each
channel's own payload shape, 1-3 lines, SKUs from 10,000 with Zipf popularity, 20 % unpaid)
are produced on ``orders.raw`` (key ``channel:channel_order_id``, header ``channel``, each
record's timestamp = its produce time) while ingestion, inventory, status and notifier run
as processes (``services.supervisor.Supervisor``, own topic prefix, ``--workers`` per
service). Per order the harness times, from its produce time, (a) its RESERVED or REJECTED
``OrderStatusChanged`` on ``orders.status`` and (b) its first record on
``notifications.outcomes``. Two runs on the same running system: a **burst** (``--orders``
produced as fast as the client goes) and a **paced** run (``--rate`` orders/s for
``--seconds``). Per run: orders/s end to end (orders answered / first produce -> last
answer), p50/p95/p99 of both latencies, CPU seconds per 1,000 orders of every process (each
service worker, the broker, PostgreSQL with its backends, the harness: psutil, delta over
the run) and peak RSS (sampled every 0.5 s), duplicates (a second RESERVED/REJECTED for an
order), lost orders (no answer within ``--budget`` s of the last produce), rejections and
dead letters. Start-up, group joins, stocking every SKU (``StockAdjusted`` on
``stock.adjustments`` until ``stock.levels`` shows all of them) and a 100-order warm-up are
outside the clock; answers are read to the end offsets before a run is declared over.

The same orders then go through the "plumbing limit" (``bench/relay.py``): the same hops
and records per order with aiokafka and no logic, on its own topic prefix; ours' orders/s
is printed as a ratio to the relay's.

Run from the repository root: ``python -m bench.flow [--orders N] [--rate R --seconds S]
[--workers 2] [--broker kafka]``; a table is printed and ``bench/results/flow.json`` written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench import orders as gen
from bench.common import (
    ContenderFailed,
    Proc,
    _consumer,
    machine,
    percentile,
    source_commit,
)
from services import kafka_cluster, stack
from services.supervisor import SERVICES, Supervisor, SupervisorError
from shared import codec
from shared.events import StockAdjusted
from shared.kafka_admin import ensure_topics
from shared.settings import ConnectionSettings
from shared.topics import (
    NOTIFICATIONS_OUTCOMES,
    ORDERS_DLQ,
    ORDERS_RAW,
    ORDERS_STATUS,
    STOCK_ADJUSTMENTS,
    STOCK_LEVELS,
)
from shared.transport import supports_idempotence

CONTENDERS = ("ours", "relay")
RESULTS = Path(__file__).resolve().parent / "results" / "flow.json"
ANSWERS = frozenset({"RESERVED", "REJECTED"})
STOCK_PER_SKU = 1_000_000
WARM_UP = 100  # orders through the whole flow before any clock runs
SAMPLE_EVERY = 0.5  # seconds between RSS samples
#: ``orderstream_batch_records_sum 123.0`` / ``_count`` lines of a /metrics page
BATCH_LINE = re.compile(r"^orderstream_batch_records_(sum|count)(?:\{[^}]*\})? (\S+)$", re.M)


# --- what a run produces ------------------------------------------------------------------


@dataclass
class Run:
    contender: str
    run: str  # burst | paced
    orders: int = 0
    answered: int = 0
    notified: int = 0
    reserved: int = 0
    rejected: int = 0
    paid: int = 0  # orders with a PAID status (expected: every paid order, all reserved)
    paid_expected: int = 0
    throughput: float = 0.0  # answered orders / (first produce -> last answer)
    seconds: float = 0.0
    feed_seconds: float = 0.0  # first -> last produce
    feed_rate: float = 0.0  # orders/s actually produced
    answer_p50_ms: float | None = None
    answer_p95_ms: float | None = None
    answer_p99_ms: float | None = None
    notify_p50_ms: float | None = None
    notify_p95_ms: float | None = None
    notify_p99_ms: float | None = None
    duplicates: int = 0  # a second RESERVED/REJECTED for an order
    notify_duplicates: int = 0  # notification records after an order's first
    lost: int = 0  # never answered within the budget
    lost_notifications: int = 0
    late: int = 0  # of the lost: answered after the budget, while the backlog drained
    late_notifications: int = 0
    dead_letters: int = 0  # records written to orders.dlq during the run
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    cpu_per_1000: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    #: mean records per batch of each service's consume loop during the run
    records_per_batch: dict[str, float] = field(default_factory=dict)
    error: str = ""


class Sampler:
    """CPU time (delta since ``start``) and peak RSS of named processes; a ``tree`` process
    counts with all its descendants (PostgreSQL's backends). A process that exits keeps the
    CPU it had at its last sample."""

    def __init__(self, pids: dict[str, tuple[int, bool]]) -> None:
        self.roots: dict[str, tuple[psutil.Process, bool]] = {}
        for name, (pid, tree) in pids.items():
            try:
                self.roots[name] = (psutil.Process(pid), tree)
            except psutil.Error:
                continue
        self.cpu: dict[str, dict[tuple[int, float], float]] = {n: {} for n in self.roots}
        self.base: dict[str, dict[tuple[int, float], float]] = {}
        self.peak: dict[str, int] = {}

    def _members(self, root: psutil.Process, tree: bool) -> list[psutil.Process]:
        try:
            return [root, *(root.children(recursive=True) if tree else ())]
        except psutil.Error:
            return [root]

    def sample(self, *, rss: bool = True) -> None:
        for name, (root, tree) in self.roots.items():
            total = 0
            for proc in self._members(root, tree):
                try:
                    with proc.oneshot():
                        times = proc.cpu_times()
                        self.cpu[name][(proc.pid, proc.create_time())] = times.user + times.system
                        total += proc.memory_info().rss if rss else 0
                except psutil.Error:
                    continue
            if rss:
                self.peak[name] = max(self.peak.get(name, 0), total)

    def start(self) -> None:
        self.sample(rss=False)
        self.base = {name: dict(seen) for name, seen in self.cpu.items()}
        self.peak = {}

    def cpu_seconds(self) -> dict[str, float]:
        return {name: sum(v - self.base.get(name, {}).get(k, 0.0) for k, v in seen.items())
                for name, seen in self.cpu.items()}

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_EVERY)


# --- the contenders -----------------------------------------------------------------------


class Contender:
    """The processes of one contender: ``pids`` names each (as the table shows it)."""

    name: str

    def check(self) -> None: ...
    def pids(self) -> dict[str, int]: ...
    def stop(self) -> None: ...
    def ident(self, order: gen.Order) -> str: ...
    def headers(self, order: gen.Order) -> list[tuple[str, bytes]]:
        return [("channel", order.channel.encode())]

    def batches(self) -> dict[str, tuple[float, float]]:
        """Per process: (records, batches) its consume loop has taken so far."""
        return {}


class Ours(Contender):
    name = "ours"

    def __init__(self, env: dict[str, str], logs: Path, workers: int) -> None:
        self.ports = {s: stack.free_port() for s in SERVICES}
        self.sup = Supervisor(
            env, logs, ports=self.ports,
            workers={s: [stack.free_port() for _ in range(workers - 1)] for s in SERVICES}
            if workers > 1 else None)
        self.sup.start()

    async def ready(self) -> None:
        try:
            await asyncio.to_thread(self.sup.wait_ready, 180.0)
        except SupervisorError as exc:
            raise ContenderFailed(str(exc)) from exc

    def check(self) -> None:
        if dead := self.sup.dead():
            raise ContenderFailed(self.sup.died_message(dead))

    def pids(self) -> dict[str, int]:
        return {c.name: c.proc.pid for c in self.sup.children if c.proc is not None}

    def stop(self) -> None:
        self.sup.stop()

    def ident(self, order: gen.Order) -> str:
        return order.order_id

    def batches(self) -> dict[str, tuple[float, float]]:
        """From each first worker's ``/metrics``: ``orderstream_batch_records`` sum and
        count (inventory's hot path has its own batches and no such histogram)."""
        found = {}
        for service, port in self.ports.items():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                            timeout=5) as reply:
                    text = reply.read().decode()
            except OSError:
                continue
            got = dict(BATCH_LINE.findall(text))
            if "sum" in got and "count" in got:
                found[service] = (float(got["sum"]), float(got["count"]))
        return found


class Relay(Contender):
    name = "relay"

    def __init__(self, env: dict[str, str], logs: Path, workers: int) -> None:
        self.ready_dir = logs / "assigned"
        self.ready_dir.mkdir(parents=True, exist_ok=True)
        env = {**env, "BENCH_RELAY_READY_DIR": str(self.ready_dir)}
        self.procs: dict[str, Proc] = {}
        for role in SERVICES:
            for n in range(1, workers + 1):
                name = role if n == 1 else f"{role}-{n}"
                self.procs[name] = Proc(f"relay {name}", ["-m", "bench.relay", "--role", role,
                                                          "--name", name], env,
                                        logs / f"relay-{name}.log")

    async def ready(self, conn: ConnectionSettings, timeout: float = 120.0) -> None:
        """Every role's group holds each input partition exactly once."""
        from bench.relay import ROLES

        deadline = time.monotonic() + timeout
        while True:
            self.check()
            if all(self._complete(conn, role, inputs) for role, inputs in ROLES.items()):
                return
            if time.monotonic() > deadline:
                raise ContenderFailed(f"relay groups not complete within {timeout:.0f}s")
            await asyncio.sleep(0.2)

    def _complete(self, conn: ConnectionSettings, role: str, inputs: tuple[str, ...]) -> bool:
        held: list[tuple[str, int]] = []
        for name in self.procs:
            if name.split("-")[0] != role:
                continue
            try:
                held += [tuple(tp) for tp in json.loads(
                    (self.ready_dir / f"{name}.json").read_text())]
            except (OSError, ValueError):
                return False
        want = {(conn.topic(t), p) for t in inputs for p in range(conn.topic_partitions)}
        return len(held) == len(want) and set(held) == want

    def check(self) -> None:
        for proc in self.procs.values():
            proc.check()

    def pids(self) -> dict[str, int]:
        return {name: proc.proc.pid for name, proc in self.procs.items()}

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()

    def ident(self, order: gen.Order) -> str:
        return order.key

    def headers(self, order: gen.Order) -> list[tuple[str, bytes]]:
        skus = " ".join(ln.sku for ln in order.lines).encode()
        return [("channel", order.channel.encode()), ("k", skus),
                ("p", b"1" if order.paid else b"0")]


# --- stock, feed and collect ----------------------------------------------------------------


def _producer(conn: ConnectionSettings) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=conn.bootstrap_list, acks="all", linger_ms=5,
                            max_batch_size=512 * 1024, max_request_size=4 * 1024 * 1024)


async def give_all_stock(conn: ConnectionSettings, skus: int, alive: Contender, *,
                         timeout: float = 180.0) -> float:
    """One StockAdjusted per SKU; wait until stock.levels has a record for each."""
    started = time.monotonic()
    records = [(gen.sku_name(r).encode(), codec.encode(StockAdjusted(
        sku=gen.sku_name(r), delta=STOCK_PER_SKU, reason="restock", source="bench")))
        for r in range(1, skus + 1)]
    consumer = _consumer(conn)
    await consumer.start()
    consumer.assign([TopicPartition(conn.topic(STOCK_LEVELS), p)
                     for p in range(conn.topic_partitions)])
    await consumer.seek_to_beginning()
    producer = _producer(conn)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(conn.topic(STOCK_ADJUSTMENTS), key=key, value=value)
        await producer.flush()
        seen: set[bytes] = set()
        while len(seen) < skus:
            batches = await consumer.getmany(timeout_ms=200)
            seen.update(r.key for rs in batches.values() for r in rs)
            alive.check()
            if time.monotonic() - started > timeout:
                raise ContenderFailed(f"stock.levels showed {len(seen)} of {skus} SKUs "
                                      f"within {timeout:.0f}s")
    finally:
        await producer.stop()
        await consumer.stop()
    return time.monotonic() - started


async def _end_offsets(consumer: AIOKafkaConsumer,
                       tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    return await consumer.end_offsets(tps)


async def flow_run(conn: ConnectionSettings, contender: Contender, orders: list[gen.Order],
                   label: str, *, rate: float | None, budget: float,
                   sampler: Sampler | None) -> Run:
    """Produce ``orders`` (a burst, or paced at ``rate``/s) and time every answer."""
    result = Run(contender.name, label, orders=len(orders))
    lead = 0.5 + len(orders) / 40_000  # time to encode, so orders are placed "now"
    start_at = time.time() + lead
    step = 1 / rate if rate else 0.0
    topic = conn.topic(ORDERS_RAW)
    records = [(contender.ident(o), o.key.encode(), gen.encode(o, start_at + i * step),
                contender.headers(o)) for i, o in enumerate(orders)]
    consumer = _consumer(conn)
    await consumer.start()
    status_topic, outcome_topic = conn.topic(ORDERS_STATUS), conn.topic(NOTIFICATIONS_OUTCOMES)
    tps = [TopicPartition(t, p) for t in (status_topic, outcome_topic)
           for p in range(conn.topic_partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end()
    for tp in tps:
        await consumer.position(tp)  # resolved now, before anything of this run is written
    dlq = [TopicPartition(conn.topic(ORDERS_DLQ), p) for p in range(conn.topic_partitions)]
    dlq_before = sum((await _end_offsets(consumer, dlq)).values())
    producer = _producer(conn)
    await producer.start()
    sent: dict[str, float] = {}
    answer_lat: list[float] = []
    notify_lat: list[float] = []
    answered: set[str] = set()
    notified: set[str] = set()
    paid: set[str] = set()
    late: set[str] = set()
    late_notified: set[str] = set()
    closed = False  # past the budget: answers now count as late, not in the figures
    last_answer = 0.0

    async def feed() -> None:
        first = time.time()
        for i, (ident, key, value, headers) in enumerate(records):
            if step:
                delay = first + i * step - time.time()
                if delay > 0.002:
                    await asyncio.sleep(delay)
            elif i % 500 == 499:
                await asyncio.sleep(0)  # let the collector read while we produce
            now = time.time()
            sent[ident] = now
            await producer.send(topic, key=key, value=value, headers=headers,
                                timestamp_ms=int(now * 1000))
        await producer.flush()

    def take(batches: dict) -> None:
        nonlocal last_answer
        received = time.time()
        for tp, rs in batches.items():
            for r in rs:
                doc = json.loads(r.value)
                ident = doc.get("order_id")
                if ident not in sent:
                    continue
                if tp.topic == outcome_topic:
                    if ident in notified or ident in late_notified:
                        result.notify_duplicates += 1
                    elif closed:
                        late_notified.add(ident)
                    else:
                        notified.add(ident)
                        notify_lat.append(received - sent[ident])
                    continue
                to = doc.get("to_status")
                if to == "PAID":
                    paid.add(ident)
                if to not in ANSWERS:
                    continue
                if ident in answered or ident in late:
                    result.duplicates += 1
                    continue
                if closed:
                    late.add(ident)
                    continue
                answered.add(ident)
                answer_lat.append(received - sent[ident])
                last_answer = received
                if to == "RESERVED":
                    result.reserved += 1
                else:
                    result.rejected += 1

    batches_before = contender.batches() if sampler is not None else {}
    sampling = feeder = None
    try:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        if sampler is not None:
            sampler.start()
            sampling = asyncio.create_task(sampler.run())
        first_sent = time.time()
        feeder = asyncio.create_task(feed())
        n = len(records)
        while True:
            take(await consumer.getmany(timeout_ms=200))
            if feeder.done():
                feeder.result()
                if len(answered) == n and len(notified) == n:
                    break
                if time.time() > max(sent.values()) + budget:
                    break
            try:
                contender.check()
            except ContenderFailed as exc:
                result.error = str(exc)
                break
        await feeder
        closed = True
        if sampler is not None:
            sampler.sample()
            cpu = sampler.cpu_seconds()  # the run's CPU: up to the last answer counted
            sampling.cancel()
        if not result.error and (len(answered) < n or len(notified) < n):
            # Cut off by the budget: wait (outside the figures) for the backlog to drain,
            # so that the next run starts on an idle system and late answers are told
            # apart from orders never answered.
            print(f"  {contender.name} {label}: cut off after {budget:.0f} s with "
                  f"{n - len(answered)} unanswered; waiting up to {budget:.0f} s more for "
                  "the backlog", flush=True)
            drain_until = time.time() + budget
            while time.time() < drain_until and (
                    len(answered) + len(late) < n or len(notified) + len(late_notified) < n):
                take(await consumer.getmany(timeout_ms=200))
                try:
                    contender.check()
                except ContenderFailed as exc:
                    result.error = str(exc)
                    break
        # Read to the end offsets, so that duplicates already written are counted too.
        ends = await _end_offsets(consumer, tps)
        drain_until = time.monotonic() + 15
        while time.monotonic() < drain_until:
            behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end]
            if not behind:
                break
            take(await consumer.getmany(*behind, timeout_ms=200))
    finally:
        for task in (sampling, feeder):
            if task is not None and not task.done():
                task.cancel()
        await producer.stop()
        dlq_after = sum((await _end_offsets(consumer, dlq)).values())
        await consumer.stop()
    if sampler is not None:
        result.cpu_seconds = {k: round(v, 3) for k, v in cpu.items()}
        for service, (total, count) in contender.batches().items():
            before = batches_before.get(service, (0.0, 0.0))
            if count > before[1]:
                result.records_per_batch[service] = round(
                    (total - before[0]) / (count - before[1]), 1)
        result.peak_rss_mib = {k: round(v / 2**20, 1) for k, v in sampler.peak.items()}
    result.answered, result.notified = len(answered), len(notified)
    result.paid, result.paid_expected = len(paid), sum(o.paid for o in orders)
    result.lost, result.lost_notifications = n - len(answered), n - len(notified)
    result.late, result.late_notifications = len(late), len(late_notified)
    result.dead_letters = dlq_after - dlq_before
    last_sent = max(sent.values()) if sent else first_sent
    result.feed_seconds = last_sent - first_sent
    result.feed_rate = n / max(result.feed_seconds, 1e-9)
    result.seconds = (last_answer or time.time()) - first_sent
    result.throughput = len(answered) / max(result.seconds, 1e-9)
    for prefix, lat in (("answer", answer_lat), ("notify", notify_lat)):
        padded = lat + [float("inf")] * (n - len(lat))  # a lost order is slower than all
        for q in (50, 95, 99):
            value = percentile(padded, q) if padded else float("inf")
            setattr(result, f"{prefix}_p{q}_ms", None if value == float("inf") else value * 1000)
    if result.answered:
        result.cpu_per_1000 = {k: round(v / result.answered * 1000, 3)
                               for k, v in result.cpu_seconds.items()}
    return result


# --- one contender: start, stock, warm up, two runs, stop ----------------------------------


async def run_contender(name: str, base: ConnectionSettings, work: Path, args: argparse.Namespace,
                        orders: list[gen.Order], extra_pids: dict[str, tuple[int, bool]]
                        ) -> list[Run]:
    run_id = f"f{uuid.uuid4().hex[:8]}"
    prefix = f"{run_id}.{name}."
    conn = base.model_copy(update={"topic_prefix": prefix})
    await ensure_topics(conn)
    env = {"KAFKA_BOOTSTRAP_SERVERS": ",".join(conn.bootstrap_list),
           "DATABASE_URL": conn.database_url, "ORDERSTREAM_TOPIC_PREFIX": prefix,
           "ORDERSTREAM_TOPIC_PARTITIONS": str(conn.topic_partitions),
           "ORDERSTREAM_TOPIC_REPLICATION": str(conn.topic_replication),
           "ORDERSTREAM_DATA_DIR": str(work / "data" / run_id), "ORDERSTREAM_LOG_LEVEL": "warn",
           "BENCH_RELAY_IDEMPOTENCE": "1" if args.idempotent else "0"}
    logs = work / "logs" / f"{run_id}-{name}"
    warm, burst, paced = (orders[:WARM_UP], orders[WARM_UP:WARM_UP + args.orders],
                          orders[WARM_UP + args.orders:])
    runs = [Run(name, "burst", orders=len(burst)), Run(name, "paced", orders=len(paced))]
    started = time.monotonic()
    proc: Contender | None = None
    try:
        if name == "ours":
            proc = Ours(env, logs, args.workers)
            await proc.ready()
        else:
            proc = Relay(env, logs, args.workers)
            await proc.ready(conn)
        stocked = await give_all_stock(conn, gen.SKUS, proc)
        warmed = await flow_run(conn, proc, warm, "warm-up", rate=None, budget=args.budget,
                                sampler=None)
        if warmed.error or warmed.lost or warmed.lost_notifications:
            raise ContenderFailed(warmed.error or f"warm-up: {warmed.lost} of {len(warm)} "
                                  f"orders unanswered, {warmed.lost_notifications} unnotified")
        print(f"  {name}: ready in {time.monotonic() - started:.1f}s (stock {stocked:.1f}s, "
              f"warm-up {warmed.seconds:.1f}s)", flush=True)
        pids = {k: (v, False) for k, v in proc.pids().items()} | extra_pids
        pids["harness"] = (os.getpid(), False)
        for i, (label, subset, rate) in enumerate((("burst", burst, None),
                                                   ("paced", paced, args.rate))):
            runs[i] = await flow_run(conn, proc, subset, label, rate=rate, budget=args.budget,
                                     sampler=Sampler(pids))
            r = runs[i]
            print(f"  {name} {label}: {r.throughput:,.0f} orders/s, answered "
                  f"{r.answered}/{r.orders}, notified {r.notified}, dup {r.duplicates}, "
                  f"{r.seconds:.1f}s{', FAILED' if r.error else ''}", flush=True)
            if r.error:
                for later in runs[i + 1:]:
                    later.error = f"not run: {name} failed in the {label} run"
                break
    except ContenderFailed as exc:
        print(f"  {name} FAILED: {_why(str(exc))}", flush=True)
        for r in runs:
            if not r.answered:
                r.error = str(exc)
    finally:
        if proc is not None:
            proc.stop()
    return runs


# --- report -----------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None else "n/a"


def _why(error: str) -> str:
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    crashed = [line for line in lines if "Crashed reason=" in line]
    return (crashed[0].split("Crashed ", 1)[1] if crashed else lines[-1] if lines else "")[:200]


def ratios(runs: list[Run]) -> dict[str, float | None]:
    by = {(r.contender, r.run): r.throughput for r in runs}
    out = {}
    for label in ("burst", "paced"):
        ours, relay = by.get(("ours", label)), by.get(("relay", label))
        out[label] = round(ours / relay, 3) if ours and relay else None
    return out


def report(runs: list[Run], args: argparse.Namespace, partitions: int) -> None:
    print(f"\norder flow: burst of {args.orders:,}, paced {args.rate:,.0f}/s for "
          f"{args.seconds:.0f} s; {args.workers} worker(s) per service, {partitions} "
          f"partitions, seed {args.seed}, budget {args.budget:.0f} s")
    print(f"  {'contender':<9} {'run':<6} {'orders':>7} {'fed/s':>7} {'orders/s':>9}   "
          f"{'to RESERVED/REJECTED p50/p95/p99 ms':>36}   {'to notification p50/p95/p99 ms':>31}"
          f"  {'dup':>4} {'lost':>5} {'rej':>4} {'dlq':>4} {'paid':>11}")
    for r in runs:
        answer = "/".join(_ms(v) for v in (r.answer_p50_ms, r.answer_p95_ms, r.answer_p99_ms))
        notify = "/".join(_ms(v) for v in (r.notify_p50_ms, r.notify_p95_ms, r.notify_p99_ms))
        note = f"  FAILED: {_why(r.error)}" if r.error else ""
        if r.lost or r.lost_notifications:
            note += (f"  (beyond the budget: {r.late} answered late, {r.lost - r.late} never;"
                     f" {r.lost_notifications} notifications missing, {r.late_notifications}"
                     " late)")
        paid = f"{r.paid}/{r.paid_expected}"
        print(f"  {r.contender:<9} {r.run:<6} {r.orders:>7,} {r.feed_rate:>7,.0f} "
              f"{r.throughput:>9,.0f}   {answer:>36}   {notify:>31}  {r.duplicates:>4} "
              f"{r.lost:>5} {r.rejected:>4} {r.dead_letters:>4} {paid:>11}{note}")
    for label, value in ratios(runs).items():
        shown = f"{value:.3f}x" if value is not None else "n/a"
        print(f"  ratio ours/relay ({label}): {shown}")
    names: list[str] = []
    for r in runs:
        names += [n for n in r.cpu_seconds if n not in names]
    if not names:
        return
    width = max(9, *(len(n) for n in names))
    for title, attr, fmt in (("CPU seconds per 1,000 orders", "cpu_per_1000", "{:.2f}"),
                             ("peak RSS, MiB", "peak_rss_mib", "{:.0f}")):
        print(f"\n  {title}")
        print(f"  {'contender':<9} {'run':<6} " + " ".join(f"{n:>{width}}" for n in names))
        for r in runs:
            values = getattr(r, attr)
            print(f"  {r.contender:<9} {r.run:<6} " + " ".join(
                f"{fmt.format(values[n]) if n in values else '-':>{width}}" for n in names))
    batched = [r for r in runs if r.records_per_batch]
    if batched:
        print("\n  records per batch of the consume loop, mean over the run (first worker)")
        for r in batched:
            print(f"  {r.contender:<9} {r.run:<6} " + "  ".join(
                f"{k} {v:,.1f}" for k, v in r.records_per_batch.items()))
    print("  (postgres: the server with all its backends, RSS summed over them; broker: the "
          "embedded tansu or the Kafka JVM; harness: this process)")


# --- main -----------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, conn: ConnectionSettings, work: Path,
                extra_pids: dict[str, tuple[int, bool]], broker: str | None) -> int:
    paced_n = int(args.rate * args.seconds)
    orders = gen.generate(WARM_UP + args.orders + paced_n, args.seed)
    gen.check(orders[:2000], time.time())  # the adapters read them as meant, before any run
    names = tuple(args.only.split(",")) if args.only else CONTENDERS
    runs: list[Run] = []
    for name in names:
        print(f"{name} ...", flush=True)
        runs += await run_contender(name, conn, work, args, orders, extra_pids)
    report(runs, args, conn.topic_partitions)
    info = await machine(conn, conn.kafka_bootstrap_servers if args.external_kafka else None)
    if broker:
        info["broker"] = broker
    unpaid = sum(not o.paid for o in orders) / len(orders)
    doc: dict[str, object] = {
        "benchmark": "flow", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "parameters": {"orders": args.orders, "rate": args.rate, "seconds": args.seconds,
                       "paced_orders": paced_n, "seed": args.seed, "workers": args.workers,
                       "partitions": conn.topic_partitions, "budget_seconds": args.budget,
                       "skus": gen.SKUS, "zipf_s": gen.ZIPF_S, "unpaid_share": round(unpaid, 4),
                       "lines_per_order": round(sum(len(o.lines) for o in orders) / len(orders),
                                                3),
                       "channels": gen.CHANNEL_MIX, "warm_up_orders": WARM_UP,
                       "broker": args.broker, "contenders": list(names)},
        "machine": info, "source": source_commit(),
    }
    for label, value in ratios(runs).items():
        doc[f"flow.ratio_vs_relay.{label}"] = value
    for r in runs:
        for k in ("throughput", "answer_p50_ms", "answer_p95_ms", "answer_p99_ms",
                  "notify_p50_ms", "notify_p95_ms", "notify_p99_ms", "duplicates", "lost"):
            value = getattr(r, k)
            doc[f"flow.{r.contender}.{r.run}.{k}"] = (round(value, 1) if isinstance(value, float)
                                                      else value)
    doc["runs"] = [asdict(r) for r in runs]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(args.out)
    print(f"\nwrote {args.out}")
    failed = any(r.error for r in runs)
    return 1 if failed else 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops us the way Ctrl-C does: through every finally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=20_000, help="orders in the burst")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced run, orders/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="paced run, seconds")
    parser.add_argument("--seed", type=int, default=1, help="seed of the order generator")
    parser.add_argument("--workers", type=int, default=1, choices=(1, 2),
                        help="workers per service (and per relay hop)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of every topic")
    parser.add_argument("--budget", type=float, default=120.0,
                        help="seconds after the last produce an order may take to be answered")
    parser.add_argument("--broker", choices=("embedded", "kafka"), default="embedded",
                        help="embedded Tansu, or one Apache Kafka node started for the run")
    parser.add_argument("--only", default="", help="comma-separated subset of "
                        + ",".join(CONTENDERS))
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    base = ConnectionSettings()
    work = Path(tempfile.mkdtemp(prefix="orderstream-flow-"))
    kafka_dir = work / "kafka"
    code = 1
    try:
        external, broker_pid, broker = base.external_kafka, None, None
        if args.broker == "kafka" and not external:
            cluster = kafka_cluster.up(1, kafka_dir)
            external = cluster.bootstrap_servers
            broker_pid = kafka_cluster.status(kafka_dir)["nodes"][1]["pid"]
            broker = f"Apache Kafka {cluster.version} (1 node, KRaft, started by the benchmark)"
        args.external_kafka = external
        info = stack.up(work / "stack", kafka_port=stack.free_port(),
                        postgres_port=stack.free_port(), external_kafka=external,
                        external_database_url=base.external_database_url)
        broker_pid = broker_pid or info.broker_pid
        # The relay's producers are idempotent when the broker grants producer ids, as the
        # services' are (ORDERSTREAM_KAFKA_IDEMPOTENCE=auto).
        client_log = logging.getLogger("aiokafka")  # the embedded broker's refusal is expected
        level = client_log.level
        client_log.setLevel(logging.CRITICAL)
        args.idempotent = asyncio.run(supports_idempotence([
            s.strip() for s in info.kafka_bootstrap_servers.split(",")], timeout=10.0))
        client_log.setLevel(level)
        extra = {}
        if broker_pid:
            extra["broker"] = (broker_pid, False)
        if info.postgres_pid:
            extra["postgres"] = (info.postgres_pid, True)
        conn = base.model_copy(update={"kafka_bootstrap_servers": info.kafka_bootstrap_servers,
                                       "database_url": info.database_url,
                                       "topic_partitions": args.partitions})
        code = asyncio.run(bench(args, conn, work, extra, broker))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        code = 130
    except (stack.StackError, kafka_cluster.KafkaClusterError) as exc:
        print(f"flow: {exc}", file=sys.stderr)
    finally:
        stack.down(work / "stack")
        if args.broker == "kafka":
            kafka_cluster.down(kafka_dir)
    if code == 0:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"logs kept in {work / 'logs'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
