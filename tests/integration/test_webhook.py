"""POST /v1/channels/{channel}/orders: signed orders land on orders.raw before the 202.

The broker tests run one real ingestion process on the session's broker and database,
isolated by a topic prefix of its own (as tests/e2e/conftest.py does for all services). The
tests of :class:`Webhook` on its own pin down the acknowledgement contract with a topic
whose delivery the test controls.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import RecordMetadata
from prometheus_client import CollectorRegistry
from support import collect, running_system

from services.ingestion.api import Webhook, requests_counter
from services.stack import StackInfo
from shared.settings import ConnectionSettings
from shared.signing import SIGNATURE_HEADER, sign
from shared.topics import ORDERS_RAW, ORDERS_SUBMITTED

SECRET = "s3cret"
MAX_BYTES = 4096


def on_broker(test: Any) -> Any:
    """Marks a test that needs the session's broker and PostgreSQL."""
    return pytest.mark.kafka(pytest.mark.postgres(test))


def web_order(order_id: str | None, **extra: Any) -> bytes:
    payload = {
        "order_id": order_id,
        "placed_at": "2026-11-24T10:15:00",
        "currency": "CNY",
        "customer": {"id": "c-42", "nickname": "小王", "email": "wang@example.com"},
        "lines": [{"sku": "SKU-TEA-01", "quantity": 2, "unit_price": "39.90"}],
        "paid": False,
        **extra,
    }
    if order_id is None:
        del payload["order_id"]
    return json.dumps(payload, ensure_ascii=False).encode()


def unique(prefix: str = "W") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --- one ingestion process --------------------------------------------------------------


@dataclass(frozen=True)
class Ingestion:
    conn: ConnectionSettings
    url: str

    def orders_url(self, channel: str = "web") -> str:
        return f"{self.url}/v1/channels/{channel}/orders"


@pytest.fixture(scope="module")
def ingestion(stack_info: StackInfo, broker,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingestion]:
    env = {"ORDERSTREAM_INGESTION_WEBHOOK_SECRETS": json.dumps({"web": SECRET}),
           "ORDERSTREAM_INGESTION_WEBHOOK_MAX_BYTES": str(MAX_BYTES)}
    with running_system(stack_info, broker, tmp_path_factory.mktemp("webhook"), env,
                        services=("ingestion",)) as system:
        yield Ingestion(system.conn, f"http://127.0.0.1:{system.port('ingestion')}")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, body: bytes,
               signature: str | None = None, **headers: str) -> tuple[int, dict]:
    sent = {"Content-Type": "application/json", **headers}
    if signature is not None:
        sent[SIGNATURE_HEADER] = signature
    async with http.post(url, data=body, headers=sent) as response:
        return response.status, await response.json(content_type=None)


async def raw_records(conn: ConnectionSettings) -> list[Any]:
    """Everything on orders.raw up to its end offsets as of now: no waiting for more."""
    topic = conn.topic(ORDERS_RAW)
    consumer = AIOKafkaConsumer(bootstrap_servers=conn.bootstrap_list, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(conn.topic_partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: list[Any] = []
        deadline = time.monotonic() + 30
        pending = {tp for tp in partitions if await consumer.position(tp) < end[tp]}
        while pending:
            assert time.monotonic() < deadline, f"could not read {topic} up to {end}"
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for tp, messages in batch.items():
                records.extend(m for m in messages if m.offset < end[tp])
            pending = {tp for tp in pending if await consumer.position(tp) < end[tp]}
        return records
    finally:
        await consumer.stop()


def keys(records: list[Any]) -> set[str]:
    return {r.key.decode() for r in records if r.key is not None}


# --- through the real service -----------------------------------------------------------


@on_broker
async def test_signed_order_is_on_orders_raw_before_the_202(ingestion: Ingestion, http):
    order_id = unique()
    body = web_order(order_id)

    status, reply = await post(http, ingestion.orders_url(), body, sign(body, SECRET))

    assert (status, reply) == (202, {"status": "accepted", "key": f"web:{order_id}"})
    # No polling: the 202 came after the broker's ack, so the record is below the end
    # offsets read right now.
    key = f"web:{order_id}".encode()
    [record] = [r for r in await raw_records(ingestion.conn) if r.key == key]
    assert record.value == body  # the exact bytes, not re-serialised
    assert dict(record.headers) == {"channel": b"web", "source": b"webhook"}
    submitted = await collect(ingestion.conn, ORDERS_SUBMITTED, lambda seen: any(
        s["channel_order_id"] == order_id for s in seen))
    [order] = [s for s in submitted if s["channel_order_id"] == order_id]
    assert order["event_type"] == "OrderSubmitted"
    assert order["channel"] == "web"
    assert order["placed_at"].startswith("2026-11-24T02:15:00")  # Asia/Shanghai, read as UTC


@on_broker
async def test_bad_or_missing_signature_is_refused_and_nothing_is_sent(ingestion, http):
    tampered, wrong_secret, unsigned = unique(), unique(), unique()
    body = web_order(tampered)
    cases = [
        (web_order(tampered), sign(body.replace(b"SKU-TEA-01", b"SKU-TEA-99"), SECRET)),
        (web_order(wrong_secret), sign(web_order(wrong_secret), "not-the-secret")),
        (web_order(unsigned), None),
        (web_order(unsigned), "garbage!"),
    ]
    for sent, signature in cases:
        status, reply = await post(http, ingestion.orders_url(), sent, signature)
        assert status == 401, reply
        assert reply["reason"] in {"bad_signature", "missing_signature"}
        assert reply["error"]
    # A good one afterwards, so "nothing" is not just "not yet".
    marker = unique()
    status, _ = await post(http, ingestion.orders_url(), web_order(marker),
                           sign(web_order(marker), SECRET))
    assert status == 202
    seen = keys(await raw_records(ingestion.conn))
    assert f"web:{marker}" in seen
    assert not seen & {f"web:{tampered}", f"web:{wrong_secret}", f"web:{unsigned}"}


@on_broker
async def test_unknown_channel_is_404(ingestion, http):
    body = web_order(unique())
    status, reply = await post(http, ingestion.orders_url("no-such-shop"), body,
                               sign(body, SECRET))
    assert status == 404
    assert reply["reason"] == "unknown_channel"


@on_broker
async def test_oversized_body_is_413(ingestion, http):
    order_id = unique()
    body = web_order(order_id, note="x" * MAX_BYTES)
    status, reply = await post(http, ingestion.orders_url(), body, sign(body, SECRET))
    assert (status, reply["reason"]) == (413, "too_large")

    async def chunks():  # no Content-Length: the bytes actually read are counted
        for start in range(0, len(body), 1000):
            yield body[start:start + 1000]

    async with http.post(ingestion.orders_url(), data=chunks(),
                         headers={SIGNATURE_HEADER: sign(body, SECRET)}) as response:
        assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert response.status == 413
        assert (await response.json())["reason"] == "too_large"
    assert f"web:{order_id}" not in keys(await raw_records(ingestion.conn))


@on_broker
async def test_declared_length_over_the_limit_is_refused_without_reading(ingestion):
    # Only the headers are sent: the answer must come from Content-Length alone.
    host, port = ingestion.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"POST /v1/channels/web/orders HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {100 * MAX_BYTES}\r\n"
            f"{SIGNATURE_HEADER}: {sign(b'', SECRET)}\r\n\r\n".encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    assert status_line.split()[1] == b"413"


@on_broker
async def test_malformed_json_is_400_invalid_json(ingestion, http):
    body = b'{"order_id": "W-1", "lines": ['
    status, reply = await post(http, ingestion.orders_url(), body, sign(body, SECRET))
    assert status == 400
    assert reply["reason"] == "invalid_json"
    assert "not JSON" in reply["error"]


@on_broker
async def test_order_without_id_is_400(ingestion, http):
    body = web_order(None)
    status, reply = await post(http, ingestion.orders_url(), body, sign(body, SECRET))
    assert status == 400
    assert reply["reason"] == "missing_order_id"


@on_broker
async def test_requests_are_counted_by_channel_and_code(ingestion, http):
    body = web_order(unique())
    assert (await post(http, ingestion.orders_url(), body, "nope"))[0] == 401
    async with http.get(f"{ingestion.url}/metrics") as response:
        text = await response.text()
    assert 'orderstream_webhook_requests_total{channel="web",code="401"}' in text


# --- the acknowledgement contract, with a delivery the test controls --------------------


class FakeTopic:
    """Faust's Topic.send contract: returns the producer's delivery future once queued."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.delivery: asyncio.Future = asyncio.get_running_loop().create_future()

    async def send(self, **kwargs: Any) -> asyncio.Future:
        self.sent.append(kwargs)
        return self.delivery


class FakeContent:
    def __init__(self, body: bytes) -> None:
        self.body = body

    async def read(self, n: int = -1) -> bytes:
        n = len(self.body) if n < 0 else n
        chunk, self.body = self.body[:n], self.body[n:]
        return chunk


class FakeRequest:
    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        self.headers = headers
        self.content_length = len(body)
        self.content = FakeContent(body)


def webhook(topic: FakeTopic, **kwargs: Any) -> Webhook:
    return Webhook(topic=topic, secrets={"web": SECRET}, max_bytes=MAX_BYTES,
                   requests=requests_counter(CollectorRegistry()), **kwargs)


def signed(body: bytes) -> FakeRequest:
    return FakeRequest(body, {SIGNATURE_HEADER: sign(body, SECRET)})


async def test_no_answer_until_the_broker_acknowledges():
    topic = FakeTopic()
    order_id = unique()
    answer = asyncio.ensure_future(webhook(topic).handle("web", signed(web_order(order_id))))
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(topic.sent) == 1  # queued in the producer...
    assert not answer.done()  # ...but not acknowledged: no answer yet
    topic.delivery.set_result(RecordMetadata(ORDERS_RAW, 0, None, 7, -1, 0, 0))
    reply = await asyncio.wait_for(answer, 5)
    assert (reply.status, reply.body["key"]) == (202, f"web:{order_id}")
    assert topic.sent[0]["force"] is True


async def test_failed_delivery_is_503_so_the_channel_retries():
    topic = FakeTopic()
    topic.delivery.set_exception(KafkaTimeoutError("no leader for orders.raw"))
    reply = await webhook(topic).handle("web", signed(web_order(unique())))
    assert reply.status == 503
    assert reply.body["reason"] == "broker_unavailable"
    assert "KafkaTimeoutError" in reply.body["error"]


async def test_no_acknowledgement_in_time_is_503():
    topic = FakeTopic()  # never resolved
    reply = await webhook(topic, ack_timeout=0.2).handle("web", signed(web_order(unique())))
    assert reply.status == 503
    assert not topic.delivery.cancelled()  # the wait was abandoned, not the delivery


async def test_channel_without_a_secret_is_refused():
    topic = FakeTopic()
    hook = Webhook(topic=topic, secrets={"web": ""}, max_bytes=MAX_BYTES,
                   requests=requests_counter(CollectorRegistry()))
    reply = await hook.handle("web", FakeRequest(web_order(unique()), {}))
    assert (reply.status, reply.body["reason"]) == (401, "channel_not_configured")
    assert topic.sent == []
