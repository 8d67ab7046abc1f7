"""10,000 mixed records through the real ingestion service: every channel, topic and webhook,
5% malformed, 10% duplicates. Nothing lost, nothing doubled, every rejection explained."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from support import collect, running_system

from services.ingestion.channels import ADAPTERS
from services.ingestion.channels.base import PaymentState
from services.ingestion.settings import IngestionSettings
from shared import signing
from shared.topics import ORDERS_DLQ, ORDERS_RAW, ORDERS_SUBMITTED

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

SAMPLES = Path(__file__).parents[1] / "samples"
TOTAL = 10_000
MALFORMED_SHARE, DUPLICATE_SHARE, WEBHOOK_SHARE = 0.05, 0.10, 0.10
ZONES = IngestionSettings().channel_zones


def templates() -> list[tuple[str, str, str]]:
    """(channel, sample text, its order id) for every non-cancelled sample of every channel."""
    found = []
    for channel, adapter in sorted(ADAPTERS.items()):
        for path in sorted((SAMPLES / channel).glob("*.json")):
            text = path.read_text()
            payload = json.loads(text)
            if adapter.normalise(payload, zone=ZONES[channel]).payment != PaymentState.CANCELLED:
                found.append((channel, text, adapter.order_id_of(payload)))
    return found


def variant(channel: str, text: str, old_id: str, n: int) -> tuple[str, bytes]:
    """The sample with its order id replaced by a new unique one of the same form."""
    new_id = (old_id[:-9] + f"{n:09d}") if old_id.isdigit() and len(old_id) > 9 else f"{old_id}{n}"
    body = re.sub(rf'(?<![\w-]){re.escape(old_id)}(?![\w-])', new_id, text)
    assert ADAPTERS[channel].order_id_of(json.loads(body)) == new_id, (channel, old_id)
    return new_id, body.encode()


def malformed(rng: random.Random, body: bytes) -> bytes:
    return rng.choice([body[: len(body) // 2], b"[]", b"\xff\xfe not utf-8", b'{"x": 1}'])


class Sent(NamedTuple):
    channel: str
    key: str
    value: bytes
    way: str  # "topic" or "webhook"
    bad: bool


def plan(rng: random.Random) -> list[Sent]:
    """Records to send, in sending order."""
    shapes = templates()
    assert {c for c, _, _ in shapes} == set(ADAPTERS), "every channel needs a usable sample"
    records: list[Sent] = []
    valid: list[Sent] = []
    for n in range(TOTAL):
        roll = rng.random()
        if roll < DUPLICATE_SHARE and valid:
            records.append(rng.choice(valid))  # the same record again, the same way in
            continue
        channel, text, old_id = shapes[n % len(shapes)]
        new_id, body = variant(channel, text, old_id, 10_000_000 + n)
        key = f"{channel}:{new_id}"
        if roll < DUPLICATE_SHARE + MALFORMED_SHARE:
            # Malformed bytes cannot pass the webhook (it answers 400): they come by topic.
            records.append(Sent(channel, key, malformed(rng, body), "topic", bad=True))
            continue
        way = "webhook" if rng.random() < WEBHOOK_SHARE else "topic"
        valid.append(Sent(channel, key, body, way, bad=False))
        records.append(valid[-1])
    return records


@pytest.fixture
def ingestion(stack_info, broker, tmp_path):
    secrets = {channel: f"secret-{channel}" for channel in ADAPTERS}
    env = {"ORDERSTREAM_INGESTION_WEBHOOK_SECRETS": json.dumps(secrets)}
    with running_system(stack_info, broker, tmp_path, env, services=("ingestion",)) as system:
        yield system.conn, f"http://127.0.0.1:{system.port('ingestion')}", secrets


async def _send(conn, url, secrets, records) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=conn.bootstrap_list, acks="all",
                                linger_ms=5)
    await producer.start()
    limit = asyncio.Semaphore(8)
    async with aiohttp.ClientSession() as http:
        async def post(channel: str, body: bytes) -> None:
            async with limit, http.post(
                f"{url}/v1/channels/{channel}/orders", data=body,
                headers={signing.SIGNATURE_HEADER: signing.sign(body, secrets[channel]),
                         "Content-Type": "application/json"},
            ) as response:
                assert response.status == 202, await response.text()

        pending = []
        try:
            for r in records:
                if r.way == "webhook":
                    pending.append(asyncio.create_task(post(r.channel, r.value)))
                else:
                    await producer.send(conn.topic(ORDERS_RAW), value=r.value,
                                        key=r.key.encode(),
                                        headers=[("channel", r.channel.encode())])
            await producer.flush()
            await asyncio.gather(*pending)
        finally:
            await producer.stop()


async def test_ten_thousand_mixed_orders_each_end_as_one_order_or_one_dead_letter(ingestion):
    conn, url, secrets = ingestion
    records = plan(random.Random(20260120))
    valid_keys = {r.key for r in records if not r.bad}
    bad = [r for r in records if r.bad]

    started = time.monotonic()
    await _send(conn, url, secrets, records)
    sent = time.monotonic()

    submitted = await collect(conn, ORDERS_SUBMITTED,
                              lambda seen: len(seen) >= len(valid_keys), timeout=300)
    dead = await collect(conn, ORDERS_DLQ, lambda seen: len(seen) >= len(bad), timeout=120)
    done = time.monotonic()
    # Give duplicates a moment to (wrongly) show up before counting.
    await asyncio.sleep(2)
    submitted = await collect(conn, ORDERS_SUBMITTED,
                              lambda seen: len(seen) >= len(valid_keys), timeout=60)

    per_order = Counter(f"{s['channel']}:{s['channel_order_id']}" for s in submitted)
    ways = Counter(r.way for r in records)
    print(f"\n{len(records)} records ({ways['topic']} topic, {ways['webhook']} webhook, "
          f"{len(records) - len(set(records))} duplicates, {len(bad)} malformed) over "
          f"{len(ADAPTERS)} channels: {len(per_order)} accepted + {len(dead)} rejected = "
          f"{len(per_order) + len(dead)} of {len(valid_keys) + len(bad)} distinct inputs; "
          f"sent in {sent - started:.1f}s, all settled after {done - started:.1f}s "
          f"({len(records) / (done - started):.0f} records/s)")
    assert set(per_order) == valid_keys
    assert set(per_order.values()) == {1}, "a duplicate produced a second OrderSubmitted"
    assert len(dead) == len(bad)
    originals = Counter(r.value for r in bad)
    assert Counter(base64.b64decode(d["original_value"]) for d in dead) == originals
    assert all(d["reason"] and d["source_topic"] == conn.topic(ORDERS_RAW) for d in dead)
    assert Counter(d["reason"] for d in dead).keys() <= {
        "invalid_json", "invalid_event", "invalid_encoding", "missing_order_id",
        "unknown_status", "wrong_key"}

