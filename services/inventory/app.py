"""Inventory's Faust app, topics and the SKU-partitioned stock table: wiring only."""

from __future__ import annotations

from pathlib import Path

from services.inventory import api
from services.inventory.metrics import InventoryMetrics
from services.inventory.settings import InventorySettings
from shared.runtime import Runtime
from shared.topics import INVENTORY_COMMANDS, STOCK_ADJUSTMENTS

settings = InventorySettings()
runtime = Runtime("inventory", settings, Path(__file__).parent / "migrations")
app = runtime.app
metrics = InventoryMetrics(runtime.registry)

#: Both inputs are keyed by SKU: one agent reads both, so one SKU's changes are serial.
stock_inputs = runtime.topic(INVENTORY_COMMANDS, STOCK_ADJUSTMENTS)
#: sku -> SkuState (as JSON): counts, safety stock and the SKU's reservations.
stock = runtime.table("stock")

levels_view = api.register(runtime)
