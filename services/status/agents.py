"""Status-tracking's stream adapter: load the order, decide, emit, record, save."""

from __future__ import annotations

from services.status import domain, store
from services.status.app import app, order_inputs, orders, runtime
from shared.events import InventoryOutcome, OrderSubmitted
from shared.runtime import Record
from shared.topics import INVENTORY_COMMANDS, ORDERS_STATUS


async def track(record: Record) -> None:
    event = record.value
    saved = orders.get(event.order_id)
    state = domain.OrderState.model_validate(saved) if saved is not None else None
    if isinstance(event, OrderSubmitted):
        decision = domain.on_submitted(state, event)
    elif isinstance(event, InventoryOutcome):
        decision = domain.on_inventory(state, event)
    else:
        return
    for command in decision.commands:
        await runtime.send(INVENTORY_COMMANDS, command.sku, command)
    for change in decision.changes:
        await runtime.send(ORDERS_STATUS, change.order_id, change)
    await store.record_changes(await runtime.db.pool(), decision.changes)
    if decision.state is not None and decision.state is not state:
        orders[event.order_id] = decision.state.model_dump(mode="json")  # last: replays re-decide


@app.agent(order_inputs, concurrency=1)
async def track_orders(stream):
    await runtime.consume(stream, track)
