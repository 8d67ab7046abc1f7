"""Every metric of the ingestion service, on the service's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

AGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)


class IngestionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "orderstream_ingestion_received_total", "Raw order records read, by channel",
            ["channel"], registry=registry)
        self.outcomes = Counter(
            "orderstream_ingestion_orders_total",
            "What each readable record meant: accepted (new order), duplicate, payment_update, "
            "stale_update, ignored (first seen already cancelled)",
            ["channel", "outcome"], registry=registry)
        self.rejected = Counter(
            "orderstream_ingestion_rejected_total",
            "Raw records dead-lettered, by channel and reason", ["channel", "reason"],
            registry=registry)
        self.lag = Histogram(
            "orderstream_ingestion_lag_seconds",
            "From the record's Kafka timestamp to ingestion finishing with it",
            registry=registry, buckets=AGE_BUCKETS)
        self.order_age = Histogram(
            "orderstream_ingestion_order_age_seconds",
            "From the channel's own created time to the OrderSubmitted (end-to-end latency)",
            ["channel"], registry=registry, buckets=AGE_BUCKETS)
