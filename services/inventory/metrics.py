"""Every metric of the inventory service, on the service's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.inventory.domain import Decision, SkuState


class InventoryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
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
        self.at_safety_stock_available = Gauge(
            "orderstream_inventory_low_stock_available",
            "available of SKUs at or below their safety stock (not sellable)", ["sku"],
            registry=registry)
        self.at_safety_stock_on_hand = Gauge(
            "orderstream_inventory_low_stock_on_hand",
            "on_hand of SKUs at or below their safety stock (not sellable)", ["sku"],
            registry=registry)

    def observe(self, before: SkuState, decision: Decision) -> None:
        after = decision.state
        for event in decision.events:
            if event.event_type == "StockReserved":
                self.reservations.labels("reserved").inc()
            elif event.event_type == "StockRejected":
                self.reservations.labels(event.reason).inc()
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
        else:
            for gauge in (self.at_safety_stock_available, self.at_safety_stock_on_hand):
                try:
                    gauge.remove(after.sku)
                except KeyError:
                    pass  # it was not low before either
