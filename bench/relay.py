"""The flow benchmark's "plumbing limit": the order flow's Kafka topology with no logic.

One process per hop and worker, ``python -m bench.relay --role R`` (R = ingestion,
inventory, status or notifier), each an aiokafka consumer group ``<prefix>relay-<R>``
(range assignment, like the inventory hot path) that reads its inputs in batches
(``getmany``, up to 2,000 records), produces what the real service would produce, record for
record, with aiokafka (``acks=all``, ``linger_ms=5``, idempotent when the broker grants it),
and commits the batch's offsets once every record it produced is acknowledged:

- ingestion: ``orders.raw`` -> one ``orders.submitted`` (the raw value, forwarded);
- status: ``orders.submitted`` -> ``orders.status`` SUBMITTED and one ``inventory.commands``
  reserve per line (keyed by SKU); the last reserve answer of an order on
  ``inventory.events`` -> ``orders.status`` RESERVED, and when paid also PAID (a paid
  order's reserves are held as confirmed at once: no confirm round trip follows);
- inventory: each command on ``inventory.commands`` -> one ``inventory.events`` record
  (keyed by order); one ``stock.levels`` record per SKU reserved or adjusted in the batch;
  ``stock.adjustments`` are read too;
- notifier: ``orders.submitted`` is read too (the notifier keeps its projection of orders
  from it); RESERVED / REJECTED on ``orders.status`` -> one ``notifications.outcomes``.

Nothing is decoded: the harness puts the order's SKUs (``k``, space-separated) and paid
flag (``p``) in headers of the ``orders.raw`` record, and every hop passes them on, with
the order key (``o``) on commands (all reserves) and answers; the status hop counts
answers per order in a dict. No database, no pydantic, no JSON parsing. Values are small
fixed-format JSON (padded to about the size of the real events) so that the harness reads
both contenders' answers the same way.

Each worker writes the partitions it holds to ``$BENCH_RELAY_READY_DIR/<name>.json`` after
every rebalance, so that the harness knows when the group is complete.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from aiokafka import ConsumerRebalanceListener
from aiokafka.structs import ConsumerRecord, TopicPartition

from shared.clients import consumer_for, producer_for, tune_gc
from shared.settings import ConnectionSettings
from shared.topics import (
    INVENTORY_COMMANDS,
    INVENTORY_EVENTS,
    NOTIFICATIONS_OUTCOMES,
    ORDERS_RAW,
    ORDERS_STATUS,
    ORDERS_SUBMITTED,
    STOCK_ADJUSTMENTS,
    STOCK_LEVELS,
)

ROLES = {
    "ingestion": (ORDERS_RAW,),
    "status": (ORDERS_SUBMITTED, INVENTORY_EVENTS),
    "inventory": (INVENTORY_COMMANDS, STOCK_ADJUSTMENTS),
    "notifier": (ORDERS_SUBMITTED, ORDERS_STATUS),
}
BATCH_MAX = 2000
#: padding per value, so each relay record is about as large as the real event it stands for
_PAD = {"command": 257, "answer": 258, "level": 233, "status": 472, "outcome": 327}


def _body(field: bytes, ident: bytes, kind: str, extra: bytes = b"") -> bytes:
    return (b'{"' + field + b'":"' + ident + b'"' + extra + b',"pad":"'
            + b"x" * _PAD[kind] + b'"}')


def _status(key: bytes, status: bytes) -> bytes:
    return _body(b"order_id", key, "status", b',"to_status":"' + status + b'"')


class _Assigned(ConsumerRebalanceListener):
    def __init__(self, path: Path | None) -> None:
        self.path = path

    def _write(self, partitions: list[list[object]]) -> None:
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(partitions))
            tmp.replace(self.path)

    async def on_partitions_revoked(self, revoked: object) -> None:
        self._write([])

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._write(sorted([tp.topic, tp.partition] for tp in assigned))


class Relay:
    def __init__(self, role: str, conn: ConnectionSettings) -> None:
        self.role = role
        self.conn = conn
        self.names = {conn.topic(t): t for t in ROLES[role]}
        self.out = {t: conn.topic(t) for t in (ORDERS_SUBMITTED, INVENTORY_COMMANDS,
                                               INVENTORY_EVENTS, STOCK_LEVELS, ORDERS_STATUS,
                                               NOTIFICATIONS_OUTCOMES)}
        self.answers: dict[bytes, int] = {}  # status: reserve answers seen per order
        self.futures: list[asyncio.Future] = []

    async def send(self, topic: str, key: bytes, value: bytes,
                   headers: list[tuple[str, bytes]] | None = None) -> None:
        self.futures.append(await self.producer.send(self.out[topic], value=value, key=key,
                                                     headers=headers))

    async def run(self, name: str, ready_dir: Path | None) -> None:
        conn = self.conn
        # The services' own client settings (shared/clients.py), so that the ratio compares
        # logic, not configuration.
        self.producer = producer_for(
            conn, idempotent=os.environ.get("BENCH_RELAY_IDEMPOTENCE") == "1")
        await self.producer.start()
        consumer = consumer_for(conn, conn.topic(f"relay-{self.role}"))
        path = ready_dir / f"{name}.json" if ready_dir is not None else None
        consumer.subscribe(list(self.names), listener=_Assigned(path))
        await consumer.start()
        tune_gc()
        handle = getattr(self, f"_{self.role}")
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=BATCH_MAX)
                if not batch:
                    continue
                levels: set[bytes] = set()
                for tp, records in batch.items():
                    topic = self.names[tp.topic]
                    for r in records:
                        await handle(topic, r, levels)
                for sku in levels:
                    await self.send(STOCK_LEVELS, sku, _body(b"sku", sku, "level"))
                if self.futures:
                    await asyncio.gather(*self.futures)
                    self.futures.clear()
                await consumer.commit()
        finally:
            await consumer.stop()
            await self.producer.stop()

    # --- the hops ---------------------------------------------------------------------------

    async def _ingestion(self, topic: str, r: ConsumerRecord, levels: set[bytes]) -> None:
        await self.send(ORDERS_SUBMITTED, r.key, r.value, list(r.headers))

    async def _status(self, topic: str, r: ConsumerRecord, levels: set[bytes]) -> None:
        headers = dict(r.headers)
        if topic == ORDERS_SUBMITTED:
            await self.send(ORDERS_STATUS, r.key, _status(r.key, b"SUBMITTED"),
                            [("s", b"SUBMITTED")])
            await self._reserves(r.key, headers)
            return
        seen = self.answers.get(r.key, 0) + 1
        if seen < len(headers["k"].split()):
            self.answers[r.key] = seen
            return
        self.answers.pop(r.key, None)
        await self.send(ORDERS_STATUS, r.key, _status(r.key, b"RESERVED"), [("s", b"RESERVED")])
        if headers.get("p") == b"1":
            await self.send(ORDERS_STATUS, r.key, _status(r.key, b"PAID"), [("s", b"PAID")])

    async def _reserves(self, key: bytes, headers: dict[str, bytes]) -> None:
        skus = headers["k"]
        out = [("o", key), ("k", skus), ("p", headers.get("p", b"0"))]
        for sku in skus.split():
            await self.send(INVENTORY_COMMANDS, sku, _body(b"order_id", key, "command"), out)

    async def _inventory(self, topic: str, r: ConsumerRecord, levels: set[bytes]) -> None:
        if topic == STOCK_ADJUSTMENTS:
            levels.add(r.key)
            return
        headers = list(r.headers)
        order = next(v for k, v in headers if k == "o")
        await self.send(INVENTORY_EVENTS, order, _body(b"order_id", order, "answer"), headers)
        levels.add(r.key)  # every command is a reserve

    async def _notifier(self, topic: str, r: ConsumerRecord, levels: set[bytes]) -> None:
        if topic == ORDERS_STATUS and any(k == "s" and v in (b"RESERVED", b"REJECTED")
                                          for k, v in r.headers):
            await self.send(NOTIFICATIONS_OUTCOMES, r.key, _body(b"order_id", r.key, "outcome"))


async def _main(role: str, name: str) -> None:
    ready = os.environ.get("BENCH_RELAY_READY_DIR")
    relay = Relay(role, ConnectionSettings())
    task = asyncio.create_task(relay.run(name, Path(ready) if ready else None))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=sorted(ROLES), required=True)
    parser.add_argument("--name", default="", help="this worker's name (default: the role)")
    args = parser.parse_args()
    asyncio.run(_main(args.role, args.name or args.role))
    return 0


if __name__ == "__main__":
    sys.exit(main())
