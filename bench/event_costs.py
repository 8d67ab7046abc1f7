"""What the flow's typed events alone cost per order, against the CPU the flow's targets leave.

The flow benchmark (``bench/flow.py``) says how many CPU seconds each process spends per
1,000 orders. This asks a narrower question: how much of that is only the event models, the
part no rule or database can remove while the topics carry pydantic-validated JSON. For the
same seeded orders as the flow benchmark, it times, in this one process, exactly the model
work each service does per order, with the services' own code:

- ingestion: the raw payload through the channel adapter (``read``), the ``OrderSubmitted``
  built from it (``to_submitted``) and encoded;
- status: ``OrderSubmitted`` and one ``StockReserved`` per line decoded, one ``ReserveStock``
  per line and one ``OrderStatusChanged`` per change (SUBMITTED, RESERVED, and PAID when
  paid) built and encoded;
- inventory: each ``ReserveStock`` decoded, its ``StockReserved`` built and encoded;
- notifier: the ``OrderSubmitted`` (for its projection) and each ``OrderStatusChanged``
  decoded.

Then, from a flow result file (``--flow``, default ``bench/results/flow.json``), it prints
the budget: the CPU per 1,000 orders that the parts outside the services take (broker,
PostgreSQL, harness), what the logic-free relay's four hops take, and so how much CPU per
order the services may spend beyond the relay's hops for the burst to reach a given share of
the relay's throughput on the same two cores.

    python -m bench.event_costs [--orders 5000] [--flow bench/results/flow.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import orders as gen
from services.ingestion.domain import read, to_submitted
from services.ingestion.settings import IngestionSettings
from shared import codec
from shared.events import (
    OrderStatus,
    OrderStatusChanged,
    OrderSubmitted,
    ReserveStock,
    StockReserved,
    derive_id,
)
from shared.topics import INVENTORY_COMMANDS, INVENTORY_EVENTS, ORDERS_STATUS, ORDERS_SUBMITTED

OUTSIDE = ("broker", "postgres", "harness")
HOPS = ("ingestion", "inventory", "status", "notifier")


def _best(step: Callable[[], None], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return min(times)


def _changes(order: OrderSubmitted, at: datetime) -> list[OrderStatusChanged]:
    path = [OrderStatus.SUBMITTED, OrderStatus.RESERVED]
    if order.paid:
        path.append(OrderStatus.PAID)
    before: OrderStatus | None = None
    out = []
    for status in path:
        out.append(OrderStatusChanged(
            event_id=derive_id("status", order.order_id, status), correlation_id=order.order_id,
            order_id=order.order_id, channel=order.channel,
            channel_order_id=order.channel_order_id, customer_id=order.customer.customer_id,
            from_status=before, to_status=status, at=at, cause_event_id=order.event_id))
        before = status
    return out


def measure(count: int, seed: int) -> dict[str, float]:
    """Microseconds of model work per order, per service, over ``count`` seeded orders."""
    zones = IngestionSettings().channel_zones
    placed = time.time()
    drawn = gen.generate(count, seed)
    raws = [(o.channel, gen.encode(o, placed)) for o in drawn]
    submitted = [to_submitted(read(ch, raw, zone=zones.get(ch, "UTC"))) for ch, raw in raws]
    at = datetime.now(UTC)

    def reserves(order: OrderSubmitted) -> list[ReserveStock]:
        return [ReserveStock(event_id=derive_id("reserve", order.order_id, ln.line),
                             correlation_id=order.order_id, order_id=order.order_id,
                             line=ln.line, sku=ln.sku, quantity=ln.quantity, paid=order.paid)
                for ln in order.lines]

    def answers(order: OrderSubmitted) -> list[StockReserved]:
        return [StockReserved(event_id=derive_id("reserved", r.order_id, r.line),
                              correlation_id=r.order_id, order_id=r.order_id, line=r.line,
                              sku=r.sku, quantity=r.quantity, confirmed=r.paid)
                for r in reserves(order)]

    submitted_bytes = [codec.encode(o) for o in submitted]
    command_bytes = [codec.encode(r) for o in submitted for r in reserves(o)]
    answer_bytes = [codec.encode(a) for o in submitted for a in answers(o)]
    change_bytes = [codec.encode(c) for o in submitted for c in _changes(o, at)]

    def ingestion() -> None:
        for ch, raw in raws:
            codec.encode(to_submitted(read(ch, raw, zone=zones.get(ch, "UTC"))))

    def status() -> None:
        for data in submitted_bytes:
            codec.decode(ORDERS_SUBMITTED, data)
        for data in answer_bytes:
            codec.decode(INVENTORY_EVENTS, data)
        for order in submitted:
            for event in (*reserves(order), *_changes(order, at)):
                codec.encode(event)

    def inventory() -> None:
        for data in command_bytes:
            codec.decode(INVENTORY_COMMANDS, data)
        for order in submitted:
            for answer in answers(order):
                codec.encode(answer)

    def notifier() -> None:
        for data in submitted_bytes:
            codec.decode(ORDERS_SUBMITTED, data)
        for data in change_bytes:
            codec.decode(ORDERS_STATUS, data)

    return {name: _best(step) / count * 1e6 for name, step in
            (("ingestion", ingestion), ("status", status), ("inventory", inventory),
             ("notifier", notifier))}


def budget(flow: dict, share: float) -> dict[str, float]:
    """CPU seconds per 1,000 orders, from a flow result: what the burst's outside parts and
    the relay's hops take, and what is left for the services beyond the relay's hops at
    ``share`` of the relay's throughput, at the relay's own use of the two cores."""
    runs = {(r["contender"], r["run"]): r for r in flow["runs"]}
    ours, relay = runs[("ours", "burst")], runs[("relay", "burst")]
    relay_cpu = sum(relay["cpu_per_1000"].values())
    cores_used = relay_cpu * relay["throughput"] / 1000  # the relay keeps them this busy
    target = share * relay["throughput"]
    allowed = cores_used / target * 1000  # CPU s per 1,000 orders at the target rate
    outside = sum(ours["cpu_per_1000"][p] for p in OUTSIDE)
    hops = sum(relay["cpu_per_1000"][p] for p in HOPS)
    return {"relay_orders_per_s": relay["throughput"], "target_orders_per_s": target,
            "allowed": allowed, "outside": outside, "relay_hops": hops,
            "left_us_per_order": (allowed - outside - hops) * 1000,
            "max_orders_per_s_at_relay_hops": cores_used / (outside + hops) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--flow", type=Path, default=Path("bench/results/flow.json"))
    args = parser.parse_args()
    costs = measure(args.orders, args.seed)
    print(f"event model work per order (best of 3 over {args.orders:,} seeded orders), µs:")
    for name, us in costs.items():
        print(f"  {name:10s} {us:6.1f}")
    print(f"  {'all':10s} {sum(costs.values()):6.1f}")
    flow = json.loads(args.flow.read_text())
    print(f"\nbudget from {args.flow} (commit {flow.get('source', '?')}), "
          "CPU s per 1,000 orders in the burst:")
    for share in (0.5, 5000 / budget(flow, 1.0)["relay_orders_per_s"]):
        b = budget(flow, share)
        print(f"  at {b['target_orders_per_s']:,.0f} orders/s ({share:.2f}x the relay's "
              f"{b['relay_orders_per_s']:,.0f}): allowed {b['allowed']:.3f}, outside the "
              f"services {b['outside']:.3f}, the relay's hops {b['relay_hops']:.3f}; "
              f"left for the services beyond the relay's hops: "
              f"{b['left_us_per_order']:.0f} µs per order")
    b = budget(flow, 1.0)
    print(f"  services costing exactly the relay's hops: at most "
          f"{b['max_orders_per_s_at_relay_hops']:,.0f} orders/s")


if __name__ == "__main__":
    main()
