"""The four services as real processes on the session's broker and database, isolated by a
topic, group and schema prefix of their own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.stack import StackInfo, free_port
from services.supervisor import SERVICES, Supervisor
from shared.kafka_admin import ensure_topics
from shared.settings import ConnectionSettings


@dataclass(frozen=True)
class System:
    conn: ConnectionSettings
    supervisor: Supervisor

    def port(self, service: str) -> int:
        return next(c.port for c in self.supervisor.children if c.name == service)


@contextmanager
def running_system(stack_info: StackInfo, broker, work: Path,
                   extra_env: dict[str, str] | None = None,
                   extra_workers: dict[str, int] | None = None,
                   services: tuple[str, ...] = SERVICES) -> Iterator[System]:
    """The four services on their own topic prefix, group ids and schemas."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    conn = ConnectionSettings(
        kafka_bootstrap_servers=stack_info.kafka_bootstrap_servers,
        database_url=stack_info.database_url,
        topic_prefix=prefix,
        topic_partitions=4,
        topic_replication=broker.replication,
    )
    asyncio.run(ensure_topics(conn))
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": stack_info.kafka_bootstrap_servers,
        "DATABASE_URL": stack_info.database_url,
        "ORDERSTREAM_TOPIC_PREFIX": prefix,
        "ORDERSTREAM_TOPIC_PARTITIONS": "4",
        "ORDERSTREAM_TOPIC_REPLICATION": str(broker.replication),
        "ORDERSTREAM_DATA_DIR": str(work / "data"),
        **(extra_env or {}),
    }
    supervisor = Supervisor(
        env, work / "logs", services=services, ports={name: free_port() for name in services},
        workers={service: [free_port() for _ in range(n)]
                 for service, n in (extra_workers or {}).items()})
    supervisor.start()
    try:
        supervisor.wait_ready(timeout=120)
        yield System(conn, supervisor)
    finally:
        supervisor.stop()


@pytest.fixture(scope="module")
def system(stack_info: StackInfo, broker,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(stack_info, broker, tmp_path_factory.mktemp("system")) as running:
        yield running
