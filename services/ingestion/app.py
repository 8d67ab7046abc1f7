"""Ingestion's Faust app, topics and tables: wiring only."""

from __future__ import annotations

from pathlib import Path

from services.ingestion.settings import IngestionSettings
from shared.runtime import Runtime
from shared.topics import ORDERS_RAW

settings = IngestionSettings()
runtime = Runtime("ingestion", settings, Path(__file__).parent / "migrations")
app = runtime.app

raw_orders = runtime.topic(ORDERS_RAW)
#: (channel:channel_order_id) -> {"order_id", "event_id"}: orders already turned into events.
seen_orders = runtime.table("seen-orders")
