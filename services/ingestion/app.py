"""Ingestion's Faust app, topics, table, metrics and HTTP API: wiring only."""

from __future__ import annotations

from pathlib import Path

from services.ingestion import api
from services.ingestion.metrics import IngestionMetrics
from services.ingestion.settings import IngestionSettings
from shared.runtime import Runtime
from shared.topics import ORDERS_RAW

settings = IngestionSettings()
runtime = Runtime("ingestion", settings, Path(__file__).parent / "migrations")
app = runtime.app
metrics = IngestionMetrics(runtime.registry)

raw_orders = runtime.topic(ORDERS_RAW)
#: "channel:channel_order_id" -> Seen (order id and last payment state) as JSON
seen_orders = runtime.table("seen-orders")

api.register(runtime, settings)
