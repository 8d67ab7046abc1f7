"""asyncpg pool helper: one lazily created pool per service, pinned to its schema and UTC."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg

log = logging.getLogger(__name__)


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as column arrays, for ``INSERT ... SELECT FROM unnest($1::t[], ...)``: one
    statement for a whole batch, where ``executemany`` runs the statement once per row."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Database:
    """A pool whose connections use the service's schema and the UTC session time zone.

    The pool is created on first use inside the running event loop (never at import), and
    closed by :meth:`close` when the service stops.
    """

    def __init__(self, url: str, schema: str, *, max_size: int = 5) -> None:
        self.url = url
        self.schema = schema
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self.url,
                        min_size=1,
                        max_size=self.max_size,
                        # Startup parameters, not SET: the pool's RESET ALL on release
                        # returns to these, where a SET would be wiped after first use.
                        server_settings={"search_path": quote_ident(self.schema),
                                         "TimeZone": "UTC"},
                        command_timeout=30,
                    )
                    log.info("event=db_pool_started schema=%s", self.schema)
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
