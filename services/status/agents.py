"""Status-tracking's stream adapter and background tasks: load the order, decide, emit,
record, save; poll quiet parcels; raise stale-order alerts. The rules live in domain.py."""

from __future__ import annotations

import logging

from services.status import api, domain, store
from services.status.app import app, metrics, order_inputs, orders, runtime, settings
from services.status.poller import Poller
from services.status.stale import StaleMonitor
from shared.runtime import Record
from shared.timeutil import utc_now
from shared.topics import INVENTORY_COMMANDS, ORDERS_STATUS

log = logging.getLogger(__name__)

poller = Poller(runtime, settings, metrics)
monitor = StaleMonitor(runtime, settings, metrics)
api.register(runtime, settings, metrics)


async def track(record: Record) -> None:
    event = record.value
    saved = orders.get(event.order_id)
    if saved is not None and event.event_id in saved.get("seen", ()):
        return  # a duplicate (decide() would say so too): skip loading the whole order
    before = domain.load_state(saved)
    decision = domain.decide(before, event)
    state = decision.state
    if state is before:
        return  # a duplicate: nothing to do, nothing to write
    for command in decision.commands:
        await runtime.send(INVENTORY_COMMANDS, command.sku, command)
    for change in decision.changes:
        await runtime.send(ORDERS_STATUS, change.order_id, change)
    schedule = None
    if isinstance(state, domain.OrderState):
        schedule = store.Schedule(domain.next_poll(state, settings.poll_interval),
                                  domain.deadline(state, settings.stale_after))
    await store.record(await runtime.db.pool(), state, schedule, decision.changes,
                       decision.notes, decision.scans,
                       created=isinstance(state, domain.OrderState)
                       and not isinstance(before, domain.OrderState))
    _observe(before, decision)
    if state is not None:
        orders[event.order_id] = state.model_dump(mode="json")  # last: replays re-decide


def _observe(before: domain.OrderState | domain.Waiting | None,
             decision: domain.Decision) -> None:
    now = utc_now()
    since = before.status_since if isinstance(before, domain.OrderState) else None
    for change in decision.changes:
        frm = change.from_status.value if change.from_status else "none"
        metrics.transitions.labels(frm, change.to_status.value).inc()
        if since is not None and change.from_status is not None:
            metrics.time_in_status.labels(change.from_status.value).observe(
                max(0.0, (change.at - since).total_seconds()))
        since = change.at
    for note in decision.notes:
        metrics.notes.labels(note.reported).inc()
    vias = {}
    for scan in decision.scans:
        via = store.via_of(scan.source)
        vias[scan.event_id] = via
        metrics.carrier_updates.labels(scan.carrier or "none", via).inc()
    for change in decision.changes:
        via = vias.get(change.cause_event_id)
        if via is not None and via != "wms":
            metrics.scan_lag.labels(via).observe(max(0.0, (now - change.at).total_seconds()))


@app.agent(order_inputs, concurrency=1)
async def track_orders(stream):
    await runtime.consume(stream, track)


@app.task
async def poll_quiet_parcels() -> None:
    """Runs for the worker's life: asks carriers about parcels with no news for a while.
    Every worker runs one; the database hands each parcel to one of them at a time."""
    await poller.run()


@app.timer(interval=settings.stale_check_seconds)
async def raise_stale_alerts() -> None:
    await monitor.tick()
