"""Ingestion's handler, driven with a dict for its dedupe table: what one raw record emits,
writes and remembers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from services.ingestion.agents import IngestHandler
from services.ingestion.channels.base import PaymentState
from services.ingestion.metrics import IngestionMetrics
from services.ingestion.settings import IngestionSettings
from shared.batchloop import Effects
from shared.codec import InvalidRecord
from shared.events import OrderSubmitted, PaymentConfirmed
from shared.policy import Record
from shared.topics import ORDERS_RAW, ORDERS_SUBMITTED, PAYMENTS_EVENTS

SAMPLES = Path(__file__).parents[2] / "samples" / "tmall"
KEY = "tmall:3827461958204817263"


def handler() -> IngestHandler:
    return IngestHandler(IngestionSettings().channel_zones,
                         IngestionMetrics(CollectorRegistry()),
                         lambda: datetime(2026, 1, 20, 12, tzinfo=UTC))


def raw(sample: str, key: str = KEY, offset: int = 0) -> Record:
    if sample == "paid":  # the unpaid order, now paid
        payload = json.loads((SAMPLES / "unpaid.json").read_text())
        payload["status"] = "WAIT_SELLER_SEND_GOODS"
        payload["pay_time"] = "2026-01-20 10:05:00"
        body = json.dumps(payload).encode()
    else:
        body = (SAMPLES / f"{sample}.json").read_bytes()
    return Record(topic=ORDERS_RAW, key=key, value=body, headers={"channel": "tmall"},
                  partition=0, offset=offset, raw=body)


def handle(h: IngestHandler, record: Record, table: dict) -> Effects:
    effects = Effects()
    h.handle(record, table, effects)
    return effects


def test_a_new_order_is_emitted_written_and_remembered() -> None:
    table: dict = {}
    effects = handle(handler(), raw("unpaid"), table)
    ((out, kind),) = effects.out
    submitted = OrderSubmitted.model_validate_json(out.value)
    assert (out.topic, kind, out.key) == (ORDERS_SUBMITTED, "OrderSubmitted",
                                          submitted.order_id.encode())
    assert effects.rows == [("order", submitted, PaymentState.UNPAID)]
    assert table[KEY].order_id == submitted.order_id
    assert table[KEY].payment == PaymentState.UNPAID


def test_the_same_record_again_emits_and_writes_nothing() -> None:
    h, table = handler(), {}
    handle(h, raw("unpaid"), table)
    again = handle(h, raw("unpaid", offset=1), table)
    assert (again.out, again.rows) == ([], [])


def test_paid_after_unpaid_is_one_payment_update() -> None:
    h, table = handler(), {}
    first = handle(h, raw("unpaid"), table)
    paid = handle(h, raw("paid"), table)
    ((out, kind),) = paid.out
    confirmed = PaymentConfirmed.model_validate_json(out.value)
    order_id = OrderSubmitted.model_validate_json(first.out[0][0].value).order_id
    assert (out.topic, kind, confirmed.order_id) == (PAYMENTS_EVENTS, "PaymentConfirmed",
                                                     order_id)
    assert paid.rows == [("payment", order_id, PaymentState.PAID)]
    assert table[KEY].payment == PaymentState.PAID


def test_a_record_under_another_key_is_refused_before_the_table_is_touched() -> None:
    table: dict = {}
    with pytest.raises(InvalidRecord) as refused:
        handle(handler(), raw("unpaid", key="tmall:1"), table)
    assert refused.value.reason == "wrong_key" and table == {}


def test_the_state_key_is_the_record_key() -> None:
    assert handler().state_key(raw("unpaid")) == KEY
