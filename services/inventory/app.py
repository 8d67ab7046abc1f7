"""Inventory's Faust app: the hot path, its HTTP pages and timers. Wiring only."""

from __future__ import annotations

from pathlib import Path

from services.inventory import api
from services.inventory.hotpath import HotPath
from services.inventory.metrics import InventoryMetrics
from services.inventory.settings import InventorySettings
from shared.runtime import Runtime
from shared.topics import INVENTORY_STATE

settings = InventorySettings()
runtime = Runtime("inventory", settings, Path(__file__).parent / "migrations")
app = runtime.app
# No Faust agents or tables here (the hot path has its own consumer): Faust runs the web
# server, the producer, tasks and timers only; its consumer would refuse an empty topic set.
app.producer_only = True
metrics = InventoryMetrics(runtime.registry)

#: Reads inventory.commands and stock.adjustments (both keyed by SKU) in batches and owns
#: the per-partition stock books (see hotpath.py for why this is not a Faust agent).
hot = HotPath(runtime, settings, metrics)
runtime.readiness = lambda: hot.ready
runtime.state_topics.append(INVENTORY_STATE)

levels_view = api.register(runtime)
