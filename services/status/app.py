"""Status-tracking's Faust app, topics and the order table: wiring only."""

from __future__ import annotations

from pathlib import Path

from services.status.settings import StatusSettings
from shared.runtime import Runtime
from shared.topics import INVENTORY_EVENTS, ORDERS_SUBMITTED

settings = StatusSettings()
runtime = Runtime("status", settings, Path(__file__).parent / "migrations")
app = runtime.app

#: Every input is keyed by order_id: one agent reads them all, so one order moves serially.
order_inputs = runtime.topic(ORDERS_SUBMITTED, INVENTORY_EVENTS)
#: order_id -> OrderState (as JSON)
orders = runtime.table("orders")
