"""The embedded stack starts a real broker and PostgreSQL, reuses, stops and restarts them."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services import stack

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.embedded_stack]


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "stack"
    try:
        yield path
    finally:
        stack.down(path)


def _gone(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _kafka_roundtrip(bootstrap: str) -> bytes | None:
    topic = "stack-smoke"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"order-1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()
    return message.value


async def _sql(url: str, *statements: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        result: object = None
        for statement in statements:
            result = await conn.fetchval(statement)
        return result
    finally:
        await conn.close()


def test_up_reuse_down_and_restart_starts_both_empty_again(state_dir: Path) -> None:
    ports = {"kafka_port": stack.free_port(), "postgres_port": stack.free_port()}
    info = stack.up(state_dir, **ports, timeout=90)
    assert info.broker_pid and info.postgres_pid
    assert info.database_url.endswith(f"@127.0.0.1:{ports['postgres_port']}/postgres")

    assert asyncio.run(_kafka_roundtrip(info.kafka_bootstrap_servers)) == b"hello"
    version = asyncio.run(_sql(info.database_url, "select version()"))
    assert str(version).startswith("PostgreSQL 18")
    asyncio.run(_sql(info.database_url, "create table kept (id int)", "insert into kept select 7"))

    assert stack.up(state_dir, **ports) == info  # idempotent: same processes reused
    current = stack.status(state_dir)
    assert current["kafka"]["running"] and current["kafka"]["pid"] == info.broker_pid
    assert current["postgres"]["running"] and current["postgres"]["pid"] == info.postgres_pid

    stack.down(state_dir)
    assert _gone(info.broker_pid) and _gone(info.postgres_pid)
    current = stack.status(state_dir)
    assert not current["kafka"]["running"] and not current["postgres"]["running"]
    stack.down(state_dir)  # idempotent

    # A new embedded broker starts empty, so the embedded database starts empty with it.
    again = stack.up(state_dir, **ports, timeout=90)
    assert again.postgres_pid != info.postgres_pid
    assert asyncio.run(_sql(again.database_url, "select to_regclass('kept')")) is None
    assert asyncio.run(_kafka_roundtrip(again.kafka_bootstrap_servers)) == b"hello"


def test_long_state_dir_moves_the_socket_out(tmp_path: Path) -> None:
    state_dir = tmp_path.joinpath("a-rather-long-directory-name" * 3, "stack")
    try:
        info = stack.up(
            state_dir, kafka_port=stack.free_port(), postgres_port=stack.free_port(), timeout=90
        )
        socket_dir = json.loads((state_dir / "stack.json").read_text())["postgres"]["socket_dir"]
        assert not Path(socket_dir).is_relative_to(state_dir)
        port = urlsplit(info.database_url).port
        conn_args = {"host": socket_dir, "port": port, "user": "postgres"}

        async def over_socket() -> object:
            conn = await asyncpg.connect(**conn_args)
            try:
                return await conn.fetchval("select 1")
            finally:
                await conn.close()

        assert asyncio.run(over_socket()) == 1
    finally:
        stack.down(state_dir)
    assert not Path(socket_dir).exists()


@pytest.mark.parametrize("taken", ["kafka_port", "postgres_port"])
def test_taken_port_is_reported_and_nothing_is_left_running(state_dir: Path, taken: str) -> None:
    ports = {"kafka_port": stack.free_port(), "postgres_port": stack.free_port()}
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        ports[taken] = squatter.getsockname()[1]
        with pytest.raises(stack.StackError, match=rf"port {ports[taken]}\b.*{taken}"):
            stack.up(state_dir, **ports)
    current = stack.status(state_dir)
    assert not current["kafka"]["running"] and not current["postgres"]["running"]
    assert current["kafka"]["pid"] is None  # a broker started before the failure was undone


def test_external_services_start_nothing(state_dir: Path) -> None:
    info = stack.up(
        state_dir,
        external_kafka="127.0.0.1:1",
        external_database_url="postgresql://app@127.0.0.1:1/app",
    )
    assert (info.broker_pid, info.postgres_pid) == (None, None)
    assert info.kafka_bootstrap_servers == "127.0.0.1:1"
    assert info.database_url == "postgresql://app@127.0.0.1:1/app"
    current = stack.status(state_dir)
    assert current["kafka"]["external"] and not current["kafka"]["running"]
    assert current["postgres"]["external"] and not current["postgres"]["running"]
