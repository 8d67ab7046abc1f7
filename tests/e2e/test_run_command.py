"""`orderstream run` (what `make run` calls) from the outside: ready, an order flows, Ctrl-C
stops everything it started."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid

import psutil
import pytest
from support import collect, given_stock, produce

from services.stack import free_port
from shared.settings import ConnectionSettings
from shared.topics import ORDERS_RAW, ORDERS_STATUS

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]


def _lines(stream, out: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        out.put(line)


async def _order_is_reserved(bootstrap: str, prefix: str) -> float:
    """Produce stock and one order with a plain Kafka client; seconds until RESERVED."""
    conn = ConnectionSettings(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix)
    sku, order = f"SKU-{uuid.uuid4().hex[:6]}", f"W-{uuid.uuid4().hex[:6]}"
    await given_stock(conn, sku, 1)
    sent = time.monotonic()
    await produce(conn, ORDERS_RAW, [(f"web:{order}", json.dumps({
        "order_id": order, "placed_at": "2026-11-24T10:15:00+08:00", "currency": "CNY",
        "customer": {"id": "c-1"},
        "lines": [{"sku": sku, "quantity": 1, "unit_price": "1.00"}]}).encode())],
        [("channel", b"web")])
    await collect(conn, ORDERS_STATUS, lambda seen: any(
        s["channel_order_id"] == order and s["to_status"] == "RESERVED" for s in seen))
    return time.monotonic() - sent


def test_run_starts_everything_an_order_is_reserved_and_ctrl_c_leaves_nothing(
    tmp_path, broker
):
    """On the embedded broker `run` starts broker and PostgreSQL itself; on Apache Kafka it
    is given the cluster (KAFKA_BOOTSTRAP_SERVERS) and starts PostgreSQL only."""
    kafka_port, pg_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")}
    bootstrap = f"127.0.0.1:{kafka_port}"
    if broker.cluster is not None:
        bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"] = broker.cluster.bootstrap_servers
    env |= {
        "ORDERSTREAM_TOPIC_PREFIX": f"run{uuid.uuid4().hex[:6]}.",
        "ORDERSTREAM_TOPIC_REPLICATION": str(broker.replication),
        "ORDERSTREAM_STATE_DIR": str(tmp_path / "stack"),
        "ORDERSTREAM_DATA_DIR": str(tmp_path / "data"),
        "ORDERSTREAM_TOPIC_PARTITIONS": "4",
        **{f"ORDERSTREAM_{s}_HTTP_PORT": str(free_port())
           for s in ("INGESTION", "INVENTORY", "STATUS", "NOTIFIER")},
    }
    started = time.monotonic()
    run = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run",
         "--kafka-port", str(kafka_port), "--postgres-port", str(pg_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(run.stdout, lines), daemon=True).start()
    descendants: list[psutil.Process] = []
    try:
        output = []
        while not any("ready in" in line for line in output):
            assert run.poll() is None, "".join(output)
            assert time.monotonic() - started < 120, "".join(output)
            try:
                output.append(lines.get(timeout=1))
            except queue.Empty:
                continue
        ready_after = time.monotonic() - started
        descendants = psutil.Process(run.pid).children(recursive=True)
        # The broker and PostgreSQL are detached (their own sessions), so find them by port.
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port in (kafka_port, pg_port):
                descendants.append(psutil.Process(conn.pid))
        # four services and the postmaster, and the broker when run started it
        assert len(descendants) >= (5 if broker.cluster else 6)

        latency = asyncio.run(_order_is_reserved(bootstrap, env["ORDERSTREAM_TOPIC_PREFIX"]))
        # A figure for the record, not an assertion: machines here are small and noisy.
        print(f"\nmake run ready after {ready_after:.1f}s; order RESERVED after {latency:.2f}s")
    finally:
        run.send_signal(signal.SIGINT)
        code = run.wait(timeout=60)
    assert code == 0
    _, alive = psutil.wait_procs(descendants, timeout=10)
    assert not alive, f"left running after Ctrl-C: {alive}"
