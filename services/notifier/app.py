"""Notifier's Faust app and consume loop: wiring only."""

from __future__ import annotations

from pathlib import Path

from services.notifier.agents import NotifyHandler
from services.notifier.settings import NotifierSettings
from shared.batchloop import BatchLoop
from shared.runtime import Runtime
from shared.topics import ORDERS_STATUS

settings = NotifierSettings()
runtime = Runtime("notifier", settings, Path(__file__).parent / "migrations")
app = runtime.app
# No Faust agents (the loop has its own consumer, see shared/batchloop.py).
app.producer_only = True

loop = BatchLoop(runtime, NotifyHandler(), [ORDERS_STATUS], batch_max=settings.batch_max)
runtime.readiness = lambda: loop.ready


@app.task
async def notify_customers() -> None:
    """Runs for the worker's life; if it fails past its own retries, the worker stops and a
    restart redelivers the uncommitted batch."""
    await loop.run()
