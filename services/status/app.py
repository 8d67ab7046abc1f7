"""Status-tracking's Faust app, topics, the order table, metrics and clients: wiring only."""

from __future__ import annotations

from pathlib import Path

from services.status.metrics import StatusMetrics
from services.status.settings import StatusSettings
from shared.runtime import Runtime
from shared.topics import FULFILMENT_EVENTS, INVENTORY_EVENTS, ORDERS_SUBMITTED, PAYMENTS_EVENTS

settings = StatusSettings()
runtime = Runtime("status", settings, Path(__file__).parent / "migrations")
app = runtime.app
metrics = StatusMetrics(runtime.registry)

#: Every input is keyed by order_id: one agent reads them all, so one order moves serially.
order_inputs = runtime.topic(ORDERS_SUBMITTED, INVENTORY_EVENTS, PAYMENTS_EVENTS,
                             FULFILMENT_EVENTS)
#: order_id -> OrderState, or Waiting for news about an order not submitted yet (as JSON)
orders = runtime.table("orders")
