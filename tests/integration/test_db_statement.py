"""A Statement on a real PostgreSQL: all its parts are written, or none."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from shared.db import Database, Statement
from shared.migrations import migrate

pytestmark = pytest.mark.postgres


@pytest.fixture
def schema() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


async def test_parts_write_together_and_a_failing_part_writes_nothing(
        stack_info, tmp_path, schema) -> None:
    (tmp_path / "0001_t.sql").write_text(
        "CREATE TABLE a (id text PRIMARY KEY);"
        " CREATE TABLE b (id text PRIMARY KEY, n int NOT NULL CHECK (n > 0));")
    await migrate(stack_info.database_url, schema, tmp_path)
    db = Database(stack_info.database_url, schema, max_size=1)
    try:
        pool = await db.pool()
        async with pool.acquire() as con:
            ok = Statement()
            ok.add("INSERT INTO a SELECT * FROM unnest({}::text[])", ["x", "y"])
            ok.add("INSERT INTO b SELECT * FROM unnest({}::text[], {}::int[])", ["x"], [1])
            await ok.execute(con)
            assert await con.fetchval("SELECT count(*) FROM a") == 2
            assert await con.fetchval("SELECT count(*) FROM b") == 1

            bad = Statement()
            bad.add("INSERT INTO a SELECT * FROM unnest({}::text[])", ["z"])
            bad.add("INSERT INTO b SELECT * FROM unnest({}::text[], {}::int[])", ["w"], [0])
            with pytest.raises(asyncpg.CheckViolationError):
                await bad.execute(con)
            assert await con.fetchval("SELECT count(*) FROM a WHERE id = 'z'") == 0
            await Statement().execute(con)  # no parts: nothing sent
    finally:
        await db.close()
