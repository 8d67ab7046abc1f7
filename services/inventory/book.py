"""The stock book of one partition: every SKU's counts and reservations in memory, the
batch of changes since the last write, and the changelog records that make it durable.

Pure (no Kafka, no database): the hot path feeds it decoded commands and writes what it
returns. The book is what makes batching safe.

**Changelog layout.** One compacted topic, co-partitioned with the inputs; JSON keys:

- ``["s", sku]`` -> the SKU's counts and, per input topic, the offset of the last command
  applied to that SKU (``applied``);
- ``["r", sku, "order:line"]`` -> a reservation as the batch left it (``r``), what it was
  before the batch (``p``, null if new) and the input ``(topic, offset)`` of the batch's
  last command that wrote it (``src``);
- ``["a", sku, event_id]`` -> an applied adjustment (its ``src``).

**Why a crash cannot skew the books.** The hot path writes a batch's answers first, then
its changelog, then commits the input offsets. In the changelog a batch writes its
effects (reservations, adjustments) first and the counts of the SKUs it touched last, all
to the partition that owns them; a partition's log keeps the producer's order, so a crash
leaves a prefix: if a SKU's counts record survived, that SKU's effects and the batch's
answers did too. Restoring therefore *undoes* every effect newer than its SKU's durable
counts (``src`` offset above the counts' ``applied``) back to its ``p`` value: the book is
exactly as it was before the interrupted batch. Redelivered commands at or below a SKU's
``applied`` offset were fully applied and answered, and are skipped
(:meth:`PartitionBook.apply` returns None); the others are decided again, against the same
state, in the same order, so they decide the same (event ids included).
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
    """A key written in the current batch: its value before the batch, and now."""

    prev: bytes  # JSON of the value before the batch ("null": none)
    new: bytes  # JSON of the value now
    src: bytes  # JSON [topic, offset] of the batch's last command that wrote it


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

    def apply(self, topic: str, offset: int, cmd: object, now: datetime) -> Decision | None:
        """Decide ``cmd`` (read from ``topic`` at ``offset``) against the book and keep its
        effects for the batch's changelog. None: a redelivered command this SKU's counts
        already include (applied and answered before a crash). Raises InvalidRecord
        (nothing changed) when the command cannot apply."""
        sku: str = cmd.sku  # type: ignore[attr-defined]
        if offset <= self.applied.get(sku, {}).get(topic, -1):
            return None
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
        src = _src(topic, offset)
        if decision.reservations:
            book = self.reservations.setdefault(sku, {})
            for key, res in decision.reservations.items():
                before = book.get(key)
                book[key] = res
                self._index_hold(sku, key, res)
                self._effect(reservation_record_key(sku, key),
                             _to_json(before) if before is not None else b"null",
                             _to_json(res), src)
        if decision.adjustment is not None:
            self.adjustments.setdefault(sku, set()).add(decision.adjustment)
            self._effect(adjustment_key(sku, decision.adjustment), b"null", b"true", src)

    def _effect(self, key: Key, prev: bytes, new: bytes, src: bytes) -> None:
        effect = self._effects.get(key)
        if effect is None:
            self._effects[key] = _Effect(prev, new, src)
        else:  # written again in this batch: one record, still undoing to the batch's start
            effect.new = new
            effect.src = src

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
        records = [(key, b'{"r":%s,"p":%s,"src":%s}' % (e.new, e.prev, e.src))
                   for key, e in self._effects.items()]
        records.extend((counts_key(sku), self._counts_value(sku)) for sku in self._touched)
        self._effects.clear()
        self._touched.clear()
        return records

    def _counts_value(self, sku: str) -> Value:
        return json.dumps({"c": self.counts[sku].model_dump(mode="json"),
                           "a": self.applied.get(sku, {})}).encode()

    # --- restoring --------------------------------------------------------------------------

    def restore(self, records: Iterable[tuple[Key, Value | None]]) -> int:
        """Load a partition's changelog (oldest first) and undo the effects of a batch whose
        counts record was lost (see the module docstring). Returns how many were undone."""
        latest: dict[Key, Value] = {}
        for key, value in records:
            if value is None:
                latest.pop(key, None)
            else:
                latest[key] = value
        effects: list[tuple[str, str, str, dict[str, Any]]] = []
        for raw_key, raw in latest.items():
            kind, sku, *rest = json.loads(raw_key)
            value = json.loads(raw)
            if kind == "s":
                self.counts[sku] = SkuState.model_validate(value["c"])
                self.applied[sku] = {t: int(o) for t, o in value["a"].items()}
            else:
                effects.append((kind, sku, rest[0], value))
        undone = 0
        for kind, sku, name, value in effects:
            topic, offset = value["src"]
            current = value["r"]
            if offset > self.applied.get(sku, {}).get(topic, -1):
                current = value["p"]  # written by a batch whose counts were lost: undo
                undone += 1
            if current is None:
                continue
            if kind == "r":
                res = Reservation.model_validate(current)
                self.reservations.setdefault(sku, {})[name] = res
                self._index_hold(sku, name, res)
            else:
                self.adjustments.setdefault(sku, set()).add(name)
        return undone

    def skus(self) -> Iterator[str]:
        return iter(self.counts)
