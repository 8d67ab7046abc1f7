"""Faust wiring every service shares: the app, its connections, acknowledged sends, pages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp.web
import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from shared import codec, transport
from shared.db import Database
from shared.events import Event
from shared.kafka_admin import ensure_topics
from shared.metrics import StreamMetrics
from shared.migrations import migrate
from shared.policy import RecordPolicy
from shared.settings import ConnectionSettings, ServiceSettings
from shared.topics import TOPICS

log = logging.getLogger(__name__)

class Runtime:
    """One service's Faust app with its connections, metrics and dead-letter helper."""

    def __init__(self, service: str, settings: ServiceSettings, migrations: Path) -> None:
        self.service = service
        self.settings = settings
        self.migrations = migrations
        self.conn = ConnectionSettings()
        self.registry = CollectorRegistry()
        self.metrics = StreamMetrics(self.registry)
        self.policy = RecordPolicy(service, self.metrics, self.conn.topic)
        self.app = transport.App(
            self.conn.topic(f"orderstream-{service}"),
            broker=[f"kafka://{server}" for server in self.conn.bootstrap_list],
            store=settings.table_store,
            datadir=str((self.conn.data_dir / self.conn.topic(service)).resolve()),
            web_bind=settings.http_host,
            web_port=settings.http_port,
            web_in_thread=False,
            topic_partitions=self.conn.topic_partitions,
            topic_replication_factor=self.conn.topic_replication,
            topic_disable_leader=True,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=self.conn.kafka_session_timeout,
            broker_rebalance_timeout=self.conn.kafka_rebalance_timeout,
            broker_heartbeat_interval=self.conn.kafka_heartbeat_interval,
            producer_acks=-1,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.app.transport_type = transport.transport_class(
            fetch_max_wait_ms=self.conn.kafka_fetch_max_wait_ms
        )
        self.db = Database(
            self.conn.database_url, self.conn.schema(service), max_size=settings.db_pool_max
        )
        self._out: dict[str, faust.TopicT] = {}
        self._install_pages()
        self.app.on_before_shutdown.connect(self._on_shutdown)
        self._assigned = False
        #: overrides /health's "consumer group assigned" check (a service with its own loop)
        self.readiness: Callable[[], bool] | None = None
        #: compacted topics the service keeps its own state in (catalogue-style names)
        self.state_topics: list[str] = []
        #: whether the broker grants producer ids (decided in :meth:`prepare`)
        self.idempotent = False
        self.app.on_rebalance_complete.connect(self._on_rebalance_complete)

    # --- topics -------------------------------------------------------------------------

    def topic(self, *names: str) -> faust.TopicT:
        """A channel over catalogue topics delivering raw bytes (decoded by :meth:`consume`)."""
        for name in names:
            if name not in TOPICS:
                raise KeyError(f"{name} is not in the topic catalogue")
        return self.app.topic(
            *(self.conn.topic(n) for n in names),
            key_serializer="raw",
            value_serializer="raw",
        )

    # --- producing ------------------------------------------------------------------------

    def _channel(self, topic: str) -> faust.TopicT:
        out = self._out.get(topic)
        if out is None:
            out = self._out[topic] = self.topic(topic)
        return out

    async def publish_many(self, topic: str, items: list[tuple[str | None, Event]]) -> None:
        """Send events now, outside any stream event, and return once the broker
        acknowledged every one (for timers and web handlers, whose effects no offset commit
        covers). All are queued in order first, then the acks are awaited together."""
        out = self._channel(topic)
        deliveries = [
            await out.send(key=key.encode() if key is not None else None,
                           value=codec.encode(event), force=True)
            for key, event in items
        ]
        # Shielded: a cancelled wait must not cancel the deliveries Faust watches.
        await asyncio.shield(asyncio.gather(*deliveries))
        for _, event in items:
            self.metrics.events_out.labels(topic, event.event_type).inc()

    # --- HTTP pages ---------------------------------------------------------------------

    def _install_pages(self) -> None:
        registry = self.registry
        service = self.service

        @self.app.page("/metrics")
        async def metrics(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
            # Faust's helpers pass content_type to aiohttp, which refuses a charset in it;
            # Prometheus wants "text/plain; version=0.0.4; charset=utf-8" verbatim.
            return aiohttp.web.Response(body=generate_latest(registry),
                                        headers={"Content-Type": CONTENT_TYPE_LATEST})

        @self.app.page("/health")
        async def health(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
            # Ready once the consumer group has handed us partitions (and tables recovered).
            ready = (self.readiness() if self.readiness is not None
                     else self._assigned and not self.app.rebalancing)
            return web.json({"service": service, "status": "ok" if ready else "starting"},
                            status=200 if ready else 503)

    # --- life cycle ---------------------------------------------------------------------

    async def _on_rebalance_complete(self, app: faust.App, **_: Any) -> None:
        self._assigned = True

    async def _on_shutdown(self, app: faust.App, **_: Any) -> None:
        await self.db.close()

    async def prepare(self) -> None:
        """Create the catalogue's topics, apply this service's migrations, and choose the
        producer the broker supports."""
        await ensure_topics(
            self.conn, changelogs=[*(t.changelog_topic.get_topic_name()
                                     for t in self.app.tables.values()),
                                   *(self.conn.topic(name) for name in self.state_topics)])
        idempotent = self.conn.kafka_idempotence == "on" or (
            self.conn.kafka_idempotence == "auto"
            and await transport.supports_idempotence(self.conn.bootstrap_list)
        )
        self.idempotent = idempotent
        if idempotent:
            self.app.use_idempotent_producer()
        log.info("event=producer_chosen service=%s idempotent=%s", self.service, idempotent)
        await migrate(self.conn.database_url, self.conn.schema(self.service), self.migrations)

    def main(self) -> None:
        """Prepare, then run the Faust worker until SIGINT/SIGTERM."""
        levels = {"crit": "CRITICAL", "error": "ERROR", "warn": "WARNING", "info": "INFO",
                  "debug": "DEBUG"}
        logging.basicConfig(
            level=levels[self.conn.log_level],
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        if self.conn.log_level != "debug":
            # aiokafka formats a debug record for every produced message unless told not to.
            logging.getLogger("aiokafka").setLevel(logging.INFO)
        Path(self.app.conf.datadir).mkdir(parents=True, exist_ok=True)
        asyncio.run(self.prepare())
        worker = faust.Worker(self.app, loglevel=self.conn.log_level, quiet=True)
        worker.execute_from_commandline()
