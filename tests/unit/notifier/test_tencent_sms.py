"""Tencent Cloud SMS wire format, no I/O: TC3-HMAC-SHA256 against the worked example of
Tencent's API 3.0 signing document, the SendSms body, every class of answer, status pulls
and receipt callbacks."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest

from services.notifier.providers import tencent_sms as tc
from services.notifier.providers.base import Failure, Outgoing

F = Failure

# Tencent's signing document: CVM DescribeInstances, POST, SecretKey below, 1551113065.
DOC_SECRET_KEY = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"
DOC_SECRET_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"
DOC_TIMESTAMP = 1551113065
DOC_PAYLOAD = (b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], '
               b'"Name": "instance-name"}]}')
DOC_HEADERS = {"Content-Type": "application/json; charset=utf-8",
               "Host": "cvm.tencentcloudapi.com", "X-TC-Action": "DescribeInstances"}
DOC_CANONICAL = ("POST\n/\n\ncontent-type:application/json; charset=utf-8\n"
                 "host:cvm.tencentcloudapi.com\n\ncontent-type;host\n"
                 "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064")
DOC_STRING_TO_SIGN = ("TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n"
                      "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031")
DOC_SIGNATURE = "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"


def message(**changes: object) -> Outgoing:
    base = {"message_id": "6f1c0b9e-0000-5000-8000-000000000002", "recipient": "+8613812345678",
            "template": "1880001", "params": {"status": "已发货", "order_id": "JD100"}}
    return Outgoing(**(base | changes))  # type: ignore[arg-type]


# --- signing -----------------------------------------------------------------------------


def test_the_payload_hash_and_canonical_request_match_tencents_worked_example() -> None:
    assert hashlib.sha256(DOC_PAYLOAD).hexdigest() == DOC_CANONICAL.rsplit("\n", 1)[1]
    assert tc.canonical_request("POST", DOC_HEADERS, ("host", "content-type"),
                                DOC_PAYLOAD) == DOC_CANONICAL


def test_the_string_to_sign_matches_tencents_worked_example() -> None:
    assert tc.string_to_sign(DOC_TIMESTAMP, DOC_CANONICAL, "cvm") == DOC_STRING_TO_SIGN


def test_the_signature_matches_tencents_worked_example() -> None:
    assert tc.signature(DOC_SECRET_KEY, DOC_TIMESTAMP, DOC_CANONICAL, "cvm") == DOC_SIGNATURE


def test_the_authorization_header_matches_tencents_worked_example() -> None:
    assert tc.authorization(DOC_SECRET_ID, DOC_SECRET_KEY, DOC_TIMESTAMP, DOC_HEADERS,
                            DOC_PAYLOAD, signed=("content-type", "host"), service="cvm") == (
        f"TC3-HMAC-SHA256 Credential={DOC_SECRET_ID}/2019-02-25/cvm/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={DOC_SIGNATURE}")


def test_the_credential_day_is_utcs_not_chinas() -> None:
    # 1551113065 is 2019-02-26 00:44:25 in China, 2019-02-25 in UTC (the document's warning).
    assert tc.credential_scope(DOC_TIMESTAMP) == "2019-02-25/sms/tc3_request"


def test_request_headers_are_signed_over_what_is_sent() -> None:
    payload = tc.encode(tc.send_body(message(), sdk_app_id="1400000001", sign_name="签名"))
    at = datetime.fromtimestamp(DOC_TIMESTAMP, UTC)
    headers = tc.request_headers("SendSms", payload, host="127.0.0.1:8201", secret_id="AKID",
                                 secret_key="key", at=at)
    assert {k: v for k, v in headers.items() if k != "Authorization"} == {
        "Content-Type": "application/json; charset=utf-8", "Host": "127.0.0.1:8201",
        "X-TC-Action": "SendSms", "X-TC-Version": "2021-01-11",
        "X-TC-Timestamp": "1551113065", "X-TC-Region": "ap-guangzhou"}
    auth = tc.parse_authorization(headers["Authorization"])
    assert auth.secret_id == "AKID" and auth.day == "2019-02-25" and auth.service == "sms"
    assert auth.signed_headers == ("content-type", "host", "x-tc-action")
    canonical = tc.canonical_request("POST", headers, auth.signed_headers, payload)
    assert auth.signature == tc.signature("key", DOC_TIMESTAMP, canonical)
    # The action's value is signed lowercased, as the SDKs do.
    assert "x-tc-action:sendsms\n" in canonical


@pytest.mark.parametrize("value", [
    "", "TC3-HMAC-SHA1 Credential=a/b/c/tc3_request, SignedHeaders=host, Signature=x",
    "TC3-HMAC-SHA256 Credential=a/b/tc3_request, SignedHeaders=host, Signature=x",
    "TC3-HMAC-SHA256 Credential=a/b/c/other, SignedHeaders=host, Signature=x",
    "TC3-HMAC-SHA256 Credential=a/b/c/tc3_request, SignedHeaders=host",
])
def test_a_malformed_authorization_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        tc.parse_authorization(value)


# --- requests ----------------------------------------------------------------------------


def test_the_sendsms_body_lists_the_variables_in_the_mappings_order() -> None:
    body = tc.send_body(message(), sdk_app_id="1400000001", sign_name="订单通知")
    assert body == {"PhoneNumberSet": ["+8613812345678"], "SmsSdkAppId": "1400000001",
                    "TemplateId": "1880001", "SignName": "订单通知",
                    "TemplateParamSet": ["已发货", "JD100"],
                    "SessionContext": "6f1c0b9e-0000-5000-8000-000000000002"}
    assert tc.encode(body).decode().startswith('{"PhoneNumberSet":["+8613812345678"]')
    assert "订单通知".encode() in tc.encode(body)   # UTF-8, not \\u escapes


@pytest.mark.parametrize(("given", "sent"), [
    ("+8613812345678", "+8613812345678"), ("13812345678", "+8613812345678"),
    ("008613812345678", "+8613812345678"), ("+85261234567", "+85261234567"),
])
def test_numbers_go_in_e164(given: str, sent: str) -> None:
    assert tc.e164(given) == sent


def test_the_pull_body_names_the_window_and_the_number() -> None:
    begin, end = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 1, 0, 5, tzinfo=UTC)
    assert tc.pull_body("13812345678", sdk_app_id="1400000001", begin=begin, end=end) == {
        "BeginTime": 1709251200, "EndTime": 1709251500, "Offset": 0, "Limit": 100,
        "PhoneNumber": "+8613812345678", "SmsSdkAppId": "1400000001"}


def test_the_host_header_keeps_a_non_default_port() -> None:
    assert tc.host_of("http://127.0.0.1:8201/") == "127.0.0.1:8201"
    assert tc.host_of("https://sms.tencentcloudapi.com") == "sms.tencentcloudapi.com"


# --- answers -----------------------------------------------------------------------------


def per_number(code: str, serial: str = "", message: str = "m") -> bytes:
    return json.dumps({"Response": {"SendStatusSet": [
        {"SerialNo": serial, "PhoneNumber": "+8613812345678", "Fee": 1 if serial else 0,
         "SessionContext": "x", "Code": code, "Message": message, "IsoCode": "CN"}],
        "RequestId": "R1"}}).encode()


def whole(code: str, message: str = "m") -> bytes:
    return json.dumps({"Response": {"Error": {"Code": code, "Message": message},
                                    "RequestId": "R1"}}).encode()


def test_ok_is_an_acceptance_with_the_serial_number() -> None:
    result = tc.send_result(200, per_number("Ok", "3369:2441587708168492004", "send success"))
    assert result.accepted and result.failure is None
    assert (result.provider, result.code, result.provider_message_id) == (
        "tencent", "Ok", "3369:2441587708168492004")


@pytest.mark.parametrize(("code", "failure"), [
    ("LimitExceeded.PhoneNumberThirtySecondLimit", F.THROTTLED),
    ("LimitExceeded.PhoneNumberDailyLimit", F.THROTTLED),
    ("LimitExceeded.DeliveryFrequencyLimit", F.THROTTLED),
    ("RequestLimitExceeded", F.THROTTLED),
    ("LimitExceeded.AppDailyLimit", F.QUOTA),
    ("FailedOperation.InsufficientBalanceInSmsPackage", F.QUOTA),
    ("UnauthorizedOperation.SerivceSuspendDueToArrears", F.QUOTA),
    ("InvalidParameterValue.IncorrectPhoneNumber", F.BAD_RECIPIENT),
    ("FailedOperation.PhoneNumberInBlacklist", F.BAD_RECIPIENT),
    ("FailedOperation.ContainSensitiveWord", F.CONTENT),
    ("InvalidParameterValue.ProhibitedUseUrlInTemplateParameter", F.CONTENT),
    ("InvalidParameterValue.TemplateParameterFormatError", F.CONTENT),
    ("AuthFailure.SignatureFailure", F.CONFIG),
    ("AuthFailure.SecretIdNotFound", F.CONFIG),
    ("FailedOperation.TemplateIncorrectOrUnapproved", F.CONFIG),
    ("FailedOperation.SignatureIncorrectOrUnapproved", F.CONFIG),
    ("FailedOperation.TemplateParamSetNotMatchApprovedTemplate", F.CONFIG),
    ("FailedOperation.MarketingSendTimeConstraint", F.CONFIG),
    ("LimitExceeded.PhoneNumberCountLimit", F.CONFIG),
    ("InvalidParameterValue.SdkAppIdNotExist", F.CONFIG),
    ("UnauthorizedOperation.SmsSdkAppIdVerifyFail", F.CONFIG),
    ("MissingParameter.EmptyPhoneNumberSet", F.CONFIG),
    ("InternalError.RequestTimeException", F.CONFIG),
    ("InternalError.Timeout", F.TRANSIENT),
    ("InternalError.SendAndRecvFail", F.TRANSIENT),
    ("FailedOperation.ParametersOtherError", F.TRANSIENT),
    ("SomethingNew.Entirely", F.TRANSIENT),
])
def test_every_code_has_its_class_per_number_and_for_the_whole_request(
        code: str, failure: Failure) -> None:
    for body in (per_number(code), whole(code)):
        result = tc.send_result(200, body)
        assert not result.accepted
        assert (result.code, result.failure, result.detail) == (code, failure, "m")


def test_http_failures_and_unreadable_answers() -> None:
    throttled = tc.send_result(429, b"", "2")
    assert (throttled.failure, throttled.retry_after) == (F.THROTTLED, 2.0)
    assert tc.send_result(502, b"bad gateway").failure == F.TRANSIENT
    assert tc.send_result(200, b"<html/>").failure == F.UNKNOWN
    assert tc.send_result(200, b'{"Response": {"RequestId": "R"}}').failure == F.UNKNOWN
    assert tc.send_result(403, b"forbidden").failure == F.CONFIG


# --- receipts ----------------------------------------------------------------------------


CALLBACK = [
    {"user_receive_time": "2015-10-17 08:03:04", "nationcode": "86", "mobile": "13800000000",
     "report_status": "SUCCESS", "errmsg": "DELIVRD", "description": "用户短信送达成功",
     "sid": "3369:1"},
    {"user_receive_time": "2015-10-17 08:03:09", "nationcode": "86", "mobile": "13900000000",
     "report_status": "FAIL", "errmsg": "UNDELIV", "description": "用户短信未送达",
     "sid": "3369:2"},
]


def test_a_status_callback_is_read_into_receipts() -> None:
    delivered, failed = tc.parse_receipts(json.dumps(CALLBACK).encode())
    assert (delivered.provider, delivered.provider_message_id, delivered.delivered) == (
        "tencent", "3369:1", True)
    assert (delivered.code, delivered.detail) == ("DELIVRD", "用户短信送达成功")
    assert delivered.at == datetime(2015, 10, 17, 0, 3, 4, tzinfo=UTC)
    assert delivered.recipient == "+8613800000000" and delivered.message_id is None
    assert (failed.delivered, failed.code) == (False, "UNDELIV")


@pytest.mark.parametrize("body", [
    b"{}", b"[1]", b"nope", json.dumps([{**CALLBACK[0], "report_status": "OK"}]).encode(),
    json.dumps([{k: v for k, v in CALLBACK[0].items() if k != "sid"}]).encode(),
])
def test_a_malformed_callback_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        tc.parse_receipts(body)


def test_we_answer_a_callback_as_tencent_expects() -> None:
    assert tc.RECEIPT_ANSWER == {"result": 0, "errmsg": "OK"}


PULL = {"PullSmsSendStatusSet": [
    {"UserReceiveTime": 1709251230, "CountryCode": "86", "SubscriberNumber": "13812345678",
     "PhoneNumber": "+8613812345678", "SerialNo": "3369:9", "ReportStatus": "FAIL",
     "Description": "用户短信未送达", "SessionContext": "ours-9"}], "RequestId": "R"}


def test_a_pulled_status_is_found_by_serial_or_by_our_id() -> None:
    assert tc.find_status(PULL, "3369:9", "ours-9") is not None
    assert tc.find_status(PULL, None, "ours-9") is not None
    assert tc.find_status(PULL, "3369:8", "ours-9") is None
    assert tc.find_status(PULL, None, "ours-8") is None
    receipt = tc.status_receipt(PULL["PullSmsSendStatusSet"][0])   # type: ignore[index]
    assert (receipt.delivered, receipt.code, receipt.message_id) == (False, "FAIL", "ours-9")
    assert receipt.at == datetime(2024, 3, 1, 0, 0, 30, tzinfo=UTC)


def test_phone_numbers_are_masked_for_logs() -> None:
    assert tc.mask_phone("+8613812345678") == "138******78"
    assert tc.mask_phone("+85261234567") == "852******67"
