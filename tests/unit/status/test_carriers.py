"""Kuaidi100 formats in our words: states, times, signatures, failure answers, pushes."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.status.carriers import (
    CARRIERS,
    KUAIDI100_STATES,
    PUSH_ACK,
    CallbackRejected,
    CarrierError,
    CarrierQuotaExhausted,
    CarrierRejected,
    CarrierThrottled,
    CarrierTimeout,
    CarrierUnavailable,
    NoTrackingYet,
    Scan,
    Stage,
    UnknownCarrier,
    UnknownState,
    build_result,
    carrier_code,
    kuaidi100_com,
    parse_push,
    parse_query_response,
    push_form,
    query_form,
    stage_for_state,
)
from services.status.carriers.kuaidi100 import (
    error_answer,
    format_time,
    md5_upper,
    parse_time,
    retry_after_seconds,
)

SALT = "s4lt-推送"

# Written out here, not read from the code: this table is the contract.
EXPECTED_STAGES = {
    "0": Stage.IN_TRANSIT, "1001": Stage.IN_TRANSIT, "1002": Stage.IN_TRANSIT,
    "1003": Stage.IN_TRANSIT,
    "1": Stage.PICKED_UP, "101": Stage.PICKED_UP, "102": Stage.PICKED_UP,
    "103": Stage.PICKED_UP,
    "2": Stage.EXCEPTION, **{str(c): Stage.EXCEPTION for c in range(201, 211)},
    "3": Stage.DELIVERED, "301": Stage.DELIVERED, "302": Stage.DELIVERED,
    "303": Stage.DELIVERED, "304": Stage.DELIVERED,
    "4": Stage.RETURNED, "401": Stage.RETURNED,
    "5": Stage.OUT_FOR_DELIVERY, "501": Stage.OUT_FOR_DELIVERY,
    "6": Stage.RETURNED,
    "7": Stage.IN_TRANSIT, "8": Stage.IN_TRANSIT, "10": Stage.IN_TRANSIT,
    "11": Stage.IN_TRANSIT, "12": Stage.IN_TRANSIT, "13": Stage.IN_TRANSIT,
    "14": Stage.EXCEPTION,
}


def item(ftime: str, context: str, code: str | None = None, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"time": ftime, "ftime": ftime, "context": context,
                           "location": "", **extra}
    if code is not None:
        row["statusCode"] = code
    return row


def answer(state: str, *items: dict[str, Any], com: str = "shunfeng",
           nu: str = "SF1234567890") -> dict[str, Any]:
    return {"message": "ok", "nu": nu, "ischeck": "0", "condition": "F00", "com": com,
            "status": "200", "state": state, "data": list(items)}


# --- states ------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "stage"), sorted(EXPECTED_STAGES.items()))
def test_every_kuaidi100_state_maps_to_its_stage(code: str, stage: Stage) -> None:
    assert stage_for_state(code) is stage
    assert stage_for_state(int(code)) is stage


def test_the_state_table_has_exactly_the_documented_codes() -> None:
    assert set(KUAIDI100_STATES) == set(EXPECTED_STAGES)


@pytest.mark.parametrize("code", ["9", "15", "99", "1004", "-1", "", "在途", None, True, 3.0])
def test_an_unknown_state_raises_instead_of_guessing(code: object) -> None:
    with pytest.raises(UnknownState) as caught:
        stage_for_state(code)
    assert "unknown Kuaidi100 state" in str(caught.value)
    assert isinstance(caught.value, ValueError)


# --- carriers ----------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "ours"), [
    ("SF", "SF"), ("sf", "SF"), (" shunfeng ", "SF"), ("ZTO", "ZTO"), ("zhongtong", "ZTO"),
    ("yuantong", "YTO"), ("yunda", "YD"), ("YD", "YD"), ("shentong", "STO"),
    ("jd", "JD"), ("JD", "JD"), ("ems", "EMS"), ("EMS", "EMS"),
])
def test_carrier_codes_are_accepted_in_either_vocabulary(given: str, ours: str) -> None:
    assert carrier_code(given) == ours


def test_carrier_table_round_trips() -> None:
    assert {"SF": "shunfeng", "ZTO": "zhongtong", "YTO": "yuantong"}.items() <= CARRIERS.items()
    for ours, com in CARRIERS.items():
        assert carrier_code(com) == ours
        assert kuaidi100_com(ours) == com


@pytest.mark.parametrize("bad", ["dhl", "", "shun feng", None])
def test_unknown_carrier_has_a_readable_message(bad: Any) -> None:
    with pytest.raises(UnknownCarrier) as caught:
        carrier_code(bad)
    assert isinstance(caught.value, ValueError)
    assert repr(bad) in str(caught.value) and "SF/shunfeng" in str(caught.value)


# --- times -------------------------------------------------------------------------------


def test_china_time_just_after_midnight_is_the_previous_day_in_utc() -> None:
    assert parse_time("2024-03-01 00:15:00") == datetime(2024, 2, 29, 16, 15, tzinfo=UTC)


def test_times_without_seconds_and_aware_times_are_read() -> None:
    assert parse_time("2024-06-01 08:00") == datetime(2024, 6, 1, 0, 0, tzinfo=UTC)
    assert parse_time("2024-06-01T08:00:00+08:00") == datetime(2024, 6, 1, 0, 0, tzinfo=UTC)


def test_format_time_writes_china_wall_clock() -> None:
    assert format_time(datetime(2024, 2, 29, 16, 15, tzinfo=UTC)) == "2024-03-01 00:15:00"
    with pytest.raises(ValueError, match="naive"):
        format_time(datetime(2024, 2, 29, 16, 15))  # noqa: DTZ001 - the point of the test


def test_a_scan_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="tz-aware"):
        Scan("SF", "SF1", Stage.PICKED_UP, datetime(2024, 1, 1), "x", None, "1")  # noqa: DTZ001


# --- signatures --------------------------------------------------------------------------


def test_md5_upper_matches_a_known_vector() -> None:
    assert md5_upper("abc") == "900150983CD24FB0D6963F7D28E17F72"


def test_query_form_is_signed_over_param_key_customer() -> None:
    form = query_form("CUST01", "k3y", "SF", "SF1234567890", phone="5678")
    expected = hashlib.md5((form["param"] + "k3y" + "CUST01").encode()).hexdigest().upper()
    assert form["sign"] == expected
    assert form["customer"] == "CUST01"
    param = json.loads(form["param"])
    assert param == {"com": "shunfeng", "num": "SF1234567890", "phone": "5678",
                     "resultv2": "4", "show": "0", "order": "desc"}


def test_query_form_leaves_out_an_absent_phone_and_signs_chinese_as_utf8() -> None:
    form = query_form("客户", "密钥", "yuantong", " YT9693083639795 ")
    assert "phone" not in json.loads(form["param"])
    assert json.loads(form["param"])["num"] == "YT9693083639795"
    raw = (form["param"] + "密钥" + "客户").encode("utf-8")
    assert form["sign"] == hashlib.md5(raw).hexdigest().upper()


def test_push_form_is_signed_over_param_and_salt() -> None:
    form = push_form(answer("0"), SALT)
    assert form["sign"] == hashlib.md5((form["param"] + SALT).encode()).hexdigest().upper()
    assert json.loads(form["param"])["status"] == "polling"
    assert json.loads(push_form(answer("3"), SALT)["param"])["status"] == "shutdown"


# --- query answers -----------------------------------------------------------------------


def test_a_query_answer_gives_scans_oldest_first_in_utc() -> None:
    body = json.dumps(answer(
        "5",
        item("2024-03-02 09:10:00", "【北京朝阳】快递员正在派件", "5", location="北京市朝阳区"),
        item("2024-03-01 22:30:00", "快件离开【广州转运中心】", "1002", areaName="广州市"),
        item("2024-03-01 00:15:00", "【深圳南山】已揽收", "103"),
    ), ensure_ascii=False).encode()
    scans = parse_query_response(body, "SF", "SF1234567890")
    assert [s.stage for s in scans] == [Stage.PICKED_UP, Stage.IN_TRANSIT,
                                        Stage.OUT_FOR_DELIVERY]
    assert [s.provider_state for s in scans] == ["103", "1002", "5"]
    assert scans[0].scanned_at == datetime(2024, 2, 29, 16, 15, tzinfo=UTC)
    assert scans[0].description == "【深圳南山】已揽收"
    assert [s.location for s in scans] == [None, "广州市", "北京市朝阳区"]
    assert {(s.carrier, s.tracking_number) for s in scans} == {("SF", "SF1234567890")}


def test_state_names_give_each_scan_its_stage() -> None:
    body = json.dumps(answer("3", item("2024-03-02 10:00:00", "已签收", status="签收"),
                             item("2024-03-01 10:00:00", "已揽收", status="揽收")))
    assert [s.stage for s in parse_query_response(body, "SF", "SF1")] == [
        Stage.PICKED_UP, Stage.DELIVERED]


def test_with_only_the_parcel_state_the_newest_scan_gets_it() -> None:
    body = json.dumps(answer("3", item("2024-03-03 10:00:00", "签收"),
                             item("2024-03-02 10:00:00", "到达"),
                             item("2024-03-01 10:00:00", "揽收")))
    scans = parse_query_response(body, "SF", "SF1")
    assert [s.provider_state for s in scans] == ["1", "0", "3"]
    assert [s.stage for s in scans] == [Stage.PICKED_UP, Stage.IN_TRANSIT, Stage.DELIVERED]


def test_an_empty_trace_is_no_scans() -> None:
    assert parse_query_response(json.dumps(answer("0")), "SF", "SF1") == []


def test_build_result_round_trips_through_the_query_parser() -> None:
    start = datetime(2024, 5, 1, 1, 0, tzinfo=UTC)
    scans = [Scan("ZTO", "ZT1", stage, start + timedelta(hours=n), f"第{n}站", "杭州", code)
             for n, (stage, code) in enumerate([(Stage.PICKED_UP, "1"),
                                                (Stage.IN_TRANSIT, "1002"),
                                                (Stage.DELIVERED, "301")])]
    result = build_result("ZTO", "ZT1", scans)
    assert result["com"] == "zhongtong" and result["state"] == "301"
    assert result["ischeck"] == "1"
    assert result["data"][0]["ftime"] == "2024-05-01 11:00:00"  # newest first, China time
    assert parse_query_response(json.dumps(result, ensure_ascii=False), "ZTO", "ZT1") == scans


@pytest.mark.parametrize(("code", "error"), [
    ("400", CarrierRejected), ("408", CarrierRejected), ("503", CarrierRejected),
    ("500", NoTrackingYet), ("501", CarrierUnavailable), ("502", CarrierUnavailable),
    ("601", CarrierQuotaExhausted), ("600", CarrierQuotaExhausted),
    ("429", CarrierThrottled), ("777", CarrierRejected),
])
def test_every_failure_answer_raises_its_exception(code: str,
                                                   error: type[CarrierError]) -> None:
    body = json.dumps(error_answer(code), ensure_ascii=False).encode()
    with pytest.raises(error) as caught:
        parse_query_response(body, "SF", "SF1")
    assert type(caught.value) is error
    if isinstance(caught.value, CarrierRejected):
        assert caught.value.code == code


def test_failure_messages_are_kuaidi100s() -> None:
    assert error_answer("500")["message"] == "查询无结果，请隔段时间再查"
    assert error_answer("503")["message"] == "验证签名失败"
    assert error_answer("601")["message"] == "POLL:KEY已过期"


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b"[]", b"\xff\xfe", b""])
def test_a_garbled_answer_is_a_provider_fault(body: bytes) -> None:
    with pytest.raises(CarrierUnavailable):
        parse_query_response(body, "SF", "SF1")


def test_a_malformed_trace_is_a_provider_fault() -> None:
    with pytest.raises(CarrierUnavailable, match="malformed"):
        parse_query_response(json.dumps(answer("0", {"context": "no time"})), "SF", "SF1")


def test_an_unknown_state_in_an_answer_raises_unknown_state() -> None:
    with pytest.raises(UnknownState):
        parse_query_response(json.dumps(answer("99", item("2024-03-01 10:00:00", "x"))),
                             "SF", "SF1")
    with pytest.raises(UnknownState):
        parse_query_response(json.dumps(answer("0", item("2024-03-01 10:00:00", "x", "77"))),
                             "SF", "SF1")


def test_error_kinds_are_distinct_labels_and_retriability_is_right() -> None:
    kinds = [CarrierTimeout.kind, CarrierThrottled.kind, CarrierUnavailable.kind,
             CarrierQuotaExhausted.kind, CarrierRejected.kind, NoTrackingYet.kind,
             UnknownState.kind, UnknownCarrier.kind, CallbackRejected.kind]
    assert len(set(kinds)) == len(kinds)
    assert all(k.replace("_", "").isalpha() and k.islower() for k in kinds)
    assert CarrierTimeout.retriable and CarrierUnavailable.retriable
    assert not CarrierRejected.retriable
    assert CarrierThrottled("slow down", retry_after=2.5).retry_after == 2.5


@pytest.mark.parametrize(("header", "seconds"), [
    ("3", 3.0), ("0.5", 0.5), ("-4", 0.0), ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
    ("soon", None), (None, None), ("", None),
])
def test_retry_after_is_read_in_both_http_forms(header: str | None,
                                                seconds: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, tzinfo=UTC)
    assert retry_after_seconds(header, now) == seconds


# --- push callbacks ----------------------------------------------------------------------


def test_a_push_gives_carrier_number_and_scans() -> None:
    result = answer("0", item("2024-03-01 22:30:00", "运输中", "0"),
                    item("2024-03-01 00:15:00", "已揽收", "1"), com="yuantong", nu="YT1")
    carrier, number, scans = parse_push(push_form(result, SALT), SALT)
    assert (carrier, number) == ("YTO", "YT1")
    assert [s.stage for s in scans] == [Stage.PICKED_UP, Stage.IN_TRANSIT]
    assert PUSH_ACK == {"result": True, "returnCode": "200", "message": "成功"}


def test_a_lower_case_signature_is_accepted() -> None:
    form = push_form(answer("0"), SALT)
    assert parse_push({**form, "sign": form["sign"].lower()}, SALT)[2] == []


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda f: {**f, "sign": "0" * 32}, "bad_signature"),
    (lambda f: {"param": f["param"]}, "bad_signature"),
    (lambda f: {**f, "param": f["param"] + " "}, "bad_signature"),
    (lambda f: {"sign": f["sign"]}, "malformed"),
])
def test_a_tampered_push_is_rejected(mutate: Any, reason: str) -> None:
    with pytest.raises(CallbackRejected) as caught:
        parse_push(mutate(push_form(answer("0"), SALT)), SALT)
    assert caught.value.reason == reason


def test_a_push_signed_with_another_salt_is_rejected() -> None:
    with pytest.raises(CallbackRejected, match="bad_signature"):
        parse_push(push_form(answer("0"), "other"), SALT)


def signed(param: str) -> dict[str, str]:
    return {"param": param, "sign": hashlib.md5((param + SALT).encode()).hexdigest().upper()}


@pytest.mark.parametrize(("param", "reason"), [
    ("{not json", "malformed"),
    ("[]", "malformed"),
    (json.dumps({"status": "polling"}), "malformed"),
    (json.dumps({"lastResult": {**answer("0"), "nu": ""}}), "malformed"),
    (json.dumps({"lastResult": answer("0", {"time": "yesterday", "context": "x"})}),
     "malformed"),
    (json.dumps({"lastResult": answer("0", com="dhl")}), "unknown_carrier"),
    (json.dumps({"lastResult": answer("42", item("2024-03-01 10:00:00", "x"))}),
     "unknown_state"),
])
def test_a_well_signed_but_bad_push_is_rejected_with_its_reason(param: str,
                                                                reason: str) -> None:
    with pytest.raises(CallbackRejected) as caught:
        parse_push(signed(param), SALT)
    assert caught.value.reason == reason
    assert caught.value.kind == "callback_rejected"


# --- property: anything a provider may push comes back intact ----------------------------

# Naive on purpose: Kuaidi100 writes China wall-clock times without a zone.
_EARLIEST = datetime(2000, 1, 1)  # noqa: DTZ001
_LATEST = datetime(2099, 12, 31)  # noqa: DTZ001
_times = st.datetimes(min_value=_EARLIEST, max_value=_LATEST).map(
    lambda t: t.replace(microsecond=0))
_items = st.lists(st.tuples(_times, st.text(max_size=40),
                            st.sampled_from(sorted(EXPECTED_STAGES)),
                            st.one_of(st.none(), st.text(min_size=1, max_size=12))),
                  max_size=8)


@settings(max_examples=150, deadline=None)
@given(com=st.sampled_from(sorted(CARRIERS.values())),
       nu=st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=6, max_size=32),
       state=st.sampled_from(sorted(EXPECTED_STAGES)), rows=_items,
       salt=st.text(max_size=16))
def test_any_valid_last_result_round_trips_push_form_to_parse_push(
        com: str, nu: str, state: str, rows: list[Any], salt: str) -> None:
    rows = sorted(rows, key=lambda r: r[0], reverse=True)  # newest first, as pushed
    data = [{"time": t.strftime("%Y-%m-%d %H:%M:%S"), "ftime": t.strftime("%Y-%m-%d %H:%M:%S"),
             "context": context, "statusCode": code, "location": location or ""}
            for t, context, code, location in rows]
    last_result = answer(state, *data, com=com, nu=nu)

    carrier, number, scans = parse_push(push_form(last_result, salt), salt)

    assert carrier == carrier_code(com) and number == nu
    expected = list(reversed(rows))
    assert len(scans) == len(expected)
    for scan, (t, context, code, location) in zip(scans, expected, strict=True):
        assert scan.scanned_at == t.replace(tzinfo=UTC) - timedelta(hours=8)
        assert scan.description == context
        assert scan.provider_state == code and scan.stage is EXPECTED_STAGES[code]
        assert scan.location == ((location or "").strip() or None)
