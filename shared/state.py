"""A consume loop's keyed state: rows in the service's PostgreSQL schema, cached in memory
for the partitions this worker owns.

Why PostgreSQL and not a Faust table: Faust allows a table write only while iterating a
stream event by event (``Cannot modify table key from outside of stream iteration``), and a
batched loop decides many records before it writes anything. The rows are read once per
batch for the keys the cache lacks (one ``SELECT ... = ANY``) and written once per batch
(one ``INSERT ... SELECT FROM unnest ... ON CONFLICT DO UPDATE``), after the batch's outputs
are acknowledged: a crash before that re-decides the batch from the older state and sends
the same outputs again (same event ids), never fewer. A worker starts without a restore
phase: the state is read as keys come.

The cache is per partition: losing a partition drops its entries, so a key is always read
again from the database after another worker may have changed it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from itertools import islice
from typing import Generic, TypeVar

import asyncpg

V = TypeVar("V")

#: cached "the database has no row for this key"
_ABSENT = object()


class PartitionView(MutableMapping[str, V]):
    """The state as one partition's records see it (what a handler is given as its table)."""

    def __init__(self, state: KeyedState[V], partition: int) -> None:
        self._state = state
        self._partition = partition

    def __getitem__(self, key: str) -> V:
        value = self._state._cache.get(key, (0, _ABSENT))[1]
        if value is _ABSENT:
            raise KeyError(key)
        return value  # type: ignore[return-value]

    def __setitem__(self, key: str, value: V) -> None:
        self._state._set(self._partition, key, value)

    def __delitem__(self, key: str) -> None:
        raise TypeError("state keys are never deleted by a handler")

    def __iter__(self) -> Iterator[str]:
        return (k for k, (p, v) in self._state._cache.items()
                if p == self._partition and v is not _ABSENT)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class KeyedState(Generic[V]):
    """Values by key, saved in table ``stream_state`` under ``name``."""

    def __init__(self, name: str, *, encode: Callable[[V], str],
                 decode: Callable[[str], V], max_cached: int = 100_000) -> None:
        self.name = name
        self.encode = encode
        self.decode = decode
        self.max_cached = max_cached
        #: key -> (partition, value or _ABSENT), oldest first
        self._cache: dict[str, tuple[int, object]] = {}
        self._dirty: dict[str, int] = {}  # keys changed since the last save -> partition
        self._views: dict[int, PartitionView[V]] = {}

    def view(self, partition: int) -> PartitionView[V]:
        view = self._views.get(partition)
        if view is None:
            view = self._views[partition] = PartitionView(self, partition)
        return view

    def _set(self, partition: int, key: str, value: V) -> None:
        self._cache.pop(key, None)  # re-inserted last: the newest are evicted last
        self._cache[key] = (partition, value)
        self._dirty[key] = partition

    @property
    def dirty(self) -> int:
        return len(self._dirty)

    async def load(self, con: asyncpg.Connection | asyncpg.Pool,
                   wanted: Iterable[tuple[int, str]]) -> int:
        """Read the (partition, key) pairs the cache lacks, in one query; returns how many
        were read."""
        missing: dict[str, int] = {}
        for partition, key in wanted:
            if key not in self._cache:
                missing[key] = partition
        if not missing:
            return 0
        rows = await con.fetch(
            "SELECT key, value FROM stream_state WHERE name = $1 AND key = ANY($2::text[])",
            self.name, list(missing))
        found = {r["key"]: r["value"] for r in rows}
        for key, partition in missing.items():
            raw = found.get(key)
            self._cache[key] = (partition, _ABSENT if raw is None else self.decode(raw))
        return len(missing)

    async def save(self, con: asyncpg.Connection | asyncpg.Pool) -> int:
        """Write every key changed since the last save, in one statement; returns how many."""
        if not self._dirty:
            return 0
        keys = list(self._dirty)
        values = [self.encode(self._cache[k][1]) for k in keys]  # type: ignore[arg-type]
        await con.execute(
            "INSERT INTO stream_state (name, key, value, updated_at)"
            " SELECT $1, k, v::jsonb, now() FROM unnest($2::text[], $3::text[]) AS u(k, v)"
            " ON CONFLICT (name, key) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at",
            self.name, keys, values)
        self._dirty.clear()
        self._evict()
        return len(keys)

    def discard_unsaved(self) -> None:
        """Forget what was decided since the last save (a batch that could not be written):
        those keys are read from the database again."""
        for key in self._dirty:
            self._cache.pop(key, None)
        self._dirty.clear()

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget the cached keys of ``partitions`` (revoked: another worker owns them)."""
        gone = set(partitions)
        for key in [k for k, (p, _) in self._cache.items() if p in gone]:
            del self._cache[key]
        for key in [k for k, p in self._dirty.items() if p in gone]:
            del self._dirty[key]

    def _evict(self) -> None:
        extra = len(self._cache) - self.max_cached
        if extra <= 0:
            return
        for key in list(islice(self._cache, extra)):
            del self._cache[key]
