"""The hot path's murmur2 must give the partition every other producer gives a key."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from shared.sender import murmur2


@given(st.binary(max_size=200))
def test_murmur2_equals_aiokafka(data: bytes) -> None:
    assert murmur2(data) == aiokafka_murmur2(data)


@given(st.text(min_size=1, max_size=64), st.integers(1, 64))
def test_order_ids_land_where_the_default_partitioner_puts_them(order_id: str,
                                                                 count: int) -> None:
    key = order_id.encode()
    partitions = list(range(count))
    assert partitions[(murmur2(key) & 0x7FFFFFFF) % count] == DefaultPartitioner()(
        key, partitions, partitions)
