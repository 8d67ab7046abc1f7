"""Benchmark: N reservations for ONE hot SKU through four contenders, in one run.

What is measured, per run: the same N ``ReserveStock`` commands (quantity 1, distinct order
ids, key = the SKU, so all on one partition) are produced in one burst while the contender
is already consuming; the clock runs from the first command produced to the last answer
(``StockReserved`` / ``StockRejected``) received. Throughput is answers per second over that
window; a command's latency is from its produce time (its record's CreateTime) to the
receive time of its answer, so under a burst it includes the time spent queued behind
earlier commands. Start-up and group join are outside the clock: a run starts only when the
contender has answered a stock adjustment with a ``StockLevel`` (and, for ours, /health is
200).

Why: one SKU, one writer is the service's correctness rule, so a flash sale on one SKU is
bounded by how fast one partition's writer goes. The issue's target is >= 4x the PostgreSQL
row-lock design and >= 5x the naive Faust agent (``FINDINGS.md``, "Baselines for one hot
SKU").

Contenders: ``ours`` (``python -m services.inventory``), ``naive`` (``bench/naive_agent.py``),
``postgres`` (``bench/pg_rowlock.py``) and ``quix`` (``bench/quix_reserve.py``, Quix Streams;
only on a real Kafka broker, ``KAFKA_BOOTSTRAP_SERVERS``: skipped on the embedded one), each
with its own topic prefix and a fresh consumer group. Each runs ``--repeat`` times,
interleaved (the order rotates per round); medians are reported with the spread, because
these machines are small and noisy.

Run from the repository root: ``python -m bench.hot_sku [--orders N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench.common import (
    ContenderFailed,
    Proc,
    feed_and_collect,
    give_stock,
    machine,
    percentile,
    reserve_commands,
    source_commit,
    store_sale_latencies,
)
from services import stack
from services.supervisor import Supervisor
from shared.kafka_admin import ensure_topics
from shared.settings import ConnectionSettings

CONTENDERS = ("ours", "naive", "postgres", "quix")
MODULES = {"naive": "bench.naive_agent", "postgres": "bench.pg_rowlock",
           "quix": "bench.quix_reserve"}
#: Contenders that need a real Kafka broker: (why not on the embedded one)
NEEDS_KAFKA = {"quix": "Quix Streams does not start on the embedded Tansu broker; set "
                       "KAFKA_BOOTSTRAP_SERVERS to an Apache Kafka broker to run it"}
SKU = "SKU-HOT-1"
STORE_SKU, STORE_SALES = "SKU-STORE-1", 20
RESULTS = Path(__file__).resolve().parent / "results" / "hot_sku.json"


@dataclass
class Run:
    contender: str
    round: int
    throughput: float = 0.0  # answers/s
    p50_ms: float | None = None  # None: fewer than half (p50) / 99 % (p99) answered in time
    p99_ms: float | None = None
    answered_p50_ms: float | None = None  # over the answered commands only (for cut-off runs)
    answered_p99_ms: float | None = None
    answered: int = 0
    reserved: int = 0
    rejected: int = 0
    duplicates: int = 0
    seconds: float = 0.0  # first produce -> last answer (or end of budget)
    ready_seconds: float = 0.0  # start of the process -> its first StockLevel
    complete: bool = False
    error: str = ""
    store_sale_p50_ms: float | None = None  # ours only: till sale -> stock.levels
    store_sale_max_ms: float | None = None


class _Ours:
    """The inventory service under services.supervisor (or under cProfile with --profile)."""

    def __init__(self, env: dict[str, str], work: Path, profile: Path | None) -> None:
        port = stack.free_port()
        self.url = f"http://127.0.0.1:{port}/health"
        if profile is None:
            self.sup: Supervisor | None = Supervisor(env, work / "logs", services=("inventory",),
                                                     ports={"inventory": port})
            self.sup.start()
            self.proc = None
        else:
            self.sup = None
            env = {**env, "ORDERSTREAM_INVENTORY_HTTP_PORT": str(port)}
            self.proc = Proc("ours", ["-m", "cProfile", "-o", str(profile), "-m",
                                      "services.inventory"], env, work / "logs" / "ours.log")

    def check(self) -> None:
        if self.proc is not None:
            self.proc.check()
        elif dead := self.sup.dead():
            raise ContenderFailed(self.sup.died_message(dead))

    async def ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(_healthy, self.url):
            self.check()
            if time.monotonic() > deadline:
                raise ContenderFailed(f"ours not healthy within {timeout:.0f}s")
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        else:
            self.sup.stop()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


async def run_one(name: str, rnd: int, base: ConnectionSettings, work: Path,
                  args: argparse.Namespace) -> Run:
    run_id = f"b{uuid.uuid4().hex[:8]}"
    prefix = f"{run_id}.{name}."
    conn = base.model_copy(update={"topic_prefix": prefix})
    await ensure_topics(conn)
    env = {"KAFKA_BOOTSTRAP_SERVERS": ",".join(conn.bootstrap_list),
           "DATABASE_URL": conn.database_url, "ORDERSTREAM_TOPIC_PREFIX": prefix,
           "ORDERSTREAM_TOPIC_PARTITIONS": str(conn.topic_partitions),
           "ORDERSTREAM_DATA_DIR": str(work / "data"), "ORDERSTREAM_LOG_LEVEL": "warn"}
    logs = work / "logs" / run_id
    commands = reserve_commands(SKU, args.orders, run_id)  # encoded before any clock runs
    result = Run(name, rnd)
    started = time.monotonic()
    if name == "ours":
        proc = _Ours(env, logs, args.profile)
    else:
        proc = Proc(name, ["-m", MODULES[name]], env, logs / f"{name}.log")
    try:
        if isinstance(proc, _Ours):
            await proc.ready()
        await give_stock(conn, SKU, args.orders, alive=proc)
        result.ready_seconds = time.monotonic() - started
        out = await feed_and_collect(conn, commands, SKU, budget=args.budget, alive=proc)
        if name == "ours":  # the other figure: a store sale visible within 1 s
            await give_stock(conn, STORE_SKU, STORE_SALES * 2, alive=proc)
            sales = await store_sale_latencies(conn, STORE_SKU, STORE_SALES)
            result.store_sale_p50_ms = percentile(sales, 50) * 1000
            result.store_sale_max_ms = max(sales) * 1000
    except ContenderFailed as exc:
        result.error = str(exc)
        return result
    finally:
        await asyncio.to_thread(proc.stop)
    lat = out.latencies + [float("inf")] * (args.orders - out.answered)
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    result.throughput = out.throughput
    if out.latencies:
        result.answered_p50_ms = percentile(out.latencies, 50) * 1000
        result.answered_p99_ms = percentile(out.latencies, 99) * 1000
    result.p50_ms = p50 * 1000 if p50 != float("inf") else None
    result.p99_ms = p99 * 1000 if p99 != float("inf") else None
    result.answered, result.reserved, result.rejected = out.answered, out.reserved, out.rejected
    result.duplicates, result.seconds = out.duplicates, out.elapsed
    result.complete = out.answered == args.orders
    result.error = out.error
    return result


def _why(error: str) -> str:
    """The telling line of a contender's death: Faust's "Crashed reason=...", else the last."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    crashed = [line for line in lines if "Crashed reason=" in line]
    return (crashed[0].split("Crashed ", 1)[1] if crashed else lines[-1] if lines else "")[:240]


def _ms(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None else "n/a"


def summarise(runs: list[Run], names: tuple[str, ...]) -> dict[str, dict[str, float | None]]:
    summary = {}
    for name in names:
        ok = [r for r in runs if r.contender == name and r.answered]
        if not ok:
            summary[name] = {"throughput": None, "p50_ms": None, "p99_ms": None}
            continue
        inf = float("inf")
        p50 = statistics.median(r.p50_ms if r.p50_ms is not None else inf for r in ok)
        p99 = statistics.median(r.p99_ms if r.p99_ms is not None else inf for r in ok)
        summary[name] = {"throughput": statistics.median(r.throughput for r in ok),
                         "p50_ms": None if p50 == inf else p50,
                         "p99_ms": None if p99 == inf else p99}
    return summary


def ratio(summary: dict, a: str, b: str) -> float | None:
    x, y = summary.get(a, {}).get("throughput"), summary.get(b, {}).get("throughput")
    return round(x / y, 3) if x and y else None


def report(runs: list[Run], summary: dict, args: argparse.Namespace) -> None:
    print("\nruns (interleaved):")
    for r in runs:
        note = ("" if r.complete else f"  FAILED: {_why(r.error)}" if r.error
                else "  INCOMPLETE (budget)")
        print(f"  round {r.round} {r.contender:<8} {r.throughput:>9,.0f}/s"
              f"  p50 {_ms(r.p50_ms):>7} ms  p99 {_ms(r.p99_ms):>7} ms"
              f"  answered {r.answered}/{args.orders}"
              f" (reserved {r.reserved}, rejected {r.rejected}, dup {r.duplicates})"
              f"  {r.seconds:.1f}s, ready {r.ready_seconds:.1f}s{note}")
    print(f"\nhot SKU, N={args.orders:,}, repeat={args.repeat} (medians; spread = min..max)")
    print(f"  {'contender':<9} {'reservations/s':>15} {'p50 ms':>9} {'p99 ms':>9}   spread")
    for name, s in summary.items():
        tps = [r.throughput for r in runs if r.contender == name and r.answered]
        spread = "n/a"
        if tps and s["throughput"]:
            half = (max(tps) - min(tps)) / 2 / s["throughput"]
            spread = f"{min(tps):,.0f}..{max(tps):,.0f}/s (±{half:.0%} of the median)"
        shown = f"{s['throughput']:,.0f}" if s["throughput"] else "n/a"
        print(f"  {name:<9} {shown:>15} {_ms(s['p50_ms']):>9} {_ms(s['p99_ms']):>9}   {spread}")
    if any(s["p50_ms"] is None or s["p99_ms"] is None for s in summary.values()):
        print("  (n/a latency: fewer than 50 % / 99 % of the commands were answered within the"
              f" {args.budget:.0f} s budget, so that percentile exceeds what was measured)")
    sales = [r for r in runs if r.contender == "ours" and r.store_sale_p50_ms is not None]
    if sales:
        print(f"  store sale -> stock.levels (ours, {STORE_SALES} sales per run): p50 "
              f"{statistics.median(r.store_sale_p50_ms for r in sales):,.0f} ms, max "
              f"{max(r.store_sale_max_ms for r in sales):,.0f} ms   (target < 1000 ms)")
    for other, target in (("postgres", 4), ("naive", 5), ("quix", None)):
        if target is None and other not in summary:
            continue
        value = ratio(summary, "ours", other)
        shown = f"{value:.2f}x" if value is not None else "n/a"
        goal = f"   (target >= {target}x)" if target is not None else ""
        print(f"  ratio ours/{other:<8} {shown:>7}{goal}")
    for name, why in args.skipped.items():
        print(f"  {name}: skipped ({why})")


async def bench(args: argparse.Namespace, conn: ConnectionSettings, work: Path) -> int:
    names = tuple(args.only.split(",")) if args.only else CONTENDERS
    args.skipped = {} if args.external_kafka else {
        name: why for name, why in NEEDS_KAFKA.items() if name in names}
    for name, why in args.skipped.items():
        print(f"skipping {name}: {why}", flush=True)
    names = tuple(name for name in names if name not in args.skipped)
    runs = []
    for rnd in range(1, args.repeat + 1):
        for name in names[rnd - 1 :] + names[: rnd - 1]:  # rotate the order every round
            print(f"round {rnd}/{args.repeat}: {name} ...", flush=True)
            run = await run_one(name, rnd, conn, work, args)
            runs.append(run)
            print(f"  {run.throughput:,.0f}/s, {run.answered}/{args.orders} answered"
                  f"{'' if not run.error else ', FAILED'}", flush=True)
    summary = summarise(runs, names)
    report(runs, summary, args)
    doc = {"benchmark": "hot_sku", "date": datetime.now(UTC).isoformat(timespec="seconds"),
           "orders": args.orders, "repeat": args.repeat, "partitions": conn.topic_partitions,
           "budget_seconds": args.budget,
           "feed": "one burst, produced while the contender consumes",
           "machine": await machine(conn, args.external_kafka), "source": source_commit(),
           "hot_sku.ratio_vs_postgres": ratio(summary, "ours", "postgres"),
           "hot_sku.ratio_vs_naive": ratio(summary, "ours", "naive")}
    if "quix" in names:
        doc["hot_sku.ratio_vs_quix"] = ratio(summary, "ours", "quix")
        doc["machine"]["quixstreams"] = metadata.version("quixstreams")
        doc["machine"]["confluent_kafka"] = metadata.version("confluent-kafka")
    if args.skipped:
        doc["skipped"] = args.skipped
    for name, s in summary.items():
        doc |= {f"hot_sku.{name}.{k}": None if v is None else round(v, 1) for k, v in s.items()}
    sales = [r for r in runs if r.contender == "ours" and r.store_sale_p50_ms is not None]
    if sales:
        doc["hot_sku.store_sale_to_level_p50_ms"] = round(
            statistics.median(r.store_sale_p50_ms for r in sales), 1)
        doc["hot_sku.store_sale_to_level_max_ms"] = round(
            max(r.store_sale_max_ms for r in sales), 1)
    doc["runs"] = [asdict(r) for r in runs]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"\nwrote {args.out}")
    return 1 if any(r.error for r in runs) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=20_000, help="reservations per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of every topic")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds a run may take before it is cut off as incomplete")
    parser.add_argument("--only", default="",
                        help="comma-separated subset of " + ",".join(CONTENDERS))
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    parser.add_argument("--profile", type=Path, default=None,
                        help="run ours under cProfile, writing stats to this file")
    args = parser.parse_args()
    base = ConnectionSettings()
    args.external_kafka = base.external_kafka
    work = Path(tempfile.mkdtemp(prefix="orderstream-bench-"))
    info = stack.up(work / "stack", kafka_port=stack.free_port(),
                    postgres_port=stack.free_port(), external_kafka=base.external_kafka,
                    external_database_url=base.external_database_url)
    try:
        conn = base.model_copy(update={"kafka_bootstrap_servers": info.kafka_bootstrap_servers,
                                       "database_url": info.database_url,
                                       "topic_partitions": args.partitions})
        code = asyncio.run(bench(args, conn, work))
    finally:
        stack.down(work / "stack")
    if code == 0:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"contender logs kept in {work / 'logs'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
