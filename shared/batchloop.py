"""One batched consume loop for every service: take what is there, decide it in memory,
write once, send all, save the state, commit.

Why not Faust's agents: Faust hands an agent one event at a time, and a table write only
inside that iteration. Measured on the whole flow (README, "The whole flow"), every service
did one PostgreSQL transaction, an awaited send and a table write per record, and the flow
topped out near 200 orders/s with the two cores two-thirds idle: the services waited. So
this loop reads its input topics with its own aiokafka consumer inside the service's Faust
worker (Faust keeps the app, its life cycle, the web views and timers), and per poll:

1. takes what the consumer has, up to ``batch_max`` records, without waiting for more (at
   low load a batch is one record, so latency does not grow);
2. decodes each record and reads the state the batch's keys need, in one query;
3. decides each record in memory, in partition order, through the handler (pure domain
   rules, no I/O); an invalid record becomes its one dead letter and the batch goes on;
4. writes the batch's database effects in one transaction, then sends every output and dead
   letter as producer batches, awaiting their acknowledgements together (so a row exists
   by the time its event can be read);
5. saves the changed state (one statement), then commits the offsets.

A crash anywhere before 5 redelivers the batch: it is decided again from the state saved
before it, giving the same outputs with the same event ids, and the database effects are
idempotent. A database write that fails for a reason that is not transient is retried
record by record, so the one record that causes it is dead-lettered and the others go on.
Transient failures (database or broker away) are retried in place. One worker runs one loop
(``concurrency=1``, faust-streaming #606); parallelism comes from partitions and workers.
The input topics are co-partitioned and assigned by range, so partition *p* of every input
has one owner and one key's records are decided by one worker, in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from shared import codec
from shared.clients import commit, consumer_for, producer_for, tune_gc
from shared.events import Event, RejectedMessage
from shared.policy import Record, RecordPolicy, headers_of, text
from shared.runtime import Runtime
from shared.sender import BatchSender, Out
from shared.state import KeyedState
from shared.topics import ORDERS_DLQ

log = logging.getLogger(__name__)


class Effects:
    """What deciding one record produced: records to send and rows to write."""

    __slots__ = ("out", "rows")

    def __init__(self) -> None:
        self.out: list[tuple[Out, str]] = []  # (record, event type for the metrics)
        self.rows: list[Any] = []

    def emit(self, topic: str, key: str | None, event: Event) -> None:
        self.out.append((Out(topic, key.encode() if key is not None else None,
                             codec.encode(event)), event.event_type))

    def write(self, row: Any) -> None:
        self.rows.append(row)


class BatchHandler(Protocol):
    """A service's part of the loop: which state key a record needs, how it is decided, and
    how a batch's rows are written."""

    def state_key(self, record: Record) -> str | None:
        """The state key a decoded record reads and writes (None: it needs none)."""

    def handle(self, record: Record, table: MutableMapping[str, Any],
               effects: Effects) -> None:
        """Decide one decoded record against ``table`` (the state of its partition) in
        memory: emit outputs and rows on ``effects``, write the table last. Raises
        ``InvalidRecord`` / ``ValidationError`` for a record that can never apply."""

    async def write(self, con: asyncpg.Connection, rows: list[Any]) -> None:
        """Write a batch's rows on ``con``, in one transaction. Idempotent: a redelivered
        batch writes them again."""


@dataclass
class Decided:
    """A batch decided in memory: what to send and write, and the offsets it completes."""

    out: list[Out] = field(default_factory=list)
    rows: list[Any] = field(default_factory=list)
    commits: dict[TopicPartition, int] = field(default_factory=dict)
    counted_out: Counter[tuple[str, str]] = field(default_factory=Counter)


class BatchLoop(ConsumerRebalanceListener):
    """Runs ``handler`` over ``topics`` in batches inside ``runtime``'s worker."""

    def __init__(self, runtime: Runtime, handler: BatchHandler, topics: Sequence[str], *,
                 state: KeyedState[Any] | None = None, batch_max: int = 2000) -> None:
        self.runtime = runtime
        self.handler = handler
        self.topics = tuple(topics)
        self.state = state
        self.batch_max = batch_max
        self.conn = runtime.conn
        #: the Faust app id: offsets committed by the per-record agents carry over
        self.group = runtime.app.conf.id
        self.policy: RecordPolicy = runtime.policy
        self.metrics = runtime.metrics
        self.ready = False
        self.lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.sender: BatchSender | None = None
        self._con: asyncpg.Connection | None = None  # its own, held across batches
        self._names = {self.conn.topic(n): n for n in self.topics}

    # --- life cycle -------------------------------------------------------------------------

    async def run(self) -> None:
        conn = self.conn
        producer = producer_for(conn, idempotent=self.runtime.idempotent)
        await producer.start()
        self.sender = BatchSender(producer, conn.topic)
        self.consumer = consumer_for(conn, self.group)
        self.consumer.subscribe(list(self._names), listener=self)
        await self.consumer.start()
        tune_gc()
        try:
            while True:
                batch = await self.consumer.getmany(timeout_ms=200,
                                                    max_records=self.batch_max)
                if not batch:
                    continue
                async with self.lock:
                    records = self._records(batch)
                    if records:
                        await self.process(records)
        finally:
            self.ready = False
            await self._release_connection()
            await self.consumer.stop()
            await producer.stop()

    def _records(self, batch: dict[TopicPartition, list[Any]]) -> list[Record]:
        assert self.consumer is not None
        owned = self.consumer.assignment()
        return [
            Record(topic=self._names[tp.topic], key=text(m.key), value=m.value,
                   headers=headers_of(m), partition=tp.partition, offset=m.offset, raw=m.value,
                   timestamp=m.timestamp / 1000 if m.timestamp is not None else None)
            for tp, messages in batch.items() if tp in owned  # revoked meanwhile: skipped
            for m in messages
        ]

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        async with self.lock:  # the batch in hand is written and committed first
            self.ready = False
            if self.state is not None:
                self.state.drop({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self.ready = True
        log.info("event=loop_assigned service=%s partitions=%s", self.policy.service,
                 sorted({tp.partition for tp in assigned}))

    # --- one batch --------------------------------------------------------------------------

    async def process(self, records: list[Record]) -> None:
        """Decide, write, send, save and commit ``records`` (one or more partitions' records
        in order). A transient failure (database or broker away) retries the batch in
        place; any other write failure retries it one record at a time."""
        started = time.perf_counter()
        try:
            await self.policy.retrying(f"{self.policy.service}.batch",
                                       lambda: self._attempt(records))
        except Exception as exc:  # noqa: BLE001 - not transient: find the record that fails
            if len(records) > 1:
                log.warning("event=batch_write_failed service=%s records=%d error=%r: "
                            "retrying one by one", self.policy.service, len(records), exc)
                for record in records:
                    await self.process([record])
                return
            (record,) = records
            await self._dead_letter_alone(record, exc)
        self.metrics.batch_records.observe(len(records))
        elapsed = time.perf_counter() - started
        self.metrics.batch_seconds.observe(elapsed)
        for topic in {r.topic for r in records}:
            self.metrics.processing_seconds.labels(topic).observe(elapsed)

    async def _attempt(self, records: list[Record]) -> None:
        """One try at a batch, on the loop's database connection. A try that fails forgets
        what it decided, and closes the connection: the next try, or the record-by-record
        one, decides again from the saved state on a new one."""
        try:
            await self._attempt_once(records)
        except BaseException:
            if self.state is not None:
                self.state.discard_unsaved()
            await self._release_connection()  # maybe broken: the next try opens another
            raise

    async def _connection(self) -> asyncpg.Connection:
        """The loop's database connection, its own and held across batches (see
        :meth:`Database.connect`): a pooled one per batch costs a session reset and its
        round trip each time, which at low load costs more than the batch's writes."""
        if self._con is None or self._con.is_closed():
            self._con = await self.runtime.db.connect()
        return self._con

    async def _release_connection(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            await self.runtime.db.disconnect(con)

    async def _attempt_once(self, records: list[Record]) -> None:
        policy, state = self.policy, self.state
        decoded, done = decode_batch(records, policy, self.conn.topic)
        con = await self._connection()
        if state is not None:
            wanted = [(r.partition, key) for r in decoded
                      if (key := self.handler.state_key(r)) is not None]
            if wanted:
                await state.load(con, wanted)
        decide_batch(decoded, self.handler,
                     state.view if state is not None else _no_state, policy, done)
        if done.rows:
            await self.handler.write(con, done.rows)
        await self._send(done.out)
        if state is not None and state.dirty:
            await state.save(con)
        await self._commit(done.commits)
        for (topic, event_type), n in done.counted_out.items():
            policy.count_out(topic, event_type, n)

    async def _send(self, out: list[Out]) -> None:
        if out:
            assert self.sender is not None
            sender = self.sender
            await self.policy.retrying("send", lambda: sender.send_all(out))

    async def _dead_letter_alone(self, record: Record, exc: Exception) -> None:
        """A record whose own effects cannot be written: its one dead letter, then on."""
        letter = self.policy.rejection(record, "write_failed", f"{type(exc).__name__}: {exc}")
        await self._send([Out(ORDERS_DLQ, record.key.encode() if record.key else None,
                              codec.encode(letter))])
        self.policy.count_out(ORDERS_DLQ, letter.event_type)
        await self._commit({TopicPartition(self.conn.topic(record.topic), record.partition):
                            record.offset + 1})

    async def _commit(self, commits: dict[TopicPartition, int]) -> None:
        assert self.consumer is not None
        await commit(self.consumer, commits, self.policy.service)


# --- the pure part of a batch ------------------------------------------------------------------


def _no_state(partition: int) -> MutableMapping[str, Any]:
    return {}


def _letter_out(record: Record, letter: RejectedMessage, done: Decided) -> None:
    done.out.append(Out(ORDERS_DLQ, record.key.encode() if record.key else None,
                        codec.encode(letter)))
    done.counted_out[(ORDERS_DLQ, letter.event_type)] += 1


def decode_batch(records: Sequence[Record], policy: RecordPolicy,
                 full_name: Callable[[str], str]) -> tuple[list[Record], Decided]:
    """Decode every record; an undecodable one becomes its dead letter. Every record's
    offset counts as done: a dead letter completes it too."""
    done = Decided()
    decoded: list[Record] = []
    counts: Counter[tuple[str, str]] = Counter()
    commits = done.commits
    places: dict[tuple[str, int], TopicPartition] = {}
    for record in records:
        place = places.get((record.topic, record.partition))
        if place is None:
            place = places[(record.topic, record.partition)] = TopicPartition(
                full_name(record.topic), record.partition)
        commits[place] = record.offset + 1
        try:
            decoded.append(policy.decode(record, counts))
        except Exception as exc:  # noqa: BLE001 - undecodable: its dead letter
            _letter_out(record, policy.letter(record, exc), done)
    for (topic, event_type), n in counts.items():
        policy.count_in(topic, event_type, n)
    return decoded, done


def decide_batch(decoded: Sequence[Record], handler: BatchHandler,
                 table_of: Callable[[int], MutableMapping[str, Any]], policy: RecordPolicy,
                 done: Decided) -> None:
    """Decide every decoded record in memory, in order, against its partition's table
    (``table_of(partition)``); a record that cannot apply becomes its dead letter, and the
    rest go on. What a failed record had emitted is dropped with it."""
    for record in decoded:
        effects = Effects()
        try:
            handler.handle(record, table_of(record.partition), effects)
        except Exception as exc:  # noqa: BLE001 - invalid, or a bug: its dead letter
            _letter_out(record, policy.letter(record, exc), done)
            continue
        for out, event_type in effects.out:
            done.out.append(out)
            done.counted_out[(out.topic, event_type)] += 1
        done.rows.extend(effects.rows)
