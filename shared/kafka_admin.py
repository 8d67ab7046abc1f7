"""Creates the catalogue's topics before any producer or agent touches them."""

from __future__ import annotations

import asyncio
import logging

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


async def ensure_topics(conn: ConnectionSettings, *, timeout: float = 30.0) -> list[str]:
    """Create every missing catalogue topic; check existing ones. Returns names created."""
    admin = await _admin(conn, timeout)
    try:
        existing = set(await admin.list_topics())
        wanted = {conn.topic(name): spec for name, spec in TOPICS.items()}
        missing = [
            NewTopic(
                name=full,
                num_partitions=conn.topic_partitions,
                replication_factor=conn.topic_replication,
                topic_configs={"cleanup.policy": "compact"} if spec.compacted else {},
            )
            for full, spec in wanted.items()
            if full not in existing
        ]
        created: list[str] = []
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                log.info("event=topics_raced detail=another process created them")
            created = [t.name for t in missing]
            log.info("event=topics_created topics=%s", ",".join(created))
        await _check_partitions(admin, conn, list(wanted))
        return created
    finally:
        await admin.close()


async def _check_partitions(
    admin: AIOKafkaAdminClient, conn: ConnectionSettings, names: list[str]
) -> None:
    described = await admin.describe_topics(names)
    for topic in described:
        name = topic["topic"]
        count = len(topic.get("partitions") or [])
        if count and count != conn.topic_partitions:
            raise TopicLayoutError(
                f"topic {name} has {count} partitions, the catalogue wants "
                f"{conn.topic_partitions}: keyed topics must co-partition; recreate it or set "
                f"ORDERSTREAM_TOPIC_PARTITIONS={count}"
            )
