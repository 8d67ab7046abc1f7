"""Faust wiring every service shares: the app, raw topics, the decode-handle-DLQ loop, pages."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp.web
import asyncpg
import faust
from aiokafka.errors import KafkaError
from faust.exceptions import PartitionsMismatch
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError

from shared import codec, transport
from shared.db import Database
from shared.events import Event, RejectedMessage, derive_id
from shared.kafka_admin import ensure_topics
from shared.metrics import StreamMetrics
from shared.migrations import migrate
from shared.settings import ConnectionSettings, ServiceSettings
from shared.topics import ORDERS_DLQ, TOPICS

log = logging.getLogger(__name__)

#: Failures that say "the world is not ready", not "this record is bad": retried in place,
#: so the partition waits instead of losing or dead-lettering a good record.
TRANSIENT = (OSError, TimeoutError, KafkaError, asyncpg.InterfaceError,
             PartitionsMismatch)
#: PostgreSQL error classes (SQLSTATE's first two characters) that are about the server or
#: the schema, not the record: connection (08), rollback (40), missing objects or privileges
#: after a bad deploy (42), resources (53), operator intervention (57), system (58).
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "42", "53", "57", "58"})


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "")[:2] in TRANSIENT_SQLSTATE_CLASSES
    return isinstance(exc, TRANSIENT)
RETRY_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class Record:
    """One consumed record: catalogue topic name, decoded event (or raw bytes), position."""

    topic: str
    key: str | None
    value: Any
    headers: dict[str, str]
    partition: int
    offset: int
    raw: bytes | None
    timestamp: float | None = None  # the record's Kafka timestamp, epoch seconds


Handler = Callable[[Record], Awaitable[None]]


def text(value: bytes | str | None) -> str | None:
    """A record key or header value as text (invalid UTF-8 replaced, never raised)."""
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8", errors="replace")


def headers_of(message: Any) -> dict[str, str]:
    """A consumed message's headers (Faust's dict or aiokafka's pairs) as text."""
    items = message.headers.items() if isinstance(message.headers, dict) else message.headers
    return {k: text(v) or "" for k, v in (items or ())}


class Runtime:
    """One service's Faust app with its connections, metrics and dead-letter helper."""

    def __init__(self, service: str, settings: ServiceSettings, migrations: Path) -> None:
        self.service = service
        self.settings = settings
        self.migrations = migrations
        self.conn = ConnectionSettings()
        self.registry = CollectorRegistry()
        self.metrics = StreamMetrics(self.registry)
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
        self._by_full_name = {self.conn.topic(name): name for name in TOPICS}
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

    # --- topics, tables -----------------------------------------------------------------

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

    def table(self, name: str) -> faust.TableT:
        """A changelog-backed table of JSON values, co-partitioned with the topics feeding it."""
        return self.app.Table(
            name,
            partitions=self.conn.topic_partitions,
            schema=faust.Schema(key_serializer="json", value_serializer="json"),
        )

    # --- producing ------------------------------------------------------------------------

    def _channel(self, topic: str) -> faust.TopicT:
        out = self._out.get(topic)
        if out is None:
            out = self._out[topic] = self.topic(topic)
        return out

    async def send(self, topic: str, key: str | None, event: Event) -> None:
        """Queue ``event`` on catalogue topic ``topic``; Faust flushes before committing."""
        await self._channel(topic).send(key=key.encode() if key is not None else None,
                                        value=codec.encode(event))
        self.metrics.events_out.labels(topic, event.event_type).inc()

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

    def rejection(self, record: Record, reason: str, error: str,
                  field_errors: tuple[dict[str, Any], ...] = ()) -> RejectedMessage:
        """The dead letter for ``record`` (its id derived from the record's position, so a
        redelivered bad record gives the same letter), counted and logged."""
        rejected = RejectedMessage(
            event_id=derive_id("dlq", record.topic, record.partition, record.offset),
            service=self.service,
            reason=reason,
            error=error[:2000],
            field_errors=field_errors[:50],
            source_topic=self.conn.topic(record.topic),
            source_partition=record.partition,
            source_offset=record.offset,
            original_key=base64.b64encode(record.key.encode()).decode() if record.key else None,
            original_value=base64.b64encode(record.raw or b"").decode(),
            original_headers=record.headers,
        )
        self.metrics.events_failed.labels(record.topic, reason).inc()
        log.warning(
            "event=dead_lettered service=%s topic=%s partition=%s offset=%s reason=%s error=%s",
            self.service, record.topic, record.partition, record.offset, reason, error[:300],
        )
        return rejected

    async def dead_letter(self, record: Record, reason: str, error: str,
                          field_errors: tuple[dict[str, Any], ...] = ()) -> None:
        await self.send(ORDERS_DLQ, record.key, self.rejection(record, reason, error,
                                                                field_errors))

    # --- consuming ------------------------------------------------------------------------

    async def consume(self, stream: faust.StreamT, handle: Handler) -> None:
        """Decode each record, call ``handle``, dead-letter what is invalid, retry what is
        transient; never lets one record stop the stream."""
        async for event in stream.events():
            message = event.message
            topic = self._by_full_name.get(message.topic, message.topic)
            record = Record(
                topic=topic,
                key=text(message.key),
                value=message.value,
                headers=headers_of(message),
                partition=message.partition,
                offset=message.offset,
                raw=message.value,
                timestamp=message.timestamp,
            )
            started = time.perf_counter()
            await self._process(record, handle)
            self.metrics.processing_seconds.labels(topic).observe(time.perf_counter() - started)

    async def _process(self, record: Record, handle: Handler) -> None:
        try:
            record = self._decoded(record)
        except codec.InvalidRecord as exc:
            await self.dead_letter(record, exc.reason, exc.error, exc.field_errors)
            return
        attempt = 0
        while True:
            try:
                await handle(record)
                return
            except codec.InvalidRecord as exc:
                await self.dead_letter(record, exc.reason, exc.error, exc.field_errors)
                return
            except ValidationError as exc:
                await self.dead_letter(record, "invalid_event", str(exc), codec.field_errors(exc))
                return
            except Exception as exc:
                if not is_transient(exc):
                    # A bug or an input nothing above recognised: keep it, keep going.
                    log.exception("event=processing_failed topic=%s offset=%s",
                                  record.topic, record.offset)
                    await self.dead_letter(record, "processing_failed",
                                           f"{type(exc).__name__}: {exc}")
                    return
                delay = RETRY_BACKOFF[min(attempt, len(RETRY_BACKOFF) - 1)]
                attempt += 1
                self.metrics.retries.labels(record.topic).inc()
                log.warning("event=transient_failure topic=%s offset=%s attempt=%d retry_in=%.1fs "
                            "error=%r", record.topic, record.offset, attempt, delay, exc)
                await asyncio.sleep(delay)

    def _decoded(self, record: Record) -> Record:
        """The record with its value decoded to the topic's event model (raw topics: bytes)."""
        if not TOPICS[record.topic].typed:
            self.metrics.events_in.labels(record.topic, "raw").inc()
            return record
        event = codec.decode(record.topic, record.raw)
        self.metrics.events_in.labels(record.topic, event.event_type).inc()
        return replace(record, value=event)

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
