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


class Statement:
    """Several writes sent as one statement: each part is a data-modifying ``WITH`` query of
    one ``WITH ... SELECT``, so a batch's writes cost one round trip and are atomic (one
    statement, one implicit transaction) without BEGIN and COMMIT round trips of their own.
    The parts run on one snapshot: no part may read or write a row that another one writes.
    ``{}`` in a part's SQL stands for its next parameter."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.args: list[Any] = []

    def add(self, sql: str, *args: Any) -> None:
        base = len(self.args)
        self.parts.append(sql.format(*(f"${base + i}" for i in range(1, len(args) + 1))))
        self.args.extend(args)

    @property
    def sql(self) -> str:
        if len(self.parts) == 1:
            return self.parts[0]
        return ("WITH " + ", ".join(f"w{i} AS ({part})" for i, part in enumerate(self.parts))
                + " SELECT 1")

    async def execute(self, con: asyncpg.Connection) -> None:
        if self.parts:
            await con.execute(self.sql, *self.args)


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
        self._own: set[asyncpg.Connection] = set()  # connect(): closed by close() too

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
                        server_settings=self._settings(),
                        command_timeout=30,
                    )
                    log.info("event=db_pool_started schema=%s", self.schema)
        return self._pool

    def _settings(self) -> dict[str, str]:
        return {"search_path": quote_ident(self.schema), "TimeZone": "UTC"}

    async def connect(self) -> asyncpg.Connection:
        """A connection of its own, outside the pool, with the pool's settings: for a consume
        loop that holds one for its life. Returning a pooled one per batch costs a session
        reset and its round trip each time, and a held pooled one would keep the pool's
        close() waiting at shutdown."""
        con = await asyncpg.connect(self.url, server_settings=self._settings(),
                                    command_timeout=30)
        self._own.add(con)
        return con

    async def disconnect(self, con: asyncpg.Connection) -> None:
        """Close a connection from :meth:`connect` (at once if it is broken or busy)."""
        self._own.discard(con)
        try:
            await asyncio.wait_for(con.close(), timeout=2)
        except Exception:  # noqa: BLE001 - broken, or still busy: drop it
            con.terminate()

    async def close(self) -> None:
        for con in list(self._own):
            await self.disconnect(con)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
