"""The Kafka clients a batched loop runs with, and the process tuning it learnt."""

from __future__ import annotations

import gc
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError

from shared.settings import ConnectionSettings

log = logging.getLogger(__name__)


def producer_for(conn: ConnectionSettings, *, idempotent: bool) -> AIOKafkaProducer:
    """Acks from every in-sync replica, a short linger (a batch's records go out as a few
    requests) and large batches; idempotence as the broker allows (``Runtime.prepare``)."""
    return AIOKafkaProducer(
        bootstrap_servers=conn.bootstrap_list, acks="all", enable_idempotence=idempotent,
        linger_ms=5, max_batch_size=1024 * 1024, max_request_size=4 * 1024 * 1024)


def consumer_for(conn: ConnectionSettings, group: str) -> AIOKafkaConsumer:
    """A group member that commits by hand, after a batch's effects, and is assigned
    partitions by range: partition *p* of every co-partitioned input has one owner."""
    return AIOKafkaConsumer(
        bootstrap_servers=conn.bootstrap_list, group_id=group,
        enable_auto_commit=False, auto_offset_reset="earliest",
        partition_assignment_strategy=(RangePartitionAssignor,),
        session_timeout_ms=int(conn.kafka_session_timeout * 1000),
        heartbeat_interval_ms=int(conn.kafka_heartbeat_interval * 1000),
        rebalance_timeout_ms=int(conn.kafka_rebalance_timeout * 1000),
        fetch_max_wait_ms=conn.kafka_fetch_max_wait_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )


def tune_gc() -> None:
    """A batch allocates many short-lived objects (models, dicts, records); with the default
    thresholds the cyclic collector runs every 700 allocations and rescans every long-lived
    object (books, cached state) each time. Start-up objects are frozen out of its way, and
    it runs less often: measured on the hot-SKU benchmark (bench/README.md), then raised
    from (50,000, 20, 100) on the flow benchmark: status spent about a tenth of its time in
    young collections (3 interleaved rounds, burst 1,819 -> 1,949 orders/s on average)."""
    gc.freeze()
    gc.set_threshold(200_000, 50, 100)


async def commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int],
                 service: str) -> None:
    """Commit ``offsets`` once their batch's effects are durable. A commit refused because
    the group rebalanced meanwhile is only logged: the partition's new owner reads those
    records again, and they change nothing there but re-send the same outputs."""
    if not offsets:
        return
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, IllegalStateError) as exc:
        log.warning("event=commit_skipped service=%s reason=%r", service, exc)
