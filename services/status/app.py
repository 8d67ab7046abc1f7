"""Status-tracking's Faust app, consume loop, order state, metrics, timers and HTTP API:
wiring only."""

from __future__ import annotations

from pathlib import Path

from services.status import api
from services.status.agents import State, TrackHandler, decode_state, encode_state
from services.status.metrics import StatusMetrics
from services.status.poller import Poller
from services.status.settings import StatusSettings
from services.status.stale import StaleMonitor
from shared.batchloop import BatchLoop
from shared.runtime import Runtime
from shared.state import KeyedState
from shared.timeutil import utc_now
from shared.topics import FULFILMENT_EVENTS, INVENTORY_EVENTS, ORDERS_SUBMITTED, PAYMENTS_EVENTS

settings = StatusSettings()
runtime = Runtime("status", settings, Path(__file__).parent / "migrations")
app = runtime.app
# No Faust agents or tables (the loop has its own consumer, see shared/batchloop.py): Faust
# runs the web views, timers, the poller task and the life cycle.
app.producer_only = True
metrics = StatusMetrics(runtime.registry)

#: order_id -> OrderState, or Waiting for news about an order not submitted yet
orders: KeyedState[State] = KeyedState("orders", encode=encode_state, decode=decode_state,
                                       max_cached=settings.state_cache_max)
#: Every input is keyed by order_id: one loop reads them all, so one order moves serially.
loop = BatchLoop(
    runtime,
    TrackHandler(settings.poll_interval, settings.stale_after, metrics, utc_now),
    [ORDERS_SUBMITTED, INVENTORY_EVENTS, PAYMENTS_EVENTS, FULFILMENT_EVENTS],
    state=orders, batch_max=settings.batch_max)
runtime.readiness = lambda: loop.ready

poller = Poller(runtime, settings, metrics)
monitor = StaleMonitor(runtime, settings, metrics)
api.register(runtime, settings, metrics)


@app.task
async def track_orders() -> None:
    """Runs for the worker's life; if it fails past its own retries, the worker stops and a
    restart redelivers the uncommitted batch."""
    await loop.run()


@app.task
async def poll_quiet_parcels() -> None:
    """Runs for the worker's life: asks carriers about parcels with no news for a while.
    Every worker runs one; the database hands each parcel to one of them at a time."""
    await poller.run()


@app.timer(interval=settings.stale_check_seconds)
async def raise_stale_alerts() -> None:
    await monitor.tick()
