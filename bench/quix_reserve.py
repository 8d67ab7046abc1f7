"""The hot-SKU reservation written with Quix Streams, as a fourth benchmark contender.

Written the way its users write it: one ``Application``, a ``StreamingDataFrame`` over
``inventory.commands`` concatenated with one over ``stock.adjustments`` (both keyed by SKU,
co-partitioned, so one SKU's commands and adjustments meet in one stateful step), one
``sdf.apply(reserve, stateful=True)`` on RocksDB state (Quix's default store, with its own
changelog topic), and ``to_topic`` with the output topic picked per record. Quix's defaults
otherwise: at-least-once, a checkpoint (producer flush, changelog flush, offset commit) every
5 s, JSON (de)serialisation of the values.

The state is Quix's per-key state, so everything below is per SKU (the message key):

- ``"on_hand"`` / ``"reserved"``: the SKU's counts;
- ``"r:<order_id>:<line>"``: the answer a reservation gave, so a replayed command (at-least-
  once redelivers everything since the last checkpoint after a crash) repeats it unchanged
  and changes nothing;
- ``"a:<event_id>"``: an applied adjustment (replays change nothing either).

It reads and answers like the other contenders: the same prefixed topics, the same JSON
(``ReserveStock`` / ``StockAdjusted`` in; ``StockReserved`` / ``StockRejected`` keyed by
order id, with the same deterministic event ids, on ``inventory.events``; a ``StockLevel``
keyed by SKU on ``stock.levels`` after each adjustment, which the harness waits for). Each
value is validated with the ``shared.events`` models and answers are dumped from them, as
the other contenders do; ``BENCH_QUIX_CODEC=dicts`` uses the deserialised dicts as they are
(no pydantic), to see what validation costs here. Records no ledger (no PostgreSQL).

Quix reads topic configs with DescribeConfigs (``retention.ms``) and creates its changelog
topic, so it needs a real Kafka broker: it does not start on the embedded Tansu broker.

Run: ``python -m bench.quix_reserve`` with ``KAFKA_BOOTSTRAP_SERVERS`` and
``ORDERSTREAM_*``; consumer group ``<prefix>bench-quix``, state under the data dir.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from quixstreams import Application, State

from shared.clients import tune_gc
from shared.events import (
    ReserveStock,
    StockAdjusted,
    StockLevel,
    StockRejected,
    StockReserved,
    derive_id,
)
from shared.settings import ConnectionSettings
from shared.timeutil import utc_now
from shared.topics import INVENTORY_COMMANDS, INVENTORY_EVENTS, STOCK_ADJUSTMENTS, STOCK_LEVELS

HOLD = timedelta(minutes=30)
MODELS = os.environ.get("BENCH_QUIX_CODEC", "models") != "dicts"


def _dump(event: Any) -> dict[str, Any]:
    return event.model_dump(mode="json")


def reserve(value: dict[str, Any], state: State) -> dict[str, Any]:
    """One command or adjustment for the SKU whose state ``state`` is: its answer (a
    StockReserved / StockRejected) or, for an adjustment, the SKU's new StockLevel."""
    if value.get("event_type") == "StockAdjusted":
        return _adjust(value, state)
    cmd = ReserveStock.model_validate(value) if MODELS else None
    order_id, line = value["order_id"], value["line"]
    key = f"r:{order_id}:{line}"
    answered = state.get(key)
    if answered is not None:
        return answered  # a replay: the same answer, nothing changes
    quantity = value["quantity"]
    on_hand, reserved = state.get("on_hand", 0), state.get("reserved", 0)
    available = on_hand - reserved
    common = {"event_id": derive_id("reserve-outcome", order_id, line),
              "correlation_id": value.get("correlation_id", ""), "order_id": order_id,
              "line": line, "sku": value["sku"], "quantity": quantity}
    if available >= quantity:
        hold_until = (cmd.hold_until if cmd is not None else None) or utc_now() + HOLD
        if MODELS:
            answer = _dump(StockReserved(hold_until=hold_until, **common))
        else:
            answer = {"event_type": "StockReserved", "schema_version": 1,
                      "occurred_at": utc_now().isoformat(), "hold_until": hold_until.isoformat(),
                      **common}
        state.set("reserved", reserved + quantity)
    else:
        rejected = {"reason": "insufficient_stock", "available": max(available, 0)}
        if MODELS:
            answer = _dump(StockRejected(**rejected, **common))
        else:
            answer = {"event_type": "StockRejected", "schema_version": 1,
                      "occurred_at": utc_now().isoformat(), **rejected, **common}
    state.set(key, answer)
    return answer


def _adjust(value: dict[str, Any], state: State) -> dict[str, Any]:
    cmd = StockAdjusted.model_validate(value) if MODELS else None
    event_id, sku = value["event_id"], value["sku"]
    on_hand, reserved = state.get("on_hand", 0), state.get("reserved", 0)
    if state.get(f"a:{event_id}") is None:  # not applied before
        delta = value.get("delta")
        on_hand = on_hand + delta if delta is not None else value["absolute"]
        state.set("on_hand", on_hand)
        state.set(f"a:{event_id}", True)
    available = on_hand - reserved
    level = {"event_id": derive_id("level", event_id, sku), "sku": sku, "on_hand": on_hand,
             "reserved": reserved, "available": available, "safety_stock": 0,
             "sellable": available > 0}
    if cmd is not None:
        return _dump(StockLevel(**level))
    return {"event_type": "StockLevel", "schema_version": 1,
            "occurred_at": utc_now().isoformat(), "correlation_id": "", **level}


def build(conn: ConnectionSettings) -> Application:
    app = Application(
        broker_address=",".join(conn.bootstrap_list),
        consumer_group=conn.topic("bench-quix"),
        auto_offset_reset="earliest",
        state_dir=str((conn.data_dir / conn.topic("bench-quix")).resolve()),
        # The same consumer fetch wait as every other contender (librdkafka's default: 500).
        consumer_extra_config={"fetch.wait.max.ms": conn.kafka_fetch_max_wait_ms},
        loglevel="WARNING",
    )
    # The catalogue topics exist (created by the harness): Quix reads their configs and
    # creates only its own changelog topic.
    commands = app.topic(conn.topic(INVENTORY_COMMANDS))
    adjustments = app.topic(conn.topic(STOCK_ADJUSTMENTS))
    answers = app.topic(conn.topic(INVENTORY_EVENTS), key_serializer="str")
    levels = app.topic(conn.topic(STOCK_LEVELS), key_serializer="str")

    def destination(value: dict[str, Any], *_: Any) -> Any:
        return levels if value["event_type"] == "StockLevel" else answers

    sdf = app.dataframe(commands).concat(app.dataframe(adjustments))
    sdf = sdf.apply(reserve, stateful=True)
    sdf.to_topic(destination, key=lambda v: v.get("order_id") or v["sku"])
    return app


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    app = build(ConnectionSettings())
    tune_gc()
    app.run()


if __name__ == "__main__":
    main()
