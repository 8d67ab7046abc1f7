"""Send a batch's records as producer batches and await every acknowledgement together."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

#: keys whose partition is remembered; the cache starts over beyond that
KEY_CACHE = 200_000


@dataclass
class Out:
    """One record to send: catalogue topic, key and value bytes, and optionally the
    partition (default: the one Kafka's default partitioner gives the key)."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None


class BatchSender:
    """Builds one producer batch chain per partition, in order, sends them all, then awaits
    the broker's acknowledgements together: one round trip per partition and batch instead
    of one awaited send per record."""

    def __init__(self, producer: AIOKafkaProducer, full_name: Callable[[str], str]) -> None:
        self.producer = producer
        self.full_name = full_name
        self._partitions: dict[str, list[int]] = {}
        #: (full topic name, key) -> partition: most outputs of a batch share keys (an
        #: order's status changes, a hot SKU's commands), and murmur2 in Python is not free
        self._by_key: dict[tuple[str, bytes], int] = {}
        self._random = DefaultPartitioner()

    async def send_all(self, out: Sequence[Out]) -> dict[tuple[str, int], int]:
        """Send every record and return, per (full topic name, partition), the next offset
        once the broker has acknowledged all of them."""
        producer = self.producer
        builders: dict[tuple[str, int], list[Any]] = {}
        by_key = self._by_key
        if len(by_key) > KEY_CACHE:
            by_key.clear()
        names: dict[str, str] = {}
        for o in out:
            name = names.get(o.topic)
            if name is None:
                name = names[o.topic] = self.full_name(o.topic)
            partition = o.partition
            if partition is None:
                if o.key is None or (partition := by_key.get((name, o.key))) is None:
                    partition = await self.partition_of(name, o.key)
            chain = builders.setdefault((name, partition), [])
            if not chain or chain[-1].append(key=o.key, value=o.value, timestamp=None) is None:
                chain.append(producer.create_batch())
                if chain[-1].append(key=o.key, value=o.value, timestamp=None) is None:
                    raise ValueError(f"a record for {name} is larger than a producer batch")
        sent = [(where, batch.record_count(),
                 await producer.send_batch(batch, where[0], partition=where[1]))
                for where, chain in builders.items() for batch in chain]
        metadata = await asyncio.gather(*(future for _, _, future in sent))
        next_offsets: dict[tuple[str, int], int] = {}
        for (where, count, _), meta in zip(sent, metadata, strict=True):
            next_offsets[where] = max(next_offsets.get(where, 0), meta.offset + count)
        return next_offsets

    async def partition_of(self, topic: str, key: bytes | None) -> int:
        """The partition the default (murmur2) partitioner gives ``key`` on full topic name
        ``topic``: the one every other producer of the topic, Faust's included, would pick."""
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(
                await self.producer.partitions_for(topic))
        if key is None:
            return self._random(key, partitions, partitions)  # random, as Kafka's
        partition = self._by_key[(topic, key)] = partitions[
            (murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        return partition


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the default partitioner's hash), equal to
    ``aiokafka.partitioner.murmur2`` but reading four bytes at a time: it runs once per
    output record."""
    length = len(data)
    m = 0x5BD1E995
    h = 0x9747B28C ^ length
    for k in struct.unpack_from(f"<{length >> 2}I", data):
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        h = ((h * m) & 0xFFFFFFFF) ^ ((k * m) & 0xFFFFFFFF)
    tail, base = length & 3, length & ~3
    if tail >= 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h = ((h ^ data[base]) * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    return h ^ (h >> 15)
