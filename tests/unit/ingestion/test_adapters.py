"""Every channel adapter turns its channel's real payloads into one ChannelOrder, or names
why not. Samples live in tests/samples/<channel>/<payment state>[_<variant>].json; every
adapter in the ADAPTERS registry is held to every generic test below."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.ingestion.channels import ADAPTERS
from services.ingestion.channels.base import ChannelOrder, PaymentState
from services.ingestion.domain import to_submitted
from shared.codec import InvalidRecord

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "samples"
SHANGHAI = "Asia/Shanghai"
ZONES = ["Asia/Shanghai", "UTC", "America/New_York", "Europe/Berlin", "Pacific/Chatham"]


def samples_of(channel: str) -> list[Path]:
    return sorted((SAMPLES_DIR / channel).glob("*.json"))


SAMPLES = [(channel, path) for channel in ADAPTERS for path in samples_of(channel)]
SAMPLE_IDS = [f"{channel}/{path.stem}" for channel, path in SAMPLES]


def load(channel: str, name: str) -> Any:
    return json.loads((SAMPLES_DIR / channel / f"{name}.json").read_text(encoding="utf-8"))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def reason_of(call: Callable[[], Any]) -> str:
    with pytest.raises(InvalidRecord) as info:
        call()
    return info.value.reason


# --- envelopes: the channel's API response around the bare order -------------------------

WRAP: dict[str, Callable[[Any], Any]] = {
    "tmall": lambda o: {"trade_fullinfo_get_response": {"trade": o, "request_id": "abc"}},
    "jd": lambda o: {"jingdong_pop_order_get_responce": {
        "code": "0", "orderDetailInfo": {"apiResult": {"success": True}, "orderInfo": o}}},
    "pinduoduo": lambda o: {"order_info_get_response": {"order_info": o}},
    "douyin": lambda o: {"code": 10000, "msg": "success", "data": {"shop_order_detail": o}},
    "shopify": lambda o: {"order": o},
}


def bare(channel: str, payload: Any) -> Any:
    """The order object inside a sample, whether the sample is enveloped or not."""
    p = payload
    match channel:
        case "tmall" if "trade_fullinfo_get_response" in p:
            return p["trade_fullinfo_get_response"]["trade"]
        case "jd" if "jingdong_pop_order_get_responce" in p:
            return p["jingdong_pop_order_get_responce"]["orderDetailInfo"]["orderInfo"]
        case "pinduoduo" if "order_info_get_response" in p:
            return p["order_info_get_response"]["order_info"]
        case "douyin" if "data" in p:
            return p["data"]["shop_order_detail"]
        case "shopify" if "order" in p:
            return p["order"]
    return p


def sample(channel: str, name: str, **overrides: Any) -> Any:
    """A sample's bare order with top-level fields replaced."""
    order = copy.deepcopy(bare(channel, load(channel, name)))
    order.update(overrides)
    return order


# --- what each sample must normalise to ---------------------------------------------------
# placed_at (UTC), total as the channel states it, lines as (sku, quantity, unit price).
# The payment state is the sample name's first word.

EXPECTED: dict[str, tuple[datetime, str | None, list[tuple[str, int, str]]]] = {
    "web/unpaid": (utc(2026, 1, 19, 16, 30), None, [("SKU-1001", 2, "19.90")]),
    "web/paid": (utc(2026, 1, 20, 2, 0), None,
                 [("SKU-1001", 1, "19.90"), ("SKU-2002", 3, "5.00")]),
    "web/cancelled": (utc(2026, 1, 19, 15, 0), None, [("SKU-2002", 1, "5.00")]),
    # Tmall: naive "yyyy-MM-dd HH:mm:ss" in Asia/Shanghai; yuan strings.
    "tmall/unpaid": (utc(2026, 1, 19, 16, 30), "118.00", [("TEA-LJ-250G", 1, "128.00")]),
    "tmall/unpaid_cod": (utc(2026, 1, 20, 6, 20), "133.00", [("TEA-LJ-250G", 1, "128.00")]),
    "tmall/paid": (utc(2026, 1, 20, 1, 15, 42), "109.80", [("TEA-LJ-100G-CAN", 2, "59.90")]),
    "tmall/paid_multi_line": (utc(2026, 1, 18, 13, 3, 11), "357.00", [
        ("TEA-LJ-250G", 2, "128.00"), ("CUP-QC-01", 1, "89.00"), ("JAR-TIN-S", 1, "42.00")]),
    "tmall/cancelled": (utc(2026, 1, 19, 15, 59, 59), "59.90",
                        [("TEA-LJ-100G-CAN", 1, "59.90")]),
    # JD: naive strings in Asia/Shanghai (cancelled crosses midnight UTC); yuan strings.
    "jd/unpaid_cod": (utc(2026, 1, 21, 10, 40), "129.00", [("JD-KETTLE-1.7L", 1, "129.00")]),
    "jd/paid": (utc(2026, 1, 20, 2, 5, 33), "379.00", [("JD-AIRFRYER-5L", 1, "399.00")]),
    "jd/paid_multi_line": (utc(2026, 1, 16, 12, 48, 17), "627.00", [
        ("JD-AIRFRYER-5L", 1, "399.00"), ("JD-KETTLE-1.7L", 2, "129.00")]),
    "jd/cancelled": (utc(2026, 1, 21, 23, 0, 9), "258.00", [("JD-KETTLE-1.7L", 2, "129.00")]),
    # Pinduoduo: naive strings in Asia/Shanghai; yuan doubles, written to the fen.
    "pinduoduo/paid": (utc(2026, 1, 20, 4, 0, 1), "19.90", [("PDD-TISSUE-12P", 2, "12.90")]),
    "pinduoduo/paid_group_forming": (utc(2026, 1, 20, 11, 45, 30), "9.90",
                                     [("PDD-SCISSORS-01", 1, "9.90")]),
    "pinduoduo/paid_multi_line": (utc(2026, 1, 14, 23, 59, 30), "45.70", [
        ("PDD-TISSUE-12P", 3, "12.90"), ("PDD-SCISSORS-01", 1, "9.90")]),
    "pinduoduo/cancelled": (utc(2026, 1, 19, 0, 12, 44), "9.90",
                            [("PDD-SCISSORS-01", 1, "9.90")]),
    "pinduoduo/cancelled_refunded": (utc(2026, 1, 18, 14, 30, 52), "19.90",
                                     [("PDD-TISSUE-12P", 2, "12.90")]),
    # Douyin: epoch seconds; fen integers -> yuan.
    "douyin/unpaid": (utc(2026, 1, 19, 16, 30), "139.00", [("DY-STEW-1.2L", 1, "149.00")]),
    "douyin/unpaid_cod": (utc(2026, 1, 20, 13, 5), "89.00", [("DY-YOGURT-1L", 1, "89.00")]),
    "douyin/paid": (utc(2026, 1, 20, 2, 11, 5), "139.00", [("DY-STEW-1.2L", 1, "149.00")]),
    "douyin/paid_multi_line": (utc(2026, 1, 17, 12, 0), "307.00", [
        ("DY-STEW-1.2L", 1, "149.00"), ("DY-YOGURT-1L", 2, "89.00")]),
    "douyin/cancelled": (utc(2026, 1, 18, 15, 59, 59), "89.00", [("DY-YOGURT-1L", 1, "89.00")]),
    # Shopify: ISO 8601 with offsets (-05:00, -08:00, Z, +01:00); decimal strings.
    "shopify/unpaid": (utc(2026, 1, 19, 16, 30), "36.00", [("CT-LJ-100G", 2, "18.00")]),
    "shopify/unpaid_authorized": (utc(2026, 1, 20, 4, 2, 17), "64.00",
                                  [("CT-TGY-200G", 1, "64.00")]),
    "shopify/paid": (utc(2026, 1, 20, 2, 30), "18.00", [("CT-LJ-100G", 1, "18.00")]),
    "shopify/paid_multi_line": (utc(2026, 1, 20, 8, 45, 12), "87.50", [
        ("CT-LJ-100G", 2, "16.50"), ("CT-GAIWAN-QC", 1, "42.00"),
        ("CT-SCOOP-BAMBOO", 1, "12.50")]),
    "shopify/cancelled": (utc(2026, 1, 18, 22, 5, 44), "64.00", [("CT-TGY-200G", 1, "64.00")]),
    "shopify/cancelled_refunded": (utc(2026, 1, 17, 13, 0), "36.00",
                                   [("CT-LJ-100G", 2, "18.00")]),
    # POS: epoch milliseconds (kept to the millisecond); fen in Money objects.
    "pos/paid": (utc(2026, 1, 20, 8, 15, 30, 123_000), "128.00", [("TEA-LJ-250G", 1, "128.00")]),
    "pos/paid_multi_line": (utc(2026, 1, 20, 11, 42, 8, 950_000), "334.80", [
        ("TEA-LJ-100G-CAN", 2, "59.90"), ("CUP-QC-01", 1, "89.00"), ("JAR-TIN-S", 3, "42.00")]),
    "pos/cancelled": (utc(2026, 1, 20, 12, 1, 45), "59.90", [("TEA-LJ-100G-CAN", 1, "59.90")]),
}


# --- the registry and its samples ---------------------------------------------------------


@pytest.mark.parametrize("channel", list(ADAPTERS))
def test_every_registered_adapter_has_at_least_three_samples(channel: str) -> None:
    assert ADAPTERS[channel].channel == channel
    assert len(samples_of(channel)) >= 3, f"add samples under tests/samples/{channel}/"


def test_every_sample_directory_belongs_to_a_registered_adapter() -> None:
    assert {d.name for d in SAMPLES_DIR.iterdir() if d.is_dir()} <= set(ADAPTERS)


@pytest.mark.parametrize(("channel", "path"), SAMPLES, ids=SAMPLE_IDS)
def test_sample_name_starts_with_a_payment_state(channel: str, path: Path) -> None:
    assert path.stem.split("_")[0] in {state.value for state in PaymentState}


def test_every_sample_has_exact_expectations() -> None:
    assert set(SAMPLE_IDS) == set(EXPECTED)


# --- the valid path -----------------------------------------------------------------------


@pytest.mark.parametrize(("channel", "path"), SAMPLES, ids=SAMPLE_IDS)
def test_sample_normalises_to_its_payment_state_instant_total_and_lines(
    channel: str, path: Path,
) -> None:
    order = ADAPTERS[channel].normalise(load(channel, path.stem), zone=SHANGHAI)
    placed_at, total, lines = EXPECTED[f"{channel}/{path.stem}"]

    assert isinstance(order, ChannelOrder)
    assert order.channel == channel
    assert order.payment is PaymentState(path.stem.split("_")[0])
    assert order.placed_at == placed_at
    assert order.placed_at.tzinfo is UTC
    # Decimal, to the digit: "19.90" is not "19.9" and fen never pass through float.
    assert (None if order.total is None else str(order.total)) == total
    assert [(ln.sku, ln.quantity, str(ln.unit_price)) for ln in order.lines] == lines
    assert all(isinstance(ln.unit_price, Decimal) for ln in order.lines)


@pytest.mark.parametrize(("channel", "path"), SAMPLES, ids=SAMPLE_IDS)
def test_order_id_of_agrees_with_normalise(channel: str, path: Path) -> None:
    adapter = ADAPTERS[channel]
    payload = load(channel, path.stem)
    order_id = adapter.order_id_of(payload)
    assert isinstance(order_id, str)
    assert order_id == adapter.normalise(payload, zone=SHANGHAI).channel_order_id


@pytest.mark.parametrize(("channel", "path"),
                         [(c, p) for c, p in SAMPLES if c in WRAP],
                         ids=[i for (c, _), i in zip(SAMPLES, SAMPLE_IDS, strict=True)
                              if c in WRAP])
def test_bare_order_and_api_envelope_normalise_alike(channel: str, path: Path) -> None:
    adapter = ADAPTERS[channel]
    order = bare(channel, load(channel, path.stem))
    wrapped = WRAP[channel](copy.deepcopy(order))
    assert adapter.normalise(order, zone=SHANGHAI) == adapter.normalise(wrapped, zone=SHANGHAI)
    assert adapter.order_id_of(order) == adapter.order_id_of(wrapped)


def test_the_realistic_samples_cover_both_forms() -> None:
    enveloped = {c for c, p in SAMPLES if bare(c, load(c, p.stem)) != load(c, p.stem)}
    assert enveloped == set(WRAP)


def test_douyin_search_list_element_and_shop_order_detail_key_are_read_alike() -> None:
    order = sample("douyin", "paid")
    a = ADAPTERS["douyin"].normalise({"shop_order_detail": order}, zone=SHANGHAI)
    assert a == ADAPTERS["douyin"].normalise(order, zone=SHANGHAI)


# --- payment states: every documented code, and nothing guessed ----------------------------

PAID, UNPAID, CANCELLED = PaymentState.PAID, PaymentState.UNPAID, PaymentState.CANCELLED
JD_NO_TIME = "0001-01-01 00:00:00"
STATUS_CASES: dict[str, list[tuple[str, dict[str, Any], PaymentState]]] = {
    "tmall": [("paid", {"status": s}, want) for s, want in [
        ("TRADE_NO_CREATE_PAY", UNPAID), ("WAIT_BUYER_PAY", UNPAID), ("PAY_PENDING", UNPAID),
        ("WAIT_PRE_AUTH_CONFIRM", UNPAID), ("WAIT_SELLER_SEND_GOODS", PAID),
        ("SELLER_CONSIGNED_PART", PAID), ("WAIT_BUYER_CONFIRM_GOODS", PAID),
        ("TRADE_BUYER_SIGNED", PAID), ("TRADE_FINISHED", PAID), ("PAID_FORBID_CONSIGN", PAID),
        ("TRADE_CLOSED", CANCELLED), ("TRADE_CLOSED_BY_TAOBAO", CANCELLED)]] + [
        ("unpaid_cod", {"status": "WAIT_BUYER_CONFIRM_GOODS"}, UNPAID),
        ("unpaid_cod", {"status": "TRADE_BUYER_SIGNED"}, PAID),
        ("unpaid_cod", {"status": "TRADE_FINISHED"}, PAID),
        ("unpaid_cod", {"status": "TRADE_CLOSED_BY_TAOBAO"}, CANCELLED)],
    "jd": [("paid", {"orderState": s}, want) for s, want in [
        ("WAIT_SELLER_STOCK_OUT", PAID), ("SEND_TO_DISTRIBUTION_CENER", PAID),
        ("DISTRIBUTION_CENTER_RECEIVED", PAID), ("WAIT_SELLER_DELIVERY", PAID),
        ("WAIT_GOODS_RECEIVE_CONFIRM", PAID), ("WAIT_SEND_CODE", PAID),
        ("RECEIPTS_CONFIRM", PAID), ("FINISHED_L", PAID), ("TRADE_CANCELED", CANCELLED),
        ("DELIVERY_RETURN", CANCELLED), ("LOCKED", PAID), ("PAUSE", PAID),
        ("POP_ORDER_PAUSE", PAID)]] + [
        ("paid", {"orderState": "LOCKED", "paymentConfirmTime": JD_NO_TIME}, UNPAID),
        ("paid", {"orderState": "PAUSE", "paymentConfirmTime": None}, UNPAID),
        ("unpaid_cod", {"orderState": "WAIT_GOODS_RECEIVE_CONFIRM"}, UNPAID),
        ("unpaid_cod", {"orderState": "FINISHED_L"}, PAID),
        ("unpaid_cod", {"orderState": "TRADE_CANCELED"}, CANCELLED)],
    "pinduoduo": [("paid", dict(zip(("order_status", "confirm_status", "refund_status"), c,
                                    strict=True)), want) for c, want in [
        ((1, 1, 1), PAID), ((2, 1, 1), PAID), ((3, 1, 1), PAID), ((1, 1, 2), PAID),
        ((1, 1, 3), PAID), ((1, 1, 4), CANCELLED), ((3, 1, 4), CANCELLED),
        ((1, 0, 1), PAID), ((1, 2, 1), CANCELLED), ((1, None, None), PAID)]] + [
        ("paid", {"confirm_status": 0, "pay_time": ""}, UNPAID)],
    "douyin": [("paid", {"order_status": s}, want) for s, want in [
        (1, UNPAID), (103, UNPAID), (105, PAID), (2, PAID), (101, PAID), (3, PAID),
        (4, CANCELLED), (5, PAID)]] + [
        ("unpaid_cod", {"order_status": 3}, UNPAID),
        ("unpaid_cod", {"order_status": 5}, PAID),
        ("unpaid_cod", {"order_status": 4}, CANCELLED)],
    "shopify": [("paid", {"financial_status": s}, want) for s, want in [
        ("pending", UNPAID), ("authorized", UNPAID), ("partially_paid", UNPAID),
        ("expired", UNPAID), ("paid", PAID), ("partially_refunded", PAID),
        ("refunded", CANCELLED), ("voided", CANCELLED)]] + [
        ("paid", {"cancelled_at": "2026-01-20T03:00:00Z"}, CANCELLED),
        ("unpaid", {"cancelled_at": "2026-01-20T03:00:00Z"}, CANCELLED)],
    "pos": [("paid", {"receipt_type": "SALE"}, PAID),
            ("paid", {"receipt_type": "VOID"}, CANCELLED)],
}
STATUS_CASE_IDS = [(channel, case) for channel, cases in STATUS_CASES.items() for case in cases]


@pytest.mark.parametrize(("channel", "case"), STATUS_CASE_IDS,
                         ids=[f"{ch}-{json.dumps(c[1], ensure_ascii=False)}"
                              for ch, c in STATUS_CASE_IDS])
def test_channel_status_maps_to_payment_state(
    channel: str, case: tuple[str, dict[str, Any], PaymentState],
) -> None:
    name, overrides, want = case
    order = ADAPTERS[channel].normalise(sample(channel, name, **overrides), zone=SHANGHAI)
    assert order.payment is want
    if want is PaymentState.UNPAID:
        assert order.paid_at is None


UNKNOWN_STATUS: dict[str, list[dict[str, Any]]] = {
    "tmall": [{"status": "TRADE_SOMETHING_NEW"}, {"status": "wait_buyer_pay"}, {"status": ""}],
    "jd": [{"orderState": "UN_KNOWN"}, {"orderState": "NOT_PAY"}],
    "pinduoduo": [{"order_status": 0}, {"order_status": 5}, {"confirm_status": 3},
                  {"refund_status": 0}, {"refund_status": 5}],
    "douyin": [{"order_status": 0}, {"order_status": 21}, {"order_status": 99}],
    "shopify": [{"financial_status": "chargeback"}, {"financial_status": None},
                {"financial_status": "PAID"}],
    "pos": [{"receipt_type": "RETURN"}, {"receipt_type": "sale"}],
}


@pytest.mark.parametrize("channel", [c for c in ADAPTERS if c != "web"])
def test_every_status_coded_channel_has_unknown_status_cases(channel: str) -> None:
    # web states payment as booleans, so it has no status code to be unknown.
    assert UNKNOWN_STATUS.get(channel), f"add unknown-status cases for {channel}"


@pytest.mark.parametrize(("channel", "overrides"),
                         [(c, o) for c, cases in UNKNOWN_STATUS.items() for o in cases])
def test_unknown_status_is_rejected_not_guessed(channel: str, overrides: dict[str, Any]) -> None:
    payload = sample(channel, "paid", **overrides)
    reason = reason_of(lambda: ADAPTERS[channel].normalise(payload, zone=SHANGHAI))
    assert reason == "unknown_status"


# --- order ids ----------------------------------------------------------------------------

ORDER_ID_KEYS = {"web": ("order_id",), "tmall": ("tid", "tid_str"), "jd": ("orderId",),
                 "pinduoduo": ("order_sn",), "douyin": ("order_id",), "shopify": ("id",),
                 "pos": ("receipt_no",)}


MISSING_ID_CASES = [(channel, how) for channel in ADAPTERS
                    for how in ["deleted", "null", "empty", "boolean", "object"]]


@pytest.mark.parametrize(("channel", "how"), MISSING_ID_CASES)
def test_missing_order_id_is_rejected(channel: str, how: str) -> None:
    adapter = ADAPTERS[channel]
    order = sample(channel, "paid")
    for key in ORDER_ID_KEYS[channel]:
        if how == "deleted":
            order.pop(key, None)
        else:
            order[key] = {"null": None, "empty": "", "boolean": True, "object": {"id": 1}}[how]
    for payload in [order, WRAP.get(channel, lambda o: o)(order)]:
        assert reason_of(lambda p=payload: adapter.order_id_of(p)) == "missing_order_id"
        with pytest.raises((ValidationError, InvalidRecord)):
            adapter.normalise(payload, zone=SHANGHAI)


@pytest.mark.parametrize("channel", list(ADAPTERS))
@pytest.mark.parametrize("payload", [None, [], "order", 42, {}], ids=repr)
def test_a_non_order_has_no_order_id(channel: str, payload: Any) -> None:
    assert reason_of(lambda: ADAPTERS[channel].order_id_of(payload)) == "missing_order_id"


def test_tmall_prefers_tid_str_which_survives_javascript_clients() -> None:
    payload = sample("tmall", "paid", tid=3827499102658817000)  # a JS number lost digits
    assert ADAPTERS["tmall"].order_id_of(payload) == "3827499102658817263"


def test_pinduoduo_order_sn_with_its_date_prefix_is_a_valid_channel_order_id() -> None:
    order = ADAPTERS["pinduoduo"].normalise(load("pinduoduo", "paid"), zone=SHANGHAI)
    assert order.channel_order_id == "260120-038475610293847"


# --- lines and SKUs -----------------------------------------------------------------------

LINES = {"web": ("lines", ("sku",)), "tmall": ("orders", ("outer_sku_id", "outer_iid")),
         "jd": ("itemInfoList", ("outerSkuId",)), "pinduoduo": ("item_list", ("outer_id",)),
         "douyin": ("sku_order_list", ("code", "out_sku_id")),
         "shopify": ("line_items", ("sku",)), "pos": ("items", ("sku",))}


def first_line(channel: str, order: dict[str, Any]) -> dict[str, Any]:
    lines = order[LINES[channel][0]]
    return (lines["order"] if isinstance(lines, dict) else lines)[0]


@pytest.mark.parametrize("channel", list(ADAPTERS))
@pytest.mark.parametrize("blank", [None, "", "   "])
def test_line_without_a_sku_is_rejected(channel: str, blank: Any) -> None:
    order = sample(channel, "paid")
    line = first_line(channel, order)
    for key in LINES[channel][1]:
        line[key] = blank
    with pytest.raises(ValidationError):
        ADAPTERS[channel].normalise(order, zone=SHANGHAI)


def test_tmall_item_sold_without_skus_uses_its_outer_iid_but_a_sku_line_does_not() -> None:
    order = sample("tmall", "paid_multi_line")
    assert ADAPTERS["tmall"].normalise(order, zone=SHANGHAI).lines[1].sku == "CUP-QC-01"
    order["orders"]["order"][0].pop("outer_sku_id")
    order["orders"]["order"][0]["outer_iid"] = "TEA-LJ"  # item code of a multi-SKU item
    with pytest.raises(ValidationError, match="outer_sku_id"):
        ADAPTERS["tmall"].normalise(order, zone=SHANGHAI)


def test_douyin_falls_back_to_the_external_sku_id_when_the_code_is_blank() -> None:
    order = sample("douyin", "paid")
    order["sku_order_list"][0].update(code="", out_sku_id=2001003)
    assert ADAPTERS["douyin"].normalise(order, zone=SHANGHAI).lines[0].sku == "2001003"


@pytest.mark.parametrize("channel", list(ADAPTERS))
def test_an_order_without_lines_is_rejected(channel: str) -> None:
    order = sample(channel, "paid")
    order[LINES[channel][0]] = {"order": []} if channel == "tmall" else []
    with pytest.raises(ValidationError):
        ADAPTERS[channel].normalise(order, zone=SHANGHAI)


# --- money --------------------------------------------------------------------------------


@given(st.integers(0, 10**11), st.integers(0, 10**7))
def test_douyin_fen_become_yuan_exactly(pay_fen: int, price_fen: int) -> None:
    order = sample("douyin", "paid", pay_amount=pay_fen)
    order["sku_order_list"][0]["origin_amount"] = price_fen
    result = ADAPTERS["douyin"].normalise(order, zone=SHANGHAI)
    assert result.total == Decimal(pay_fen) / 100
    assert result.lines[0].unit_price == Decimal(price_fen) / 100
    assert str(result.total) == f"{pay_fen // 100}.{pay_fen % 100:02d}"


@pytest.mark.parametrize("amount", ["89.00", 8900.0, 89.5, True])
def test_douyin_fen_must_be_integers(amount: Any) -> None:
    with pytest.raises(ValidationError):
        ADAPTERS["douyin"].normalise(sample("douyin", "paid", pay_amount=amount), zone=SHANGHAI)


@pytest.mark.parametrize(("currency", "amount", "yuan"), [
    ("CNY", 12800, "128.00"), ("USD", 1, "0.01"), ("JPY", 1280, "1280"), ("KWD", 1280, "1.280"),
])
def test_pos_minor_units_follow_the_currency(currency: str, amount: int, yuan: str) -> None:
    receipt = sample("pos", "paid", total={"amount": amount, "currency": currency})
    receipt["items"][0]["unit_price"] = {"amount": amount, "currency": currency}
    order = ADAPTERS["pos"].normalise(receipt, zone=SHANGHAI)
    assert (order.currency, str(order.total), str(order.lines[0].unit_price)) == (
        currency, yuan, yuan)


def test_pos_receipt_in_two_currencies_is_rejected() -> None:
    receipt = sample("pos", "paid", total={"amount": 12800, "currency": "HKD"})
    with pytest.raises(ValidationError, match="one currency"):
        ADAPTERS["pos"].normalise(receipt, zone=SHANGHAI)


@pytest.mark.parametrize(("price", "written"), [(12.9, "12.90"), (0.1, "0.10"), (3, "3.00"),
                                                (199.99, "199.99")])
def test_pinduoduo_yuan_doubles_are_read_through_their_decimal_text(
    price: float, written: str,
) -> None:
    order = sample("pinduoduo", "paid")
    order["item_list"][0]["goods_price"] = price
    assert str(ADAPTERS["pinduoduo"].normalise(order, zone=SHANGHAI).lines[0].unit_price) == written


@pytest.mark.parametrize("price", [0.1 + 0.2, 12.905, -1.0, float("nan"), float("inf"), "abc"])
def test_pinduoduo_price_that_is_not_yuan_to_the_fen_is_rejected(price: Any) -> None:
    order = sample("pinduoduo", "paid")
    order["item_list"][0]["goods_price"] = price
    with pytest.raises(ValidationError):
        ADAPTERS["pinduoduo"].normalise(order, zone=SHANGHAI)


@pytest.mark.parametrize(("channel", "field", "value"), [
    ("tmall", "payment", "109.801"), ("tmall", "payment", "-1.00"), ("jd", "orderPayment", "x"),
    ("shopify", "total_price", 18.0), ("shopify", "total_price", "18.00001"),
])
def test_malformed_amounts_are_rejected(channel: str, field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        ADAPTERS[channel].normalise(sample(channel, "paid", **{field: value}), zone=SHANGHAI)


def test_currency_is_cny_for_chinese_channels_unless_the_payload_says_otherwise() -> None:
    for channel in ("tmall", "jd", "pinduoduo", "douyin"):
        assert ADAPTERS[channel].normalise(load(channel, "paid"), zone=SHANGHAI).currency == "CNY"
    order = ADAPTERS["tmall"].normalise(sample("tmall", "paid", currency="HKD"), zone=SHANGHAI)
    assert order.currency == "HKD"
    assert ADAPTERS["shopify"].normalise(
        load("shopify", "paid_multi_line"), zone=SHANGHAI).currency == "EUR"


# --- time ---------------------------------------------------------------------------------

NAIVE_CHANNELS = ["tmall", "jd", "pinduoduo"]
ABSOLUTE_CHANNELS = ["douyin", "shopify", "pos"]


@pytest.mark.parametrize("channel", NAIVE_CHANNELS)
def test_naive_channel_times_are_wall_clock_in_the_channel_zone(channel: str) -> None:
    payload = load(channel, "paid")
    in_utc = ADAPTERS[channel].normalise(payload, zone="UTC").placed_at
    in_shanghai = ADAPTERS[channel].normalise(payload, zone=SHANGHAI).placed_at
    assert in_utc - in_shanghai == timedelta(hours=8)


@pytest.mark.parametrize("channel", ABSOLUTE_CHANNELS)
@pytest.mark.parametrize("zone", ZONES)
def test_absolute_channel_times_do_not_depend_on_the_zone(channel: str, zone: str) -> None:
    for path in samples_of(channel):
        payload = load(channel, path.stem)
        assert (ADAPTERS[channel].normalise(payload, zone=zone).placed_at
                == EXPECTED[f"{channel}/{path.stem}"][0])


def test_paid_at_and_updated_at_are_carried_in_utc() -> None:
    order = ADAPTERS["tmall"].normalise(load("tmall", "paid"), zone=SHANGHAI)
    assert (order.paid_at, order.updated_at) == (utc(2026, 1, 20, 1, 16, 5),
                                                 utc(2026, 1, 20, 1, 16, 6))
    douyin = ADAPTERS["douyin"].normalise(load("douyin", "paid"), zone=SHANGHAI)
    assert douyin.paid_at == utc(2026, 1, 20, 2, 11, 24)


def test_jd_year_one_payment_time_means_not_paid_yet() -> None:
    order = ADAPTERS["jd"].normalise(load("jd", "unpaid_cod"), zone=SHANGHAI)
    assert order.paid_at is None


@pytest.mark.parametrize(("channel", "field", "value"), [
    ("tmall", "created", "2026-13-01 00:00:00"), ("tmall", "created", "yesterday"),
    ("jd", "orderStartTime", "0001-01-01 00:00:01"),  # before year 1 once in UTC
    ("pinduoduo", "created_time", ""),
    ("douyin", "create_time", 1768840200000),   # milliseconds where seconds belong
    ("douyin", "create_time", "1768840200"), ("douyin", "create_time", 10**20),
    ("douyin", "create_time", 0),
    ("shopify", "created_at", 1768876200),
    ("pos", "sold_at", 1768896930),              # seconds where milliseconds belong
    ("pos", "sold_at", 10**30), ("pos", "sold_at", float("inf")),
])
def test_malformed_times_are_validation_errors(channel: str, field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        ADAPTERS[channel].normalise(sample(channel, "paid", **{field: value}), zone=SHANGHAI)


# --- customers ----------------------------------------------------------------------------


def test_customers_are_keyed_by_the_channel_buyer_id_with_masked_phones_as_given() -> None:
    def customer(channel: str, name: str = "paid") -> tuple[Any, ...]:
        c = ADAPTERS[channel].normalise(load(channel, name), zone=SHANGHAI).customer
        return c.customer_id, c.nickname, c.phone, c.email

    assert customer("tmall") == ("AAHrT9kLAAfWw8sPJBa5mYzC", "l***y", "139****0021", None)
    assert customer("jd") == ("o1Jd7wFq2r9kT0vX3bLp8sYcN4m", "jd_7f3a91c2b4e5",
                              "136*******5", None)
    assert customer("douyin")[1:] == (None, "1********35", None)
    assert customer("shopify", "unpaid") == ("7451298760411", "Mei", "+14155550123",
                                             "mei.lin@example.com")
    assert customer("pos") == ("M00482913", "王女士", "138****5678", None)
    assert customer("pos", "paid_multi_line")[0] == "walk-in-SH-XH-0012"


def test_pinduoduo_buyer_is_keyed_by_a_hash_of_the_merge_id() -> None:
    ids = {ADAPTERS["pinduoduo"].normalise(load("pinduoduo", p.stem), zone=SHANGHAI)
           .customer.customer_id for p in samples_of("pinduoduo")}
    assert len(ids) == 1
    (only,) = ids
    assert only.startswith("oaid-") and "~" not in only and len(only) <= 64


def test_shopify_guest_checkout_is_keyed_by_its_email_hash() -> None:
    a = ADAPTERS["shopify"].normalise(load("shopify", "paid"), zone=SHANGHAI).customer
    b = ADAPTERS["shopify"].normalise(
        sample("shopify", "paid", id=1, email=" Guest.Buyer@Example.com"), zone=SHANGHAI).customer
    assert a.customer_id == b.customer_id
    assert a.customer_id.startswith("email-") and "@" not in a.customer_id
    assert a.locale == "en-US"


@pytest.mark.parametrize(("channel", "fields"), [
    ("tmall", {"buyer_open_uid": None}), ("jd", {"open_id_buyer": None, "pin": None}),
    ("douyin", {"doudian_open_id": "", "open_id": ""}),
])
def test_an_order_without_a_buyer_is_rejected(channel: str, fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ADAPTERS[channel].normalise(sample(channel, "paid", **fields), zone=SHANGHAI)


def test_a_long_buyer_ciphertext_is_hashed_to_fit() -> None:
    order = ADAPTERS["jd"].normalise(sample("jd", "paid", open_id_buyer="A" * 200),
                                     zone=SHANGHAI)
    assert order.customer.customer_id.startswith("sha256-")
    assert len(order.customer.customer_id) <= 64


# --- properties: nothing but an order or a named rejection --------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.floats(allow_nan=True, allow_infinity=True),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=15,
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key and index path below ``node``."""
    children: list[tuple[Any, Any]] = (
        list(node.items()) if isinstance(node, dict)
        else list(enumerate(node)) if isinstance(node, list) else [])
    found: list[tuple[Any, ...]] = []
    for key, child in children:
        found.append((*prefix, key))
        found.extend(paths(child, (*prefix, key)))
    return found


@st.composite
def mutated(draw: st.DrawFn, payload: Any) -> Any:
    """The payload with 1-3 edits, each either dropping a random key (or list element) or
    replacing a random node, leaf or subtree, with random JSON."""
    payload = copy.deepcopy(payload)
    for _ in range(draw(st.integers(1, 3))):
        where = paths(payload)
        if not where:
            break
        path = draw(st.sampled_from(where))
        parent = payload
        for part in path[:-1]:
            parent = parent[part]
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return payload


def outcome_of(adapter: ModuleType, payload: Any, zone: str) -> ChannelOrder | Exception:
    try:
        return adapter.normalise(payload, zone=zone)
    except (ValidationError, InvalidRecord, ValueError) as exc:
        return exc


PROPERTY_CASES = [pytest.param(channel, path, id=sample_id)
                  for (channel, path), sample_id in zip(SAMPLES, SAMPLE_IDS, strict=True)]


def test_web_out_of_range_epoch_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        ADAPTERS["web"].normalise(sample("web", "paid", placed_at=10**20), zone=SHANGHAI)


@pytest.mark.parametrize(("channel", "value"), [
    (c, v) for c in ("tmall", "jd", "pinduoduo")  # naive channels also read epochs
    for v in [10**20, 10**30, 1e308, float("inf"), "9" * 30]])
def test_out_of_range_epochs_are_validation_errors(channel: str, value: Any) -> None:
    field = {"tmall": "created", "jd": "orderStartTime", "pinduoduo": "created_time"}[channel]
    with pytest.raises(ValidationError):
        ADAPTERS[channel].normalise(sample(channel, "paid", **{field: value}), zone=SHANGHAI)


@pytest.mark.parametrize(("channel", "path"), PROPERTY_CASES)
@settings(max_examples=60, deadline=None)
@given(data=st.data(), zone=st.sampled_from(ZONES))
def test_nearly_valid_payload_is_an_order_or_a_named_rejection(
    channel: str, path: Path, data: st.DataObject, zone: str,
) -> None:
    adapter = ADAPTERS[channel]
    payload = data.draw(mutated(load(channel, path.stem)))
    result = outcome_of(adapter, payload, zone)
    assert isinstance(result, ChannelOrder | ValidationError | InvalidRecord | ValueError)
    if isinstance(result, ChannelOrder):
        assert result.placed_at.tzinfo is UTC
        assert adapter.order_id_of(payload) == result.channel_order_id


@pytest.mark.parametrize("channel", list(ADAPTERS))
@settings(max_examples=60, deadline=None)
@given(payload=json_values)
def test_arbitrary_json_is_an_order_or_a_named_rejection(channel: str, payload: Any) -> None:
    result = outcome_of(ADAPTERS[channel], payload, SHANGHAI)
    assert isinstance(result, ChannelOrder | ValidationError | InvalidRecord | ValueError)
    try:
        ADAPTERS[channel].order_id_of(payload)
    except InvalidRecord as exc:
        assert exc.reason == "missing_order_id"


def test_the_web_customer_carries_phone_email_and_wechat_openid_to_the_order() -> None:
    order = ADAPTERS["web"].normalise(sample("web", "paid"), zone=SHANGHAI)
    submitted = to_submitted(order)
    assert (submitted.customer.phone, submitted.customer.wechat_openid) == (
        "13800138000", "oWx3s5Yc-Z1kLmN2pQr8sTuVwXyA")
