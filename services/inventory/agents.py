"""Inventory's stream adapter: load the SKU, decide, emit, record in the ledger, save."""

from __future__ import annotations

from services.inventory import domain, store
from services.inventory.app import app, metrics, runtime, settings, stock, stock_inputs
from shared.codec import InvalidRecord
from shared.events import (
    CommitStock,
    ConfirmReservation,
    ExpireHolds,
    ReleaseReservation,
    ReserveStock,
    SafetyStockSet,
    StockAdjusted,
    derive_id,
)
from shared.runtime import Record
from shared.timeutil import utc_now
from shared.topics import INVENTORY_COMMANDS, INVENTORY_EVENTS, STOCK_LEVELS


def decide(state: domain.SkuState, event: object) -> domain.Decision:
    now = utc_now()
    match event:
        case ReserveStock():
            return domain.reserve(state, event, now=now, hold=settings.hold)
        case ReleaseReservation():
            return domain.release(state, event, now=now)
        case ConfirmReservation():
            return domain.confirm(state, event)
        case CommitStock():
            return domain.commit(state, event, now=now)
        case ExpireHolds():
            return domain.expire(state, event)
        case StockAdjusted():
            return domain.adjust(state, event)
        case SafetyStockSet():
            return domain.set_safety_stock(state, event)
    raise InvalidRecord("unsupported_command",
                        f"{type(event).__name__} is not handled by this inventory version")


async def apply(record: Record) -> None:
    event = record.value
    if record.key != event.sku:
        raise InvalidRecord("wrong_key", f"key must be the SKU {event.sku!r}, got {record.key!r}")
    saved = stock.get(event.sku)
    state = (domain.SkuState.model_validate(saved) if saved is not None
             else domain.new_state(event.sku, settings.default_safety_stock))
    decision = decide(state, event)
    metrics.observe(state, decision)
    for outcome in decision.events:
        await runtime.send(INVENTORY_EVENTS, outcome.order_id, outcome)
    if decision.changed:
        await runtime.send(STOCK_LEVELS, event.sku, decision.level(event.event_id))
    await store.append_movements(await runtime.db.pool(), decision.movements)
    if decision.state is not state:
        stock[event.sku] = decision.state.model_dump(mode="json")  # last: replays re-decide


@app.agent(stock_inputs, concurrency=1)
async def apply_stock_changes(stream):
    await runtime.consume(stream, apply)


@app.timer(interval=settings.expiry_scan_seconds)
async def expire_unpaid_holds() -> None:
    """Find SKUs with due unpaid holds and send each an ExpireHolds tick keyed by the SKU:
    the release itself then happens in the SKU's partition loop, once, and a restart or
    rebalance loses nothing because the deadlines live in the table."""
    now = utc_now()
    for sku, saved in list(stock.items()):
        if domain.due_holds(domain.SkuState.model_validate(saved), now):
            tick = ExpireHolds(event_id=derive_id("expire-tick", sku, now.isoformat()),
                               sku=sku, due_at=now)
            await runtime.send(INVENTORY_COMMANDS, sku, tick)
