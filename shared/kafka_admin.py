"""Creates the catalogue's topics before any producer or agent touches them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import TopicPartition
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
