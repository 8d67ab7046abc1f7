"""Session fixtures: one broker and one PostgreSQL for the whole run.

``--broker=embedded`` (default) starts the Tansu broker from PyPI; ``--broker=kafka`` and
``--broker=kafka3`` start real Apache Kafka (one node, or three with replication 3 and
min ISR 2) from the jars in deploy/kafka. KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL, when
set, name servers to use instead, and nothing is started for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services import kafka_cluster
from services import stack as embedded
from shared.settings import ConnectionSettings


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--broker", choices=("embedded", "kafka", "kafka3"), default="embedded",
        help="broker for integration and e2e tests: embedded Tansu, or Apache Kafka 1/3 nodes",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    broker = config.getoption("--broker")
    needs_cluster = pytest.mark.skip(reason="needs the three-node cluster: --broker=kafka3")
    needs_java = pytest.mark.skip(reason="starts Apache Kafka: --broker=kafka or kafka3")
    for item in items:
        if "kafka_cluster" in item.keywords and broker != "kafka3":
            item.add_marker(needs_cluster)
        if "apache_kafka" in item.keywords and broker == "embedded":
            item.add_marker(needs_java)


@dataclass(frozen=True)
class Broker:
    kind: str  # embedded | kafka | kafka3
    replication: int
    cluster: kafka_cluster.ClusterInfo | None  # set when we run Apache Kafka ourselves


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    kind = request.config.getoption("--broker")
    if kind == "embedded" or ConnectionSettings().external_kafka:
        yield Broker(kind, 1, None)
        return
    nodes = 3 if kind == "kafka3" else 1
    state_dir = tmp_path_factory.mktemp("kafka")
    info = kafka_cluster.up(nodes, state_dir)
    try:
        yield Broker(kind, nodes, info)
    finally:
        kafka_cluster.down(state_dir)


@pytest.fixture(scope="session")
def stack_info(broker: Broker,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[embedded.StackInfo]:
    conn = ConnectionSettings()
    state_dir = tmp_path_factory.mktemp("stack")
    info = embedded.up(
        state_dir,
        kafka_port=embedded.free_port(),
        postgres_port=embedded.free_port(),
        external_kafka=conn.external_kafka or (
            broker.cluster.bootstrap_servers if broker.cluster else None),
        external_database_url=conn.external_database_url,
    )
    try:
        yield info
    finally:
        embedded.down(state_dir)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """When a test that ran services fails, show the end of each service's log with the
    failure: CI keeps only what the run printed."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        supervisor = getattr(value, "supervisor", None)
        log_dir = getattr(supervisor, "log_dir", None)
        if log_dir is None:
            continue
        for log in sorted(Path(log_dir).glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-60:]
            report.sections.append((f"service log {log.name} (last {len(lines)} lines)",
                                    "\n".join(lines)))
