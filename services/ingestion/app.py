"""Ingestion's Faust app, consume loop, dedupe state, metrics and HTTP API: wiring only."""

from __future__ import annotations

from pathlib import Path

from services.ingestion import api, domain
from services.ingestion.agents import IngestHandler
from services.ingestion.metrics import IngestionMetrics
from services.ingestion.settings import IngestionSettings
from shared.batchloop import BatchLoop
from shared.runtime import Runtime
from shared.state import KeyedState
from shared.timeutil import utc_now
from shared.topics import ORDERS_RAW

settings = IngestionSettings()
runtime = Runtime("ingestion", settings, Path(__file__).parent / "migrations")
app = runtime.app
# No Faust agents or tables (the loop has its own consumer, see shared/batchloop.py): Faust
# runs the web server, the producer the webhook sends with, and the life cycle.
app.producer_only = True
metrics = IngestionMetrics(runtime.registry)

#: "channel:channel_order_id" -> Seen (order id and last payment state)
seen_orders: KeyedState[domain.Seen] = KeyedState(
    "seen-orders", encode=domain.Seen.model_dump_json, decode=domain.Seen.model_validate_json,
    max_cached=settings.state_cache_max)
loop = BatchLoop(runtime, IngestHandler(settings.channel_zones, metrics, utc_now),
                 [ORDERS_RAW], state=seen_orders, batch_max=settings.batch_max)
runtime.readiness = lambda: loop.ready

api.register(runtime, settings)


@app.task
async def ingest_orders() -> None:
    """Runs for the worker's life; if it fails past its own retries, the worker stops and a
    restart redelivers the uncommitted batch."""
    await loop.run()
