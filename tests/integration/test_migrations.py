"""The migrations runner on a real PostgreSQL: each service's own schema, once, in order."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest

from shared.db import Database, quote_ident
from shared.migrations import MigrationError, migrate

pytestmark = pytest.mark.postgres


@pytest.fixture
def schema() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


def write(folder: Path, name: str, sql: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(sql)


async def test_migrations_apply_once_in_order_into_the_services_own_schema(
    stack_info, tmp_path, schema
):
    write(tmp_path, "0001_items.sql", "CREATE TABLE items (id int PRIMARY KEY);")
    write(tmp_path, "0002_more.sql",
          "ALTER TABLE items ADD COLUMN seen_at timestamptz NOT NULL DEFAULT now();")
    assert await migrate(stack_info.database_url, schema, tmp_path) == [
        "0001_items.sql", "0002_more.sql"]
    assert await migrate(stack_info.database_url, schema, tmp_path) == []

    con = await asyncpg.connect(stack_info.database_url)
    try:
        columns = await con.fetch(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = $1 AND table_name = 'items' ORDER BY ordinal_position",
            schema)
        assert [(c["column_name"], c["data_type"]) for c in columns] == [
            ("id", "integer"), ("seen_at", "timestamp with time zone")]
        versions = await con.fetch(
            f"SELECT version FROM {quote_ident(schema)}.schema_migrations ORDER BY version")
        assert [v["version"] for v in versions] == ["0001", "0002"]
    finally:
        await con.close()


async def test_concurrent_workers_apply_each_migration_exactly_once(stack_info, tmp_path, schema):
    write(tmp_path, "0001_counter.sql",
          "CREATE TABLE runs (n int); INSERT INTO runs VALUES (1);")
    results = await asyncio.gather(*(
        migrate(stack_info.database_url, schema, tmp_path) for _ in range(4)))
    assert sorted(len(r) for r in results) == [0, 0, 0, 1]
    con = await asyncpg.connect(stack_info.database_url)
    try:
        assert await con.fetchval(f"SELECT count(*) FROM {quote_ident(schema)}.runs") == 1
    finally:
        await con.close()


async def test_an_applied_migration_that_was_edited_is_refused(stack_info, tmp_path, schema):
    write(tmp_path, "0001_items.sql", "CREATE TABLE items (id int);")
    await migrate(stack_info.database_url, schema, tmp_path)
    write(tmp_path, "0001_items.sql", "CREATE TABLE items (id bigint);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(stack_info.database_url, schema, tmp_path)


async def test_a_failing_migration_leaves_nothing_half_applied(stack_info, tmp_path, schema):
    write(tmp_path, "0001_bad.sql", "CREATE TABLE ok (id int); SELECT no_such_function();")
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await migrate(stack_info.database_url, schema, tmp_path)
    con = await asyncpg.connect(stack_info.database_url)
    try:
        assert await con.fetchval("SELECT to_regclass($1)", f"{schema}.ok") is None
    finally:
        await con.close()


def test_migration_files_must_be_numbered(tmp_path):
    write(tmp_path, "init.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_words\.sql"):
        asyncio.run(migrate("postgresql://unused", "x", tmp_path))


async def test_pool_connections_keep_the_schema_and_utc_after_being_reused(
    stack_info, tmp_path, schema
):
    write(tmp_path, "0001_t.sql", "CREATE TABLE t (at timestamptz);")
    await migrate(stack_info.database_url, schema, tmp_path)
    db = Database(stack_info.database_url, schema, max_size=1)
    try:
        pool = await db.pool()
        for _ in range(3):  # the pool resets a connection (RESET ALL) each time it returns
            async with pool.acquire() as con:
                assert await con.fetchval("SHOW TimeZone") == "UTC"
                await con.execute("SET TIME ZONE 'Asia/Shanghai'")
                assert await con.fetchval("SELECT count(*) FROM t") == 0
    finally:
        await db.close()
