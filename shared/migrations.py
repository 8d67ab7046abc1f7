"""Applies a service's plain SQL migration files to its own schema, once each, in order."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from shared.db import quote_ident

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load(directory: Path) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_words.sql")
        found.append(Migration(match.group(1), path.name, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {directory}")
    return found


async def migrate(url: str, schema: str, directory: Path) -> list[str]:
    """Apply pending migrations in one transaction each; returns the names applied.

    Safe to run from several workers at once: an advisory lock per schema serialises them,
    and an already applied file whose content changed is refused rather than re-run.
    """
    migrations = load(directory)
    con = await asyncpg.connect(url)
    try:
        schema_q = quote_ident(schema)
        async with con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", schema)
            await con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema_q}")
            await con.execute(
                f"CREATE TABLE IF NOT EXISTS {schema_q}.schema_migrations ("
                " version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        applied: list[str] = []
        for migration in migrations:
            async with con.transaction():
                await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", schema)
                row = await con.fetchrow(
                    f"SELECT checksum FROM {schema_q}.schema_migrations WHERE version = $1",
                    migration.version,
                )
                if row is not None:
                    if row["checksum"] != migration.checksum:
                        raise MigrationError(
                            f"{schema}: {migration.name} changed after it was applied; "
                            "add a new migration instead"
                        )
                    continue
                await con.execute(f"SET LOCAL search_path TO {schema_q}; SET LOCAL TIME ZONE 'UTC'")
                await con.execute(migration.sql)
                await con.execute(
                    f"INSERT INTO {schema_q}.schema_migrations (version, name, checksum)"
                    " VALUES ($1, $2, $3)",
                    migration.version, migration.name, migration.checksum,
                )
                applied.append(migration.name)
                log.info("event=migration_applied schema=%s name=%s", schema, migration.name)
        return applied
    finally:
        await con.close()
