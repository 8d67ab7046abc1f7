"""The per-record policy every consume loop shares: decode, dead-letter, retry, count."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from aiokafka.errors import KafkaError
from faust.exceptions import PartitionsMismatch
from pydantic import ValidationError

from shared import codec
from shared.events import RejectedMessage, derive_id
from shared.metrics import StreamMetrics, children
from shared.topics import TOPICS

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Failures that say "the world is not ready", not "this record is bad": retried in place,
#: so the partition waits instead of losing or dead-lettering a good record.
TRANSIENT = (OSError, TimeoutError, KafkaError, asyncpg.InterfaceError,
             PartitionsMismatch)
#: PostgreSQL error classes (SQLSTATE's first two characters) that are about the server or
#: the schema, not the record: connection (08), rollback (40), missing objects or privileges
#: after a bad deploy (42), resources (53), operator intervention (57), system (58).
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "42", "53", "57", "58"})
RETRY_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "")[:2] in TRANSIENT_SQLSTATE_CLASSES
    return isinstance(exc, TRANSIENT)


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


def text(value: bytes | str | None) -> str | None:
    """A record key or header value as text (invalid UTF-8 replaced, never raised)."""
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8", errors="replace")


def headers_of(message: Any) -> dict[str, str]:
    """A consumed message's headers (Faust's dict or aiokafka's pairs) as text."""
    items = message.headers.items() if isinstance(message.headers, dict) else message.headers
    return {k: text(v) or "" for k, v in (items or ())}


class RecordPolicy:
    """What happens to one record, whatever loop reads it:

    - decode it to its topic's event model (raw topics keep their bytes);
    - turn an invalid record (:class:`~shared.codec.InvalidRecord`, a pydantic
      ``ValidationError``) or an unexpected error into exactly one ``RejectedMessage`` whose
      id comes from the record's position, so a redelivered bad record gives the same letter;
    - retry what is transient (the database or broker is away) in place, with backoff;
    - count records in, out, failed and retried on the service's :class:`StreamMetrics`.
    """

    def __init__(self, service: str, metrics: StreamMetrics,
                 full_name: Callable[[str], str]) -> None:
        self.service = service
        self.metrics = metrics
        self.full_name = full_name
        self._in = children(metrics.events_in)
        self._out = children(metrics.events_out)
        self._failed = children(metrics.events_failed)

    # --- counting ---------------------------------------------------------------------------

    def count_in(self, topic: str, event_type: str, n: int = 1) -> None:
        self._in(topic, event_type).inc(n)

    def count_out(self, topic: str, event_type: str, n: int = 1) -> None:
        self._out(topic, event_type).inc(n)

    # --- decoding and dead letters --------------------------------------------------------

    def decode(self, record: Record, counts: Counter[tuple[str, str]]) -> Record:
        """The record with its value decoded to the topic's event model (raw topics: bytes),
        counted on ``counts`` by (topic, event type), for the caller to add to the metrics
        once per batch (:meth:`count_in`). Raises :class:`~shared.codec.InvalidRecord`."""
        if not TOPICS[record.topic].typed:
            counts[(record.topic, "raw")] += 1
            return record
        event = codec.decode(record.topic, record.raw)
        counts[(record.topic, event.event_type)] += 1
        return Record(record.topic, record.key, event, record.headers, record.partition,
                      record.offset, record.raw, record.timestamp)  # not replace(): hot path

    def rejection(self, record: Record, reason: str, error: str,
                  field_errors: tuple[dict[str, Any], ...] = ()) -> RejectedMessage:
        """The dead letter for ``record``, counted and logged."""
        rejected = RejectedMessage(
            event_id=derive_id("dlq", record.topic, record.partition, record.offset),
            service=self.service,
            reason=reason,
            error=error[:2000],
            field_errors=field_errors[:50],
            source_topic=self.full_name(record.topic),
            source_partition=record.partition,
            source_offset=record.offset,
            original_key=base64.b64encode(record.key.encode()).decode() if record.key else None,
            original_value=base64.b64encode(record.raw or b"").decode(),
            original_headers=record.headers,
        )
        self._failed(record.topic, reason).inc()
        log.warning(
            "event=dead_lettered service=%s topic=%s partition=%s offset=%s reason=%s error=%s",
            self.service, record.topic, record.partition, record.offset, reason, error[:300],
        )
        return rejected

    def letter(self, record: Record, exc: Exception) -> RejectedMessage:
        """The one dead letter for a record that failed to decode or to be decided (in
        memory, no I/O: nothing there is worth retrying)."""
        if isinstance(exc, codec.InvalidRecord):
            return self.rejection(record, exc.reason, exc.error, exc.field_errors)
        if isinstance(exc, ValidationError):
            return self.rejection(record, "invalid_event", str(exc), codec.field_errors(exc))
        # A bug or an input nothing above recognised: keep it, keep going.
        log.error("event=processing_failed topic=%s offset=%s", record.topic, record.offset,
                  exc_info=exc)
        return self.rejection(record, "processing_failed", f"{type(exc).__name__}: {exc}")

    # --- retries --------------------------------------------------------------------------

    async def retrying(self, stage: str, step: Callable[[], Awaitable[T]]) -> T:
        """Await ``step()`` until it succeeds; transient failures are retried with backoff
        (counted under ``stage``), anything else is raised."""
        attempt = 0
        while True:
            try:
                return await step()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                delay = RETRY_BACKOFF[min(attempt, len(RETRY_BACKOFF) - 1)]
                attempt += 1
                self.metrics.retries.labels(stage).inc()
                log.warning("event=transient_failure stage=%s attempt=%d retry_in=%.1fs "
                            "error=%r", stage, attempt, delay, exc)
                await asyncio.sleep(delay)
