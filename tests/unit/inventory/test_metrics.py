"""Inventory metrics are computed from each decision, the oversell counter from the invariant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from services.inventory.domain import Decision, SkuState, adjust, new_state, reserve
from services.inventory.metrics import InventoryMetrics
from shared.events import ReserveStock, StockAdjusted

NOW = datetime(2026, 1, 20, tzinfo=UTC)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def stocked(units: int) -> SkuState:
    state = new_state("SKU-1", 0)
    return adjust(state, StockAdjusted(sku="SKU-1", delta=units, reason="restock",
                                       source="wms")).state


def reserve_one(state: SkuState, order: str) -> Decision:
    """A first reserve for ``order``'s line 1: no reservation exists for it yet."""
    return reserve(state, None, ReserveStock(order_id=order, line=1, sku="SKU-1", quantity=1),
                   now=NOW, hold=timedelta(minutes=30))


def test_outcomes_are_counted_and_a_sold_out_sku_shows_as_low_stock():
    registry = CollectorRegistry()
    metrics = InventoryMetrics(registry)
    state = stocked(1)
    first = reserve_one(state, "a")
    assert first.reservations["a:1"].state == "held"
    metrics.observe(state, first)
    second = reserve_one(first.state, "b")
    assert second.reservations["b:1"].state == "rejected"
    metrics.observe(first.state, second)
    assert value(registry, "orderstream_inventory_reservations_total", outcome="reserved") == 1
    assert value(registry, "orderstream_inventory_reservations_total",
                 outcome="not_sellable") == 1
    assert value(registry, "orderstream_inventory_low_stock_available", sku="SKU-1") == 0
    assert value(registry, "orderstream_inventory_low_stock_on_hand", sku="SKU-1") == 1
    assert value(registry, "orderstream_inventory_oversell_total", sku="SKU-1") == 0


def test_a_change_that_breaks_the_invariant_is_counted_as_an_oversell():
    registry = CollectorRegistry()
    metrics = InventoryMetrics(registry)
    state = stocked(1)
    broken = state.model_copy(update={"reserved": 2})  # what a buggy rule would produce
    metrics.observe(state, Decision(broken, changed=True))
    assert value(registry, "orderstream_inventory_oversell_total", sku="SKU-1") == 1
