"""Benchmark: the Kafka client alone, aiokafka against confluent-kafka (librdkafka), on one
partition of Apache Kafka: consume N small records, and produce N.

Why: the hot-SKU profile (``bench/results/hot_sku_profile.md``) puts a large share of the
inventory worker's time in aiokafka itself — fetch parsing, record (un)packing, the
produce path — which is pure Python around a C record codec. confluent-kafka does the same
work in librdkafka's C threads. This measures how far apart the two are with no logic at
all, so that a switch can be judged before anyone writes one.

What one invocation does:

1. A source topic (1 partition) filled once, untimed, with ``--warmup`` + N records of
   ``--size`` bytes (JSON-like values, 16-byte keys).
2. ``--rounds`` rounds; in each, every contender once, the order rotating per round:

   - **consume** (a fresh consumer, no group: ``assign`` partition 0 from the beginning):
     the first ``--warmup`` records are read untimed (connections, first fetches), then
     the clock runs over the rest (about N: the batch that crosses the warm-up count is
     read untimed whole). aiokafka: ``getmany(max_records=2000)``;
     confluent-kafka: ``Consumer.consume(num_messages=2000)``. Each record's key and value
     are read. Both with the services' fetch settings (fetch wait 100 ms, 4 MiB per
     partition); each client's own defaults otherwise (aiokafka checks CRCs, librdkafka
     does not by default; librdkafka prefetches in its own thread).
   - **produce** (a fresh producer, a fresh 1-partition topic per run): N records, clock
     from the first send to the last acknowledgement. ``acks=all``, idempotent,
     ``linger 5 ms``, 1 MiB batches, Kafka's murmur2 partitioner on the key, for all three:
     aiokafka ``send()`` per record then ``flush()`` (the usual way); aiokafka producer
     batches (``create_batch`` / ``send_batch`` through ``shared.sender.BatchSender``, the
     way the inventory hot path sends); confluent-kafka ``produce()`` with a delivery
     callback, ``poll(0)`` every 1,000 records, then ``flush()``.

Per run: records/s, MB/s of values, and CPU µs per record (the process's user + system
time, librdkafka's threads included). Medians over the rounds, with the spread.

A broker: ``KAFKA_BOOTSTRAP_SERVERS`` (it must be Apache Kafka), or else one Apache Kafka
node is started for the run (``services.kafka_cluster``, a temporary state dir) and stopped
at the end.

Run from the repository root: ``python -m bench.client_compare [--records N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import confluent_kafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services import kafka_cluster
from shared.sender import BatchSender, Out

RESULTS = Path(__file__).resolve().parent / "results" / "client_compare.json"
BATCH = 2000  # records per getmany / consume call, as the hot path's batch_max
FETCH_WAIT_MS = 100  # the services' consumer fetch wait
PARTITION_FETCH_BYTES = 4 * 1024 * 1024
BATCH_BYTES = 1024 * 1024
CONSUMERS = ("aiokafka", "confluent")
PRODUCERS = ("aiokafka-send", "aiokafka-batches", "confluent")

Records = list[tuple[bytes, bytes]]


@dataclass
class Run:
    phase: str  # consume | produce
    client: str
    round: int
    records: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu_seconds / self.records * 1e6


def make_records(count: int, size: int, run: str) -> Records:
    """``count`` (key, value) pairs: 16-byte order-id-like keys, ``size``-byte values."""
    out = []
    for i in range(count):
        key = f"{run}-{i:07d}".encode()[:16].ljust(16, b"0")
        head = b'{"event_type":"ReserveStock","order_id":"%s","line":1,"quantity":1,"pad":"' % key
        out.append((key, head + b"x" * max(0, size - len(head) - 2) + b'"}'))
    return out


async def create_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    deadline = time.monotonic() + 30
    probe = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    try:  # wait until the partition has a leader
        while time.monotonic() < deadline:
            meta = probe.list_topics(name, timeout=5).topics.get(name)
            if meta is not None and meta.partitions and meta.partitions[0].leader >= 0:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"topic {name} has no leader after 30 s")
    finally:
        probe.close()


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


# --- consumers -------------------------------------------------------------------------------


async def consume_aiokafka(bootstrap: str, topic: str, warmup: int,
                           n: int) -> tuple[int, float, float]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", fetch_max_wait_ms=FETCH_WAIT_MS,
        max_partition_fetch_bytes=PARTITION_FETCH_BYTES)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        seen, total, size = 0, warmup + n, 0
        wall = cpu = 0.0
        timed = 0
        while seen < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=BATCH)
            for records in batches.values():
                for r in records:
                    size += len(r.value) + len(r.key)
                seen += len(records)  # (never more than asked for: max_records)
            if seen >= warmup and not wall:
                wall, cpu = _clock()  # the clock starts after the warm-up records
                timed = total - seen
        end_wall, end_cpu = _clock()
        assert size > 0
        return timed, end_wall - wall, end_cpu - cpu
    finally:
        await consumer.stop()


def consume_confluent(bootstrap: str, topic: str, warmup: int,
                      n: int) -> tuple[int, float, float]:
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"compare-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": FETCH_WAIT_MS, "max.partition.fetch.bytes": PARTITION_FETCH_BYTES})
    try:
        consumer.assign([confluent_kafka.TopicPartition(topic, 0,
                                                        confluent_kafka.OFFSET_BEGINNING)])
        seen, total, size = 0, warmup + n, 0
        wall = cpu = 0.0
        timed = 0
        while seen < total:
            messages = consumer.consume(num_messages=BATCH, timeout=1.0)
            for m in messages:
                if m.error() is not None:
                    raise RuntimeError(f"consume error: {m.error()}")
                size += len(m.value()) + len(m.key())
            seen += len(messages)
            if seen >= warmup and not wall:
                wall, cpu = _clock()
                timed = total - seen  # the records read after the clock started
        end_wall, end_cpu = _clock()
        assert size > 0
        return timed, end_wall - wall, end_cpu - cpu
    finally:
        consumer.close()


# --- producers -------------------------------------------------------------------------------


def _aiokafka_producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                            linger_ms=5, max_batch_size=BATCH_BYTES,
                            max_request_size=4 * 1024 * 1024)


async def produce_aiokafka_send(bootstrap: str, topic: str, records: Records) -> tuple[float,
                                                                                      float]:
    producer = _aiokafka_producer(bootstrap)
    await producer.start()
    try:
        await producer.partitions_for(topic)  # metadata outside the clock
        wall, cpu = _clock()
        futures = [await producer.send(topic, key=k, value=v) for k, v in records]
        await producer.flush()
        await asyncio.gather(*futures)
        end_wall, end_cpu = _clock()
        return end_wall - wall, end_cpu - cpu
    finally:
        await producer.stop()


async def produce_aiokafka_batches(bootstrap: str, topic: str,
                                   records: Records) -> tuple[float, float]:
    producer = _aiokafka_producer(bootstrap)
    await producer.start()
    try:
        sender = BatchSender(producer, lambda name: name)
        await sender.partition_of(topic, b"warm")  # metadata outside the clock
        wall, cpu = _clock()
        for i in range(0, len(records), BATCH):  # one hot-path batch at a time
            await sender.send_all([Out(topic, k, v) for k, v in records[i : i + BATCH]])
        end_wall, end_cpu = _clock()
        return end_wall - wall, end_cpu - cpu
    finally:
        await producer.stop()


def produce_confluent(bootstrap: str, topic: str, records: Records) -> tuple[float, float]:
    producer = confluent_kafka.Producer({
        "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
        "linger.ms": 5, "batch.size": BATCH_BYTES, "partitioner": "murmur2_random"})
    failed: list[object] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failed.append(err)

    producer.list_topics(topic, timeout=10)  # metadata outside the clock
    wall, cpu = _clock()
    for i, (k, v) in enumerate(records):
        while True:
            try:
                producer.produce(topic, value=v, key=k, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: serve callbacks, then retry
                producer.poll(0.01)
        if i % 1000 == 999:
            producer.poll(0)
    left = producer.flush(60)
    end_wall, end_cpu = _clock()
    if left or failed:
        raise RuntimeError(f"confluent-kafka: {left} undelivered, {len(failed)} failed "
                           f"({failed[:1]})")
    return end_wall - wall, end_cpu - cpu


# --- the benchmark ---------------------------------------------------------------------------


async def bench(args: argparse.Namespace, bootstrap: str) -> list[Run]:
    run_id = f"c{uuid.uuid4().hex[:8]}"
    source = f"{run_id}.source"
    await create_topic(bootstrap, source)
    print(f"filling {source} with {args.warmup + args.records:,} records of {args.size} B ...",
          flush=True)
    await asyncio.to_thread(produce_confluent, bootstrap, source,
                            make_records(args.warmup + args.records, args.size, run_id))
    records = make_records(args.records, args.size, run_id)
    consumers: dict[str, Callable[[], Awaitable[tuple[int, float, float]]]] = {
        "aiokafka": lambda: consume_aiokafka(bootstrap, source, args.warmup, args.records),
        "confluent": lambda: asyncio.to_thread(consume_confluent, bootstrap, source,
                                               args.warmup, args.records),
    }
    runs: list[Run] = []
    for rnd in range(1, args.rounds + 1):
        for name in CONSUMERS[rnd - 1 :] + CONSUMERS[: rnd - 1]:
            timed, seconds, cpu = await consumers[name]()
            runs.append(Run("consume", name, rnd, timed, seconds, cpu))
            print(f"round {rnd}/{args.rounds}: consume {name:<17} "
                  f"{runs[-1].rate:>10,.0f} records/s", flush=True)
        order = [PRODUCERS[(rnd - 1 + i) % len(PRODUCERS)] for i in range(len(PRODUCERS))]
        for name in order:
            topic = f"{run_id}.produce.{name}.{rnd}"
            await create_topic(bootstrap, topic)
            if name == "aiokafka-send":
                seconds, cpu = await produce_aiokafka_send(bootstrap, topic, records)
            elif name == "aiokafka-batches":
                seconds, cpu = await produce_aiokafka_batches(bootstrap, topic, records)
            else:
                seconds, cpu = await asyncio.to_thread(produce_confluent, bootstrap, topic,
                                                       records)
            runs.append(Run("produce", name, rnd, args.records, seconds, cpu))
            print(f"round {rnd}/{args.rounds}: produce {name:<17} "
                  f"{runs[-1].rate:>10,.0f} records/s", flush=True)
    return runs


def summarise(runs: list[Run]) -> dict[str, dict[str, float]]:
    out = {}
    for phase, names in (("consume", CONSUMERS), ("produce", PRODUCERS)):
        for name in names:
            mine = [r for r in runs if r.phase == phase and r.client == name]
            rates = [r.rate for r in mine]
            out[f"{phase}.{name}"] = {
                "records_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
                "cpu_us_per_record": statistics.median(r.cpu_us for r in mine)}
    return out


def report(summary: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    print(f"\nKafka clients, N={args.records:,} records of {args.size} B, 1 partition, "
          f"rounds={args.rounds} (medians; spread = min..max)")
    print(f"  {'phase':<8} {'client':<17} {'records/s':>10} {'MB/s':>7} {'CPU us/rec':>10}"
          "   spread")
    for key, s in summary.items():
        phase, name = key.split(".", 1)
        half = (s["max"] - s["min"]) / 2 / s["records_per_s"]
        print(f"  {phase:<8} {name:<17} {s['records_per_s']:>10,.0f} "
              f"{s['records_per_s'] * args.size / 1e6:>7.1f} {s['cpu_us_per_record']:>10.1f}"
              f"   {s['min']:,.0f}..{s['max']:,.0f}/s (±{half:.0%})")
    for phase, base in (("consume", "aiokafka"), ("produce", "aiokafka-send"),
                        ("produce", "aiokafka-batches")):
        r = summary[f"{phase}.confluent"]["records_per_s"] / summary[f"{phase}.{base}"][
            "records_per_s"]
        print(f"  ratio {phase} confluent/{base:<17} {r:>6.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000, help="records timed per run")
    parser.add_argument("--size", type=int, default=200, help="bytes per record value")
    parser.add_argument("--warmup", type=int, default=20_000,
                        help="records each consumer reads before its clock starts")
    parser.add_argument("--rounds", type=int, default=3, help="runs per contender")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args()
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    work = Path(tempfile.mkdtemp(prefix="orderstream-clients-"))
    try:
        if external:
            bootstrap, broker = external, f"external Kafka at {external}"
        else:
            cluster = kafka_cluster.up(1, work / "kafka")
            bootstrap = cluster.bootstrap_servers
            broker = f"Apache Kafka {cluster.version} (1 node, KRaft, started by the benchmark)"
        runs = asyncio.run(bench(args, bootstrap))
    finally:
        if not external:
            kafka_cluster.down(work / "kafka")
        shutil.rmtree(work, ignore_errors=True)
    summary = summarise(runs)
    report(summary, args)
    doc = {"benchmark": "client_compare",
           "date": datetime.now(UTC).isoformat(timespec="seconds"),
           "records": args.records, "size": args.size, "warmup": args.warmup,
           "rounds": args.rounds, "partitions": 1,
           "machine": {"nproc": len(os.sched_getaffinity(0)), "python": sys.version.split()[0],
                       "broker": broker, "aiokafka": metadata.version("aiokafka"),
                       "confluent_kafka": confluent_kafka.version()[0],
                       "librdkafka": confluent_kafka.libversion()[0]},
           "clients": {k: {n: round(v, 1) for n, v in s.items()} for k, s in summary.items()},
           "runs": [asdict(r) | {"rate": round(r.rate, 1)} for r in runs]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
