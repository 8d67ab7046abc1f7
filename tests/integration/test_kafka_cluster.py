"""services.kafka_cluster runs real Apache Kafka: one node, and three that keep accepting
acks=all writes while a node is stopped cleanly or killed, and take it back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services import kafka_cluster
from services.kafka_cluster import ClusterInfo, KafkaClusterError

pytestmark = [pytest.mark.kafka, pytest.mark.apache_kafka]

UNKNOWN_TOPIC_OR_PARTITION = 3


def _gone(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _pids(state_dir: Path) -> dict[int, int | None]:
    return {node: entry["pid"] for node, entry in kafka_cluster.status(state_dir)["nodes"].items()}


async def _admin_call(bootstrap: str, call: Callable[[AIOKafkaAdminClient], Awaitable[Any]]) -> Any:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        return await call(admin)
    finally:
        await admin.close()


async def _create_topic(bootstrap: str, topic: NewTopic) -> None:
    """Create ``topic`` and wait until every partition has a leader and all replicas in sync
    (the metadata reaches each broker a moment after the controller answered)."""
    response = await _admin_call(bootstrap, lambda admin: admin.create_topics([topic]))
    assert [e["error_code"] for e in response.to_object()["topic_errors"]] == [0]

    async def in_sync() -> bool:
        described = await _describe(bootstrap, topic.name)
        partitions = described["partitions"]
        return len(partitions) == topic.num_partitions and all(
            p["leader"] >= 0 and len(p["isr"]) == topic.replication_factor for p in partitions
        )

    await _eventually(in_sync)


async def _describe(bootstrap: str, topic: str) -> dict[str, Any]:
    (described,) = await _admin_call(bootstrap, lambda admin: admin.describe_topics([topic]))
    return described


async def _brokers(bootstrap: str) -> set[int]:
    cluster = await _admin_call(bootstrap, lambda admin: admin.describe_cluster())
    return {broker["node_id"] for broker in cluster["brokers"]}


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """acks=all: every in-sync replica has each record when this returns."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
        request_timeout_ms=30_000, retry_backoff_ms=200,
    )
    await producer.start()
    try:
        sent = [await producer.send(topic, value) for value in values]
        await asyncio.wait_for(asyncio.gather(*sent), timeout=60)
    finally:
        await producer.stop()


async def _consume_all(bootstrap: str, topic: str) -> list[bytes]:
    """Every record of ``topic``, read from the beginning up to the end offsets of now."""
    described = await _describe(bootstrap, topic)
    partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        end = await consumer.end_offsets(partitions)
        seen: list[bytes] = []
        deadline = time.monotonic() + 60
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            assert time.monotonic() < deadline, f"read {len(seen)} records of {topic} in 60s"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                seen.extend(record.value for record in records)
        return seen
    finally:
        await consumer.stop()


async def _eventually(check: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, f"not met within {timeout}s (last: {result!r})"
        await asyncio.sleep(0.2)
    return result


# --- one node -------------------------------------------------------------------------------


def test_one_node_serves_reuses_and_goes_away(tmp_path: Path) -> None:
    state_dir = tmp_path / "kafka"
    try:
        info = kafka_cluster.up(1, state_dir)
        assert info.version == kafka_cluster.KAFKA_VERSION
        assert info.nodes == {1: int(info.bootstrap_servers.rpartition(":")[2])}
        assert info.state_dir == state_dir.resolve()

        asyncio.run(_create_topic(info.bootstrap_servers, NewTopic("smoke", 1, 1)))
        asyncio.run(_produce(info.bootstrap_servers, "smoke", [b"hello"]))
        assert asyncio.run(_consume_all(info.bootstrap_servers, "smoke")) == [b"hello"]
        # auto.create.topics.enable=false: asking for a topic does not create it
        missing = asyncio.run(_describe(info.bootstrap_servers, "never-created"))
        assert missing["error_code"] == UNKNOWN_TOPIC_OR_PARTITION

        current = kafka_cluster.status(state_dir)
        assert current["running"] and current["nodes"][1]["running"]
        assert current["bootstrap"] == info.bootstrap_servers
        pids = _pids(state_dir)
        assert pids[1] and not _gone(pids[1])
        # the broker logs through log4j2 into its size-capped file (an SLF4J binding is there)
        server_log = Path(current["nodes"][1]["log"])
        assert "Kafka Server started" in server_log.read_text()

        assert kafka_cluster.up(1, state_dir) == info  # reused, not restarted
        assert _pids(state_dir) == pids
        with pytest.raises(KafkaClusterError, match="1-node Kafka cluster is running"):
            kafka_cluster.up(3, state_dir)
    finally:
        kafka_cluster.down(state_dir)
    assert _gone(pids[1])
    after = kafka_cluster.status(state_dir)
    assert not after["running"] and after["nodes"] == {}
    assert not list(state_dir.glob("node-*"))  # config, data and logs removed
    kafka_cluster.down(state_dir)  # idempotent
    with pytest.raises(KafkaClusterError, match="no Kafka node 1"):
        kafka_cluster.start_node(1, state_dir)


# --- three nodes ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterInfo]:
    state_dir = tmp_path_factory.mktemp("kafka3")
    try:
        yield kafka_cluster.up(3, state_dir)
    finally:
        kafka_cluster.down(state_dir)
    assert not any(node["running"] for node in kafka_cluster.status(state_dir)["nodes"].values())


@pytest.fixture(scope="module")
def replicated(cluster: ClusterInfo) -> str:
    topic = "replicated"
    new = NewTopic(topic, 3, 3, topic_configs={"min.insync.replicas": "2"})
    asyncio.run(_create_topic(cluster.bootstrap_servers, new))
    return topic


def _isr(cluster: ClusterInfo, topic: str) -> list[set[int]]:
    described = asyncio.run(_describe(cluster.bootstrap_servers, topic))
    return [set(p["isr"]) for p in sorted(described["partitions"], key=lambda p: p["partition"])]


def test_three_nodes_replicate_every_partition(cluster: ClusterInfo, replicated: str) -> None:
    assert sorted(cluster.nodes) == [1, 2, 3]
    assert len(set(cluster.nodes.values())) == 3
    assert asyncio.run(_brokers(cluster.bootstrap_servers)) == {1, 2, 3}
    assert _isr(cluster, replicated) == [{1, 2, 3}] * 3
    asyncio.run(_produce(cluster.bootstrap_servers, replicated, [b"all-3"] * 10))


def test_acks_all_writes_go_on_while_a_node_is_stopped(
    cluster: ClusterInfo, replicated: str
) -> None:
    pid = _pids(cluster.state_dir)[2]
    try:
        kafka_cluster.stop_node(2, cluster.state_dir)
        assert _gone(pid)
        assert not kafka_cluster.status(cluster.state_dir)["nodes"][2]["running"]
        kafka_cluster.stop_node(2, cluster.state_dir)  # already stopped: a no-op

        # the controlled shutdown took node 2 out of every ISR: 2 left, min ISR 2 is met
        async def shrunk() -> bool:
            described = await _describe(cluster.bootstrap_servers, replicated)
            return all(set(p["isr"]) == {1, 3} for p in described["partitions"])

        asyncio.run(_eventually(shrunk))
        asyncio.run(_produce(cluster.bootstrap_servers, replicated, [b"without-2"] * 10))
    finally:
        kafka_cluster.start_node(2, cluster.state_dir)
    assert _pids(cluster.state_dir)[2] != pid
    assert asyncio.run(_brokers(cluster.bootstrap_servers)) == {1, 2, 3}
    assert _isr(cluster, replicated) == [{1, 2, 3}] * 3  # start_node waits for the ISR
    assert kafka_cluster.status(cluster.state_dir)["running"]


def test_a_killed_node_restarts_on_its_data(cluster: ClusterInfo, replicated: str) -> None:
    before = asyncio.run(_consume_all(cluster.bootstrap_servers, replicated))
    pid = _pids(cluster.state_dir)[3]
    try:
        kafka_cluster.stop_node(3, cluster.state_dir, kill=True)
        assert _gone(pid)
        # the leader waits for node 3 until the controller fences it; then ISR 2 takes writes
        asyncio.run(_produce(cluster.bootstrap_servers, replicated, [b"without-3"] * 10))
    finally:
        kafka_cluster.start_node(3, cluster.state_dir)
    assert asyncio.run(_brokers(f"127.0.0.1:{cluster.nodes[3]}")) == {1, 2, 3}
    assert _isr(cluster, replicated) == [{1, 2, 3}] * 3
    records = asyncio.run(_consume_all(cluster.bootstrap_servers, replicated))
    assert sorted(records) == sorted([*before, *[b"without-3"] * 10])
    assert kafka_cluster.up(3, cluster.state_dir) == cluster  # all running: reused as is
