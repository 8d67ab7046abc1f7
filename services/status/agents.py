"""Status-tracking's stream handler: load the order, decide, emit, record, save. The rules
live in domain.py; the batching in shared/batchloop.py; the wiring in app.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, MutableMapping
from datetime import datetime, timedelta

import asyncpg

from services.status import domain, store
from services.status.metrics import StatusMetrics
from shared.batchloop import Effects
from shared.events import OrderStatus
from shared.metrics import children
from shared.policy import Record
from shared.topics import INVENTORY_COMMANDS, ORDERS_STATUS

State = domain.OrderState | domain.Waiting


def encode_state(state: State) -> str:
    return state.model_dump_json()


def decode_state(raw: str) -> State:
    state = domain.load_state(json.loads(raw))
    assert state is not None
    return state


class TrackHandler:
    """Every input about an order (all four topics are keyed by order_id) → the order's new
    state, inventory commands, status changes and history rows; the order table
    (order_id → :class:`domain.OrderState`, or :class:`domain.Waiting` for news about an
    order not submitted yet) is its state."""

    def __init__(self, poll_interval: timedelta, stale_after: Mapping[OrderStatus, timedelta],
                 metrics: StatusMetrics, clock: Callable[[], datetime]) -> None:
        self.poll_interval = poll_interval
        self.stale_after = stale_after
        self.clock = clock
        self._transitions = children(metrics.transitions)
        self._time_in = children(metrics.time_in_status)
        self._notes = children(metrics.notes)
        self._updates = children(metrics.carrier_updates)
        self._scan_lag = children(metrics.scan_lag)

    def state_key(self, record: Record) -> str | None:
        return record.value.order_id

    def handle(self, record: Record, table: MutableMapping[str, State],
               effects: Effects) -> None:
        event = record.value
        before = table.get(event.order_id)
        if isinstance(before, domain.OrderState) and event.event_id in before.seen:
            return  # a duplicate (decide() would say so too): skip the whole decision
        decision = domain.decide(before, event)
        state = decision.state
        if state is before:
            return  # a duplicate: nothing to do, nothing to write
        for command in decision.commands:
            effects.emit(INVENTORY_COMMANDS, command.sku, command)
        for change in decision.changes:
            effects.emit(ORDERS_STATUS, change.order_id, change)
        schedule = None
        if isinstance(state, domain.OrderState):
            schedule = store.Schedule(domain.next_poll(state, self.poll_interval),
                                      domain.deadline(state, self.stale_after))
        effects.write(store.Written(
            state, schedule, decision.changes, decision.notes, decision.scans,
            created=isinstance(state, domain.OrderState)
            and not isinstance(before, domain.OrderState)))
        self._observe(before, decision)
        if state is not None:
            table[event.order_id] = state  # last: a redelivery before the save re-decides

    async def write(self, con: asyncpg.Connection, rows: list[store.Written]) -> None:
        await store.record_all(con, rows)

    def _observe(self, before: State | None, decision: domain.Decision) -> None:
        since = before.status_since if isinstance(before, domain.OrderState) else None
        for change in decision.changes:
            frm = change.from_status.value if change.from_status else "none"
            self._transitions(frm, change.to_status.value).inc()
            if since is not None and change.from_status is not None:
                self._time_in(change.from_status.value).observe(
                    max(0.0, (change.at - since).total_seconds()))
            since = change.at
        for note in decision.notes:
            self._notes(note.reported).inc()
        if not decision.scans:
            return
        now = self.clock()
        vias = {}
        for scan in decision.scans:
            via = store.via_of(scan.source)
            vias[scan.event_id] = via
            self._updates(scan.carrier or "none", via).inc()
        for change in decision.changes:
            via = vias.get(change.cause_event_id)
            if via is not None and via != "wms":
                self._scan_lag(via).observe(max(0.0, (now - change.at).total_seconds()))
