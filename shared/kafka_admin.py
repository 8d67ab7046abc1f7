"""Creates the catalogue's topics before any producer or agent touches them, lists a
topic's partitions, and reads partitions to their end."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from shared.settings import ConnectionSettings
from shared.topics import TOPICS

log = logging.getLogger(__name__)


class TopicLayoutError(RuntimeError):
    """An existing topic has a layout the catalogue does not allow (e.g. partition count)."""


async def _admin(conn: ConnectionSettings, timeout: float) -> AIOKafkaAdminClient:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=conn.bootstrap_list, request_timeout_ms=10_000
        )
        try:
            await admin.start()
            return admin
        except KafkaConnectionError:
            await admin.close()
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def ensure_topics(
    conn: ConnectionSettings, *, changelogs: Iterable[str] = (), timeout: float = 30.0
) -> list[str]:
    """Create every missing catalogue topic, and the given Faust table changelog topics
    (full names, compacted); check existing ones; wait until every partition has a leader.
    Returns the names created."""
    wanted = {conn.topic(name): spec.compacted for name, spec in TOPICS.items()}
    wanted |= dict.fromkeys(changelogs, True)
    admin = await _admin(conn, timeout)
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=name,
                num_partitions=conn.topic_partitions,
                replication_factor=conn.topic_replication,
                topic_configs={"cleanup.policy": "compact"} if compacted else {},
            )
            for name, compacted in wanted.items()
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                log.info("event=topics_raced detail=another process created them")
            log.info("event=topics_created topics=%s", ",".join(t.name for t in missing))
        await _await_layout(admin, conn, list(wanted), timeout)
        return [t.name for t in missing]
    finally:
        await admin.close()


async def _await_layout(
    admin: AIOKafkaAdminClient, conn: ConnectionSettings, names: list[str], timeout: float
) -> None:
    """Fail on a wrong partition count; wait while a new topic's partitions have no leader
    yet (Apache Kafka creates them asynchronously; Faust refuses a table whose changelog it
    sees with 0 partitions)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        pending = []
        for topic in await admin.describe_topics(names):
            partitions = topic.get("partitions") or []
            if len(partitions) > conn.topic_partitions:
                raise TopicLayoutError(
                    f"topic {topic['topic']} has {len(partitions)} partitions, the catalogue "
                    f"wants {conn.topic_partitions}: keyed topics must co-partition; recreate "
                    f"it or set ORDERSTREAM_TOPIC_PARTITIONS={len(partitions)}"
                )
            if len(partitions) < conn.topic_partitions or any(
                p.get("leader", -1) < 0 for p in partitions
            ):
                pending.append(topic["topic"])
        if not pending:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TopicLayoutError(f"partitions without a leader after {timeout:.0f}s: {pending}")
        await asyncio.sleep(0.2)


async def partitions_of(conn: ConnectionSettings, topic: str, *,
                        timeout: float = 30.0) -> list[TopicPartition]:
    """The partitions of ``topic`` (full name), from the cluster's metadata. A consumer's
    own metadata may not list a topic created a moment ago by another client, and
    ``AIOKafkaConsumer.topics()`` does not refresh it; the admin client asks the broker."""
    admin = await _admin(conn, timeout)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            (described,) = await admin.describe_topics([topic])
            partitions = described.get("partitions") or []
            if partitions:
                return [TopicPartition(topic, p["partition"])
                        for p in sorted(partitions, key=lambda p: p["partition"])]
            if asyncio.get_running_loop().time() > deadline:
                raise TopicLayoutError(f"topic {topic} does not exist after {timeout:.0f}s")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


class StartBeforeBeginning(RuntimeError):
    """A start offset lies before the partition's first offset: records in between are
    gone (the log was truncated or the topic recreated)."""


#: Empty fetches tolerated past the end offsets before a read counts as complete.
PAST_END_FETCHES = 10


async def read_to_end(conn: ConnectionSettings, partitions: list[TopicPartition],
                      on_record: Callable[[ConsumerRecord], None], *,
                      start: dict[TopicPartition, int] | None = None,
                      timeout: float = 60.0) -> dict[TopicPartition, int]:
    """Feed ``on_record`` every record of ``partitions`` from their beginning (or from
    ``start``) to their end, and return the positions reached.

    Reads to the end offsets seen at start, then on until a fetch brings nothing more (at
    most :data:`PAST_END_FETCHES` fetches): the embedded broker reports a partition's end
    as the last record *batch*'s base offset + 1, short of the records after the first in
    that batch. Records that arrive meanwhile are newer, so reading them is safe."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=conn.bootstrap_list, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", fetch_max_wait_ms=conn.kafka_fetch_max_wait_ms,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        if start:
            first = await consumer.beginning_offsets(list(start))
            for tp, offset in start.items():
                if offset < first[tp]:
                    raise StartBeforeBeginning(f"{tp}: offset {offset} < first {first[tp]}")
                consumer.seek(tp, offset)
        end = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        past_end = 0
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
            for records in batch.values():
                for record in records:
                    on_record(record)
            positions = {tp: await consumer.position(tp) for tp in partitions}
            if all(positions[tp] >= end[tp] for tp in partitions):
                if not batch or past_end >= PAST_END_FETCHES:
                    return positions
                past_end += 1
            elif time.monotonic() > deadline:
                raise TimeoutError(f"{partitions}: not read to the end within {timeout:.0f}s")
    finally:
        await consumer.stop()
