"""Stream metrics every service exports, on the service's own registry."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram


def children(metric: Any) -> Callable[..., Any]:
    """``metric.labels`` with each labelled child looked up once: a loop counts per record,
    and ``labels()`` costs more than the ``inc()`` it precedes."""
    return cache(metric.labels)


BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class StreamMetrics:
    """Events in, out and failed per topic, retries, processing latency, batch sizes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events_in = Counter(
            "orderstream_events_in_total", "Records consumed, by topic and event type",
            ["topic", "event_type"], registry=registry,
        )
        self.events_out = Counter(
            "orderstream_events_out_total", "Records produced, by topic and event type",
            ["topic", "event_type"], registry=registry,
        )
        self.events_failed = Counter(
            "orderstream_events_failed_total",
            "Records sent to the dead-letter topic, by source topic and reason",
            ["topic", "reason"], registry=registry,
        )
        self.retries = Counter(
            "orderstream_event_retries_total",
            "Transient failures retried (database or broker unavailable), by topic",
            ["topic"], registry=registry,
        )
        self.processing_seconds = Histogram(
            "orderstream_processing_seconds",
            "Time from taking a record to finishing its effects, by topic",
            ["topic"], registry=registry, buckets=LATENCY_BUCKETS,
        )
        self.batch_records = Histogram(
            "orderstream_batch_records", "Records decided per batch of the consume loop",
            registry=registry, buckets=BATCH_BUCKETS)
        self.batch_seconds = Histogram(
            "orderstream_batch_seconds",
            "Time from taking a batch to committing it (decide, write, send, save)",
            registry=registry, buckets=LATENCY_BUCKETS)
