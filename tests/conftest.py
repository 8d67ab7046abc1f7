"""Session fixtures: one embedded broker and PostgreSQL for the whole run (or the ones named
by KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services import stack as embedded
from shared.settings import ConnectionSettings


@pytest.fixture(scope="session")
def stack_info(tmp_path_factory: pytest.TempPathFactory) -> Iterator[embedded.StackInfo]:
    conn = ConnectionSettings()
    state_dir = tmp_path_factory.mktemp("stack")
    info = embedded.up(
        state_dir,
        kafka_port=embedded.free_port(),
        postgres_port=embedded.free_port(),
        external_kafka=conn.external_kafka,
        external_database_url=conn.external_database_url,
    )
    try:
        yield info
    finally:
        embedded.down(state_dir)
