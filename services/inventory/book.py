"""The stock book of one partition: every SKU's counts and reservations in memory, the
batch of changes since the last write, and the changelog records that make it durable.

Pure (no Kafka, no database): the hot path feeds it decoded commands and writes what it
returns. The book is what makes batching safe.

**Changelog layout.** One compacted topic, co-partitioned with the inputs; JSON keys:

- ``["s", sku]`` → the SKU's counts and, per input topic, the offset of the last command
  whose effect the counts include (``applied``);
- ``["r", sku, "order:line"]`` → a reservation, the input ``(topic, offset)`` that last
  wrote it, and the net ``(on_hand, reserved)`` delta that write caused;
- ``["a", sku, event_id]`` → an applied adjustment: its source offset and its delta.

**Why a crash cannot skew the counts.** A batch writes its effects (reservations,
adjustments) first and the counts of the SKUs it touched last, all to the partition that
owns the SKU. A partition's log keeps the order the producer sent, so after a crash the
durable part of a batch is a prefix: if a SKU's counts record survived, every effect before
it did too. Restoring rolls forward what a lost counts record would have said: every effect
whose source offset is above the counts' ``applied`` offset adds its delta once
(:meth:`PartitionBook.restore` returns the repaired counts, to be written before anything
else). The commands of the lost batch are then redelivered (their offsets were not
committed) and find their reservations already written: they re-send their answers and
change nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from services.inventory import domain
from services.inventory.domain import Decision, Reservation, SkuState
from shared.codec import InvalidRecord
from shared.events import (
    CommitStock,
    ConfirmReservation,
    ExpireHolds,
    ReleaseReservation,
    ReserveStock,
    SafetyStockSet,
    StockAdjusted,
)

Key = bytes
Value = bytes


_string = encode_basestring_ascii  # a JSON string literal, fast (the json module's C helper)


def counts_key(sku: str) -> Key:
    return f'["s",{_string(sku)}]'.encode()


def reservation_record_key(sku: str, key: str) -> Key:
    return f'["r",{_string(sku)},{_string(key)}]'.encode()


def adjustment_key(sku: str, event_id: str) -> Key:
    return f'["a",{_string(sku)},{_string(event_id)}]'.encode()


def _to_json(res: Reservation) -> bytes:
    return res.__pydantic_serializer__.to_json(res)


def _src(topic: str, offset: int) -> bytes:
    return f"[{_string(topic)},{int(offset)}]".encode()


@dataclass
class _Effect:
    """A reservation or adjustment written in the current batch (coalesced per key)."""

    sku: str
    body: bytes  # the record's JSON members except "d", e.g. b'"r":{...},"src":["t",7]'
    on_hand: int = 0
    reserved: int = 0


@dataclass
class PartitionBook:
    """The state of one partition. Not thread-safe; one batch at a time."""

    default_safety_stock: int = 0
    hold: timedelta = timedelta(minutes=30)
    counts: dict[str, SkuState] = field(default_factory=dict)
    #: sku -> input topic -> offset of the last command the counts include
    applied: dict[str, dict[str, int]] = field(default_factory=dict)
    reservations: dict[str, dict[str, Reservation]] = field(default_factory=dict)
    adjustments: dict[str, set[str]] = field(default_factory=dict)
    #: sku -> keys of its unpaid holds (the expiry timer's index)
    holds: dict[str, set[str]] = field(default_factory=dict)
    _effects: dict[Key, _Effect] = field(default_factory=dict)
    _touched: dict[str, None] = field(default_factory=dict)  # SKUs of this batch, in order

    # --- reading ----------------------------------------------------------------------------

    def state(self, sku: str) -> SkuState:
        found = self.counts.get(sku)
        return found if found is not None else domain.new_state(sku, self.default_safety_stock)

    def reservation(self, sku: str, key: str) -> Reservation | None:
        return self.reservations.get(sku, {}).get(key)

    def due_skus(self, now: datetime) -> list[str]:
        """SKUs with at least one unpaid hold past its deadline."""
        return [sku for sku, keys in self.holds.items()
                if any(self.reservations[sku][k].due(now) for k in keys)]

    # --- deciding ---------------------------------------------------------------------------

    def apply(self, topic: str, offset: int, cmd: object, now: datetime) -> Decision:
        """Decide ``cmd`` (read from ``topic`` at ``offset``) against the book and keep its
        effects for the batch's changelog. Raises InvalidRecord (nothing changed) when the
        command cannot apply."""
        sku: str = cmd.sku  # type: ignore[attr-defined]
        state = self.state(sku)
        match cmd:
            case ReserveStock():
                decision = domain.reserve(state, self._named(sku, cmd), cmd, now=now,
                                          hold=self.hold)
            case ReleaseReservation():
                decision = domain.release(state, self._named(sku, cmd), cmd, now=now)
            case ConfirmReservation():
                decision = domain.confirm(state, self._named(sku, cmd), cmd)
            case CommitStock():
                decision = domain.commit(state, self._named(sku, cmd), cmd, now=now)
            case ExpireHolds():
                held = self.reservations.get(sku, {})
                decision = domain.expire(state, (held[k] for k in self.holds.get(sku, ())), cmd)
            case StockAdjusted():
                decision = domain.adjust(state, cmd,
                                         applied=cmd.event_id in self.adjustments.get(sku, ()))
            case SafetyStockSet():
                decision = domain.set_safety_stock(state, cmd)
            case _:
                raise InvalidRecord("unsupported_command", f"{type(cmd).__name__} is not "
                                    "handled by this inventory version")
        self._keep(sku, topic, offset, decision)
        return decision

    def _named(self, sku: str, cmd: Any) -> Reservation | None:
        return self.reservation(sku, domain.reservation_key(cmd.order_id, cmd.line))

    def _keep(self, sku: str, topic: str, offset: int, decision: Decision) -> None:
        self.counts[sku] = decision.state
        self._touched[sku] = None
        self.applied.setdefault(sku, {})[topic] = offset
        deltas: dict[tuple[str | None, int | None], tuple[int, int]] = {}
        for m in decision.movements:
            on_hand, reserved = deltas.get((m.order_id, m.line), (0, 0))
            deltas[(m.order_id, m.line)] = (on_hand + m.on_hand_delta,
                                            reserved + m.reserved_delta)
        if decision.reservations:
            book = self.reservations.setdefault(sku, {})
            for key, res in decision.reservations.items():
                book[key] = res
                self._index_hold(sku, key, res)
                d_on_hand, d_reserved = deltas.get((res.order_id, res.line), (0, 0))
                body = b'"r":' + _to_json(res) + b',"src":' + _src(topic, offset)
                self._effect(reservation_record_key(sku, key), sku, body, d_on_hand, d_reserved)
        if decision.adjustment is not None:
            self.adjustments.setdefault(sku, set()).add(decision.adjustment)
            d_on_hand, d_reserved = deltas.get((None, None), (0, 0))
            self._effect(adjustment_key(sku, decision.adjustment), sku,
                         b'"known":true,"src":' + _src(topic, offset), d_on_hand, d_reserved)

    def _effect(self, key: Key, sku: str, body: bytes, on_hand: int, reserved: int) -> None:
        effect = self._effects.get(key)
        if effect is None:
            self._effects[key] = _Effect(sku, body, on_hand, reserved)
        else:  # the same key written twice in one batch: keep the net delta
            effect.body = body
            effect.on_hand += on_hand
            effect.reserved += reserved

    def _index_hold(self, sku: str, key: str, res: Reservation) -> None:
        if res.state == "held" and res.hold_until is not None:
            self.holds.setdefault(sku, set()).add(key)
        else:
            keys = self.holds.get(sku)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.holds[sku]

    # --- writing ----------------------------------------------------------------------------

    def changelog(self) -> list[tuple[Key, Value]]:
        """The batch's changelog records, effects first and counts last (see the module
        docstring), and a fresh batch."""
        records = [(key, b"{%s,\"d\":[%d,%d]}" % (e.body, e.on_hand, e.reserved))
                   for key, e in self._effects.items()]
        records.extend((counts_key(sku), self._counts_value(sku)) for sku in self._touched)
        self._effects.clear()
        self._touched.clear()
        return records

    def _counts_value(self, sku: str) -> Value:
        return json.dumps({"c": self.counts[sku].model_dump(mode="json"),
                           "a": self.applied.get(sku, {})}).encode()

    # --- restoring --------------------------------------------------------------------------

    def restore(self, records: Iterable[tuple[Key, Value | None]]) -> list[tuple[Key, Value]]:
        """Load a partition's changelog (oldest first), roll forward effects whose counts
        record was lost, and return the repaired counts records to write before going on."""
        latest: dict[Key, Value] = {}
        for key, value in records:
            if value is None:
                latest.pop(key, None)
            else:
                latest[key] = value
        effects: list[tuple[str, dict[str, Any]]] = []
        for raw_key, raw in latest.items():
            kind, sku, *rest = json.loads(raw_key)
            value = json.loads(raw)
            if kind == "s":
                self.counts[sku] = SkuState.model_validate(value["c"])
                self.applied[sku] = {t: int(o) for t, o in value["a"].items()}
            elif kind == "r":
                res = Reservation.model_validate(value["r"])
                self.reservations.setdefault(sku, {})[rest[0]] = res
                self._index_hold(sku, rest[0], res)
                effects.append((sku, value))
            elif kind == "a":
                self.adjustments.setdefault(sku, set()).add(rest[0])
                effects.append((sku, value))
        repaired: dict[str, None] = {}
        for sku, value in effects:
            topic, offset = value["src"]
            if offset <= self.applied.get(sku, {}).get(topic, -1):
                continue  # the counts include it
            d_on_hand, d_reserved = value["d"]
            state = self.state(sku)
            self.counts[sku] = state.model_copy(update={
                "on_hand": state.on_hand + d_on_hand, "reserved": state.reserved + d_reserved,
                "known": state.known or bool(value.get("known"))})
            applied = self.applied.setdefault(sku, {})
            applied[topic] = max(applied.get(topic, -1), offset)
            repaired[sku] = None
        return [(counts_key(sku), self._counts_value(sku)) for sku in repaired]

    def skus(self) -> Iterator[str]:
        return iter(self.counts)
