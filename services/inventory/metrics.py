"""Every metric of the inventory service, on the service's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.inventory.domain import Decision, SkuState
from services.inventory.reconcile import Report


class InventoryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._low: set[str] = set()  # SKUs with a low-stock gauge
        self._outcomes: dict[str, Counter] = {}  # labelled children, looked up once
        self.reservations = Counter(
            "orderstream_inventory_reservations_total",
            "Reservation answers by outcome (reserved, or the refusal reason)",
            ["outcome"], registry=registry)
        self.expiries = Counter(
            "orderstream_inventory_hold_expiries_total", "Unpaid holds released at deadline",
            registry=registry)
        self.oversold = Counter(
            "orderstream_inventory_oversell_total",
            "Changes after which a SKU had reserved > on_hand or available < 0 while the change "
            "took stock: computed from the invariant after every change; must stay 0",
            ["sku"], registry=registry)
        self.batches = Histogram(
            "orderstream_inventory_batch_records", "Stock commands per hot-path batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000), registry=registry)
        self.batch_seconds = Histogram(
            "orderstream_inventory_batch_seconds",
            "Time to decide, record, send and commit one hot-path batch", registry=registry)
        self.reconcile_differences = Gauge(
            "orderstream_inventory_reconcile_differences",
            "Differences found by the last reconciliation, by kind", ["what"], registry=registry)
        self.reconcile_last = Gauge(
            "orderstream_inventory_reconcile_last_run_timestamp_seconds",
            "When the last reconciliation finished (Unix time)", registry=registry)
        self.at_safety_stock_available = Gauge(
            "orderstream_inventory_low_stock_available",
            "available of SKUs at or below their safety stock (not sellable)", ["sku"],
            registry=registry)
        self.at_safety_stock_on_hand = Gauge(
            "orderstream_inventory_low_stock_on_hand",
            "on_hand of SKUs at or below their safety stock (not sellable)", ["sku"],
            registry=registry)

    def _outcome(self, outcome: str) -> Counter:
        child = self._outcomes.get(outcome)
        if child is None:
            child = self._outcomes[outcome] = self.reservations.labels(outcome)
        return child

    def observe_reconciliation(self, report: Report) -> None:
        for what, n in report.counts.items():
            self.reconcile_differences.labels(what).set(n)
        self.reconcile_last.set_to_current_time()

    def observe(self, before: SkuState, decision: Decision) -> None:
        after = decision.state
        for event in decision.events:
            if event.event_type == "StockReserved":
                self._outcome("reserved").inc()
            elif event.event_type == "StockRejected":
                self._outcome(event.reason).inc()  # type: ignore[attr-defined]
            elif event.event_type == "ReservationExpired":
                self.expiries.inc()
        took_stock = after.reserved > before.reserved
        if took_stock and (after.reserved > after.on_hand or after.available < 0):
            self.oversold.labels(after.sku).inc()
        if not decision.changed:
            return
        if after.known and not after.sellable:
            self.at_safety_stock_available.labels(after.sku).set(after.available)
            self.at_safety_stock_on_hand.labels(after.sku).set(after.on_hand)
            self._low.add(after.sku)
        elif after.sku in self._low:
            self._low.discard(after.sku)
            for gauge in (self.at_safety_stock_available, self.at_safety_stock_on_hand):
                gauge.remove(after.sku)
