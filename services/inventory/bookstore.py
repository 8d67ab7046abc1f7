"""Where a partition's book is kept between restarts, chosen by ``book_store``.

- ``memory``: nowhere; a worker that gets a partition reads its whole changelog.
- ``rocksdb``: a local RocksDB (the ``rocksdict`` wheel) per partition holding the latest
  changelog value of every key and the changelog offset it is complete up to; a restart
  loads it and reads only the changelog written after that offset.

The local copy only ever holds records the broker has acknowledged, and reading the
changelog from its offset to the end overwrites anything older, so a stale or lost local
copy costs time, never correctness.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

OFFSET_KEY = b"\x00offset"  # JSON keys never start with a NUL byte


class RocksBookStore:
    """The local copy of one partition's changelog."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(directory), options=Options(raw_mode=True))

    def load(self) -> tuple[list[tuple[bytes, bytes]], int | None]:
        """Every stored (key, value), and the changelog offset to read on from."""
        offset = self._db.get(OFFSET_KEY)
        records = [(k, v) for k, v in self._db.items() if k != OFFSET_KEY]
        return records, int(offset) if offset is not None else None

    def save(self, records: Iterable[tuple[bytes, bytes | None]], next_offset: int) -> None:
        """Apply acknowledged changelog records and the offset after them, atomically."""
        batch = WriteBatch(raw_mode=True)
        for key, value in records:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(OFFSET_KEY, str(next_offset).encode())
        self._db.write(batch)

    def reset(self) -> None:
        """Forget everything (the changelog was recreated or truncated)."""
        self._db.close()
        Rdict.destroy(str(self.directory))
        shutil.rmtree(self.directory, ignore_errors=True)
        self._db = Rdict(str(self.directory), options=Options(raw_mode=True))

    def close(self) -> None:
        self._db.close()
