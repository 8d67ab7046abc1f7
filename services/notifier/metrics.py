"""Every metric of the notifier service, on the service's registry. Labels are bounded: the
channel, the provider, a failure class or receipt status, a trigger; never an order, phone
number or openid."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: from an instant in-app write to an SMS that waited out a throttled provider
DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.notifications = Counter(
            "orderstream_notifier_notifications_total",
            "Logical messages planned (one per order and status), by trigger and whether any "
            "channel outside the app can reach the customer", ["trigger", "reachable"],
            registry=registry)
        self.reached = Counter(
            "orderstream_notifier_reached_total",
            "Logical messages that reached the customer on at least one channel outside the "
            "app (first confirmed delivery), by trigger", ["trigger"], registry=registry)
        self.attempts = Counter(
            "orderstream_notifier_send_attempts_total",
            "Send attempts, by channel, provider, outcome (accepted, failed) and reason (the "
            "failure class, or none)", ["channel", "provider", "outcome", "reason"],
            registry=registry)
        self.receipts = Counter(
            "orderstream_notifier_receipts_total",
            "Delivery results by channel, provider and status (delivered, failed, "
            "no_receipt): SMTP acceptance and in-app writes count as delivered",
            ["channel", "provider", "status"], registry=registry)
        self.failovers = Counter(
            "orderstream_notifier_failovers_total",
            "A message moved to another provider or channel, by from, to and reason",
            ["from_channel", "to_channel", "reason"], registry=registry)
        self.throttles = Counter(
            "orderstream_notifier_throttles_total",
            "Provider answers classed throttled or quota, by channel and provider",
            ["channel", "provider", "reason"], registry=registry)
        self.send_seconds = Histogram(
            "orderstream_notifier_send_duration_seconds",
            "One send call to a provider, by channel and provider", ["channel", "provider"],
            registry=registry, buckets=SEND_BUCKETS)
        self.first_delivery_seconds = Histogram(
            "orderstream_notifier_first_delivery_seconds",
            "From the status change to its first confirmed delivery outside the app, by "
            "trigger", ["trigger"], registry=registry, buckets=DELIVERY_BUCKETS)
        self.pending = Gauge(
            "orderstream_notifier_pending_deliveries",
            "Deliveries waiting to be sent, by channel (the same on every worker: use max)",
            ["channel"], registry=registry)
        self.retrying = Gauge(
            "orderstream_notifier_retry_backlog",
            "Pending deliveries that were tried before (retries and failovers waiting), by "
            "channel (the same on every worker: use max)", ["channel"], registry=registry)
        self.delivery_ratio = Gauge(
            "orderstream_notifier_delivery_ratio",
            "Delivered / (delivered + failed) over the rolling window, from receipts, by "
            "channel and provider (NaN-free: absent until there is a result)",
            ["channel", "provider"], registry=registry)
        self.provider_up = Gauge(
            "orderstream_notifier_provider_up",
            "1 when a provider's circuit is closed and it is not paused, else 0",
            ["channel", "provider"], registry=registry)
        self.provider_health = Gauge(
            "orderstream_notifier_provider_health",
            "A provider's own health answer, 1 good / 0 bad: SMTP login, WeChat token, SMS "
            "balance or quota", ["provider", "check"], registry=registry)
        self.alerts = Counter(
            "orderstream_notifier_alerts_total",
            "Alerts the notifier raised on ops.alerts, by kind", ["kind"], registry=registry)
        self.receipt_requests = Counter(
            "orderstream_notifier_receipt_requests_total",
            "Receipt pushes received, by provider and HTTP status answered",
            ["provider", "status"], registry=registry)
