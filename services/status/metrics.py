"""Every metric of the status-tracking service, on the service's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: from seconds to a month: statuses last from moments (RESERVED) to weeks (IN_TRANSIT)
STATUS_BUCKETS = (1, 5, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400,
                  2 * 86400, 4 * 86400, 7 * 86400, 14 * 86400, 30 * 86400)
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 600, 1200, 1800, 3600,
               4 * 3600, 86400)
POLL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class StatusMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.transitions = Counter(
            "orderstream_status_transitions_total",
            "Status changes published on orders.status, by from and to status",
            ["from_status", "to_status"], registry=registry)
        self.time_in_status = Histogram(
            "orderstream_status_time_in_status_seconds",
            "How long an order stayed in a status, observed when it left it",
            ["status"], registry=registry, buckets=STATUS_BUCKETS)
        self.notes = Counter(
            "orderstream_status_history_notes_total",
            "Inputs kept in the history without a status change (late or refused), by what "
            "they reported", ["reported"], registry=registry)
        self.carrier_updates = Counter(
            "orderstream_status_carrier_updates_total",
            "Warehouse and carrier events taken in (first arrival of each), by carrier and "
            "the way they came: callback, poll or wms", ["carrier", "via"], registry=registry)
        self.scan_lag = Histogram(
            "orderstream_status_scan_lag_seconds",
            "From a carrier's scan time to the status change it caused being published",
            ["via"], registry=registry, buckets=LAG_BUCKETS)
        self.polls = Counter(
            "orderstream_status_carrier_polls_total",
            "Tracking queries, by carrier and outcome (news, no_news, error)",
            ["carrier", "outcome"], registry=registry)
        self.poll_seconds = Histogram(
            "orderstream_status_carrier_poll_seconds", "Tracking query latency, by carrier",
            ["carrier"], registry=registry, buckets=POLL_BUCKETS)
        self.poll_errors = Counter(
            "orderstream_status_carrier_poll_errors_total",
            "Failed tracking queries, by carrier and kind (timeout, throttled, unavailable, "
            "quota, rejected)", ["carrier", "kind"], registry=registry)
        self.stale = Gauge(
            "orderstream_status_stale_orders",
            "Orders past their status deadline right now, by status (the same on every "
            "worker: aggregate with max)", ["status"], registry=registry)
        self.stale_alerts = Counter(
            "orderstream_status_stale_alerts_total",
            "Stale-order alerts raised on ops.alerts, by status", ["status"], registry=registry)
        self.waiting = Gauge(
            "orderstream_status_waiting_orders",
            "Orders with news but no submission yet (the same on every worker)",
            registry=registry)
        self.notices = Counter(
            "orderstream_status_operator_notices_total",
            "Stale-order notices to operators, by channel (robot, email) and outcome",
            ["channel", "outcome"], registry=registry)
        self.webhook = Counter(
            "orderstream_status_webhook_requests_total",
            "POST /v1/fulfilment/{source} answers, by source and HTTP status",
            ["source", "status"], registry=registry)
