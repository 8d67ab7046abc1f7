"""Aliyun SMS wire format, no I/O: the RPC signature against Aliyun's own worked examples,
the SendSms and QuerySendDetails parameters, every class of answer, and SmsReport pushes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.notifier.providers import aliyun_sms as ali
from services.notifier.providers.base import Failure, Outgoing

F = Failure

# Aliyun's RPC signature document: ECS DescribeRegions, AccessKeySecret "testsecret", GET.
DOC_PARAMS = {
    "Format": "XML", "Version": "2014-05-26", "AccessKeyId": "testid",
    "SignatureMethod": "HMAC-SHA1", "Timestamp": "2016-02-23T12:46:24Z",
    "SignatureVersion": "1.0", "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
    "Action": "DescribeRegions",
}
DOC_STRING_TO_SIGN = (
    "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML"
    "%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"
    "%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z"
    "%26Version%3D2014-05-26")

# The SMS document's SendSms example (AccessKeySecret "testSecret", GET).
SMS_DOC_PARAMS = {
    "AccessKeyId": "testId", "Action": "SendSms", "Format": "XML", "OutId": "123",
    "PhoneNumbers": "15300000001", "RegionId": "cn-hangzhou", "SignName": "阿里云短信测试专用",
    "SignatureMethod": "HMAC-SHA1", "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
    "SignatureVersion": "1.0", "TemplateCode": "SMS_71390007",
    "TemplateParam": '{"customer":"test"}', "Timestamp": "2017-07-12T02:42:19Z",
    "Version": "2017-05-25",
}

AT = datetime(2024, 3, 1, 17, 30, 5, tzinfo=UTC)   # 2024-03-02 01:30:05 in China


def message(**changes: object) -> Outgoing:
    base = {"message_id": "6f1c0b9e-0000-5000-8000-000000000001", "recipient": "+8613812345678",
            "template": "SMS_480100001", "params": {"order_id": "JD100", "status": "已发货"}}
    return Outgoing(**(base | changes))  # type: ignore[arg-type]


# --- signing -----------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "encoded"), [
    ("a b*c~d", "a%20b%2Ac~d"), ("/", "%2F"), ("+=&", "%2B%3D%26"), ("-_.", "-_."),
    ("阿", "%E9%98%BF"), ("2016-02-23T12:46:24Z", "2016-02-23T12%3A46%3A24Z"),
])
def test_percent_encoding_follows_aliyuns_rfc3986_rules(raw: str, encoded: str) -> None:
    assert ali.percent_encode(raw) == encoded


def test_the_string_to_sign_matches_aliyuns_worked_example() -> None:
    assert ali.string_to_sign(DOC_PARAMS, "GET") == DOC_STRING_TO_SIGN


def test_the_signature_matches_aliyuns_worked_example() -> None:
    assert ali.sign(DOC_PARAMS, "testsecret", "GET") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_the_signature_matches_the_sms_documents_sendsms_example() -> None:
    assert ali.sign(SMS_DOC_PARAMS, "testSecret", "GET") == "zJDF+Lrzhj/ThnlvIToysFRq6t4="


def test_the_method_is_part_of_what_is_signed() -> None:
    post = ali.sign(DOC_PARAMS, "testsecret", "POST")
    assert ali.string_to_sign(DOC_PARAMS, "post").startswith("POST&%2F&")
    assert post != ali.sign(DOC_PARAMS, "testsecret", "GET")
    assert post == "MxbnVAM4w6sft9xjVpe/GCKueuk="   # recomputed independently elsewhere


def test_a_signature_is_checked_without_itself_and_fails_on_any_change() -> None:
    signed = {**SMS_DOC_PARAMS, "Signature": ali.sign(SMS_DOC_PARAMS, "testSecret", "GET")}
    assert ali.signature_matches(signed, "testSecret", "GET")
    assert not ali.signature_matches(signed, "otherSecret", "GET")
    assert not ali.signature_matches(signed, "testSecret", "POST")
    assert not ali.signature_matches({**signed, "OutId": "124"}, "testSecret", "GET")
    assert not ali.signature_matches(SMS_DOC_PARAMS, "testSecret", "GET")


# --- requests ----------------------------------------------------------------------------


def test_sendsms_parameters_carry_our_id_and_the_variables_as_a_json_string() -> None:
    params = ali.send_params(message(), access_key_id="AK", sign_name="订单通知", at=AT,
                             nonce="n-1")
    assert params == {
        "AccessKeyId": "AK", "Action": "SendSms", "Version": "2017-05-25",
        "RegionId": "cn-hangzhou", "Format": "JSON", "Timestamp": "2024-03-01T17:30:05Z",
        "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0", "SignatureNonce": "n-1",
        "PhoneNumbers": "13812345678", "SignName": "订单通知", "TemplateCode": "SMS_480100001",
        "OutId": "6f1c0b9e-0000-5000-8000-000000000001",
        "TemplateParam": '{"order_id":"JD100","status":"已发货"}',
    }
    assert json.loads(params["TemplateParam"]) == {"order_id": "JD100", "status": "已发货"}


def test_a_template_without_variables_sends_no_template_param() -> None:
    params = ali.send_params(message(params={}), access_key_id="AK", sign_name="S", at=AT,
                             nonce="n", region="cn-shanghai")
    assert "TemplateParam" not in params and params["RegionId"] == "cn-shanghai"


def test_the_timestamp_is_utc_whatever_the_clocks_zone() -> None:
    from zoneinfo import ZoneInfo

    local = datetime(2024, 3, 2, 1, 30, 5, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert ali.timestamp(local) == "2024-03-01T17:30:05Z"


@pytest.mark.parametrize(("given", "sent"), [
    ("+8613812345678", "13812345678"), ("008613812345678", "13812345678"),
    ("13812345678", "13812345678"), ("+85261234567", "85261234567"),
    ("+86 138-1234-5678", "13812345678"),
])
def test_numbers_go_as_aliyun_wants_them(given: str, sent: str) -> None:
    assert ali.aliyun_phone(given) == sent


def test_the_send_date_of_a_query_is_chinas_day() -> None:
    params = ali.query_params("+8613812345678", ali.china_date(AT), access_key_id="AK",
                              at=AT, nonce="n", biz_id="123^0", page=2)
    assert params["Action"] == "QuerySendDetails"
    assert (params["PhoneNumber"], params["SendDate"], params["BizId"]) == (
        "13812345678", "20240302", "123^0")
    assert (params["PageSize"], params["CurrentPage"]) == ("50", "2")
    assert "BizId" not in ali.query_params("13812345678", ali.china_date(AT),
                                           access_key_id="AK", at=AT, nonce="n")


# --- answers -----------------------------------------------------------------------------


def answer(code: str, message: str = "", **extra: str) -> bytes:
    return json.dumps({"Code": code, "Message": message, "RequestId": "R1", **extra},
                      ensure_ascii=False).encode()


def test_ok_is_an_acceptance_with_the_biz_id() -> None:
    result = ali.send_result(200, answer("OK", "OK", BizId="900619746936498440^0"))
    assert result.accepted and result.failure is None
    assert (result.provider, result.code, result.provider_message_id) == (
        "aliyun", "OK", "900619746936498440^0")


@pytest.mark.parametrize(("status", "code", "failure"), [
    (200, "isv.BUSINESS_LIMIT_CONTROL", F.THROTTLED),
    (200, "isv.BUSINESS_LIMIT_DAY", F.THROTTLED),
    (400, "Throttling.User", F.THROTTLED),
    (200, "isv.AMOUNT_NOT_ENOUGH", F.QUOTA),
    (200, "isv.OUT_OF_SERVICE", F.QUOTA),
    (200, "isv.MOBILE_NUMBER_ILLEGAL", F.BAD_RECIPIENT),
    (200, "isv.NOT_SUPPORTED_COUNTRY", F.BAD_RECIPIENT),
    (200, "isv.BLACK_KEY_CONTROL_LIMIT", F.CONTENT),
    (200, "isv.PARAM_NOT_SUPPORT_URL", F.CONTENT),
    (200, "isv.PARAM_LENGTH_LIMIT", F.CONTENT),
    (200, "isv.SMS_TEMPLATE_ILLEGAL", F.CONFIG),
    (200, "isv.SMS_SIGNATURE_ILLEGAL", F.CONFIG),
    (200, "isv.TEMPLATE_MISSING_PARAMETERS", F.CONFIG),
    (200, "isv.INVALID_JSON_PARAM", F.CONFIG),
    (200, "isv.MOBILE_COUNT_OVER_LIMIT", F.CONFIG),
    (200, "isp.RAM_PERMISSION_DENY", F.CONFIG),
    (200, "isv.SOMETHING_NEW", F.CONFIG),
    (200, "isp.SYSTEM_ERROR", F.TRANSIENT),
    (200, "isp.SOMETHING_NEW", F.TRANSIENT),
    (400, "SignatureDoesNotMatch", F.CONFIG),
    (404, "InvalidAccessKeyId.NotFound", F.CONFIG),
    (400, "InvalidTimeStamp.Expired", F.CONFIG),
    (400, "MissingPhoneNumbers", F.CONFIG),
    (400, "NeverSeenBefore", F.CONFIG),
    (200, "NeverSeenBefore", F.TRANSIENT),
])
def test_every_code_has_its_class(status: int, code: str, failure: Failure) -> None:
    result = ali.send_result(status, answer(code, "说明"))
    assert not result.accepted
    assert (result.code, result.failure, result.detail) == (code, failure, "说明")


def test_a_signature_mismatch_does_not_echo_the_string_to_sign() -> None:
    body = answer("SignatureDoesNotMatch", "Specified signature is not matched with our "
                  "calculation. server string to sign is:POST&%2F&PhoneNumbers%3D138...")
    result = ali.send_result(400, body)
    assert result.failure == F.CONFIG and "138" not in result.detail


def test_http_429_is_throttled_with_retry_after() -> None:
    assert ali.send_result(429, b"busy", "7").retry_after == 7.0
    result = ali.send_result(429, b"", "Wed, 21 Oct 2015 07:28:00 GMT")
    assert result.failure == F.THROTTLED and result.retry_after == 0.0
    assert ali.send_result(429, b"", None).retry_after is None


def test_5xx_is_transient_and_an_unreadable_200_is_unknown() -> None:
    outage = ali.send_result(503, b"<html>503</html>")
    assert (outage.code, outage.failure) == ("http_503", F.TRANSIENT)
    assert ali.send_result(500, answer("isp.SYSTEM_ERROR")).failure == F.TRANSIENT
    garbled = ali.send_result(200, b"<html>ok</html>")
    assert (garbled.code, garbled.failure) == ("bad_answer", F.UNKNOWN)
    assert ali.send_result(404, b"not found").failure == F.CONFIG


# --- receipts ----------------------------------------------------------------------------


REPORT = [
    {"phone_number": "13812345678", "send_time": "2017-01-01 00:00:00",
     "report_time": "2017-01-01 00:00:05", "success": True, "err_code": "DELIVERED",
     "err_msg": "用户接收成功", "sms_size": "1", "biz_id": "12345^0", "out_id": "ours-1"},
    {"phone_number": "13900000000", "send_time": "2017-01-01 08:00:00",
     "report_time": "2017-01-01 08:00:30", "success": False, "err_code": "MK:0001",
     "err_msg": "用户接收失败", "sms_size": "1", "biz_id": "12346^0", "out_id": ""},
]


def test_an_smsreport_push_is_read_into_receipts() -> None:
    delivered, failed = ali.parse_receipts(json.dumps(REPORT).encode())
    assert delivered.provider == "aliyun" and delivered.provider_message_id == "12345^0"
    assert (delivered.delivered, delivered.code, delivered.detail) == (
        True, "DELIVERED", "用户接收成功")
    assert delivered.at == datetime(2016, 12, 31, 16, 0, 5, tzinfo=UTC)   # China time in
    assert (delivered.message_id, delivered.recipient) == ("ours-1", "+8613812345678")
    assert (failed.delivered, failed.code, failed.message_id) == (False, "MK:0001", None)


@pytest.mark.parametrize("body", [
    b'{"biz_id": "1"}', b"not json", json.dumps([{"success": True}]).encode(),
    json.dumps([{**REPORT[0], "success": "true"}]).encode(),
    json.dumps([{**REPORT[0], "report_time": "yesterday"}]).encode(), b"[1]",
])
def test_a_malformed_push_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        ali.parse_receipts(body)


def test_we_answer_a_push_as_aliyun_expects() -> None:
    assert ali.RECEIPT_ANSWER == {"code": 0, "msg": "接收成功"}


# The JSON shape of a QuerySendDetails answer (from Aliyun's Go SDK tests).
DETAILS = {
    "TotalCount": 1, "Message": "OK", "RequestId": "0F8F57E7", "Code": "OK",
    "SmsSendDetailDTOs": {"SmsSendDetailDTO": [
        {"OutId": "123", "SendDate": "2018-04-27 14:19:30", "SendStatus": 3,
         "ReceiveDate": "2018-04-27 14:19:35", "ErrCode": "DELIVRD",
         "TemplateCode": "SMS_132940015", "Content": "【签名】正文", "PhoneNum": "15300000001"}]},
}


def test_a_send_detail_is_found_by_our_id_and_read_as_a_receipt() -> None:
    detail = ali.pick_detail(DETAILS, "123")
    assert detail is not None and ali.pick_detail(DETAILS, "124") is None
    receipt = ali.detail_receipt(detail, "55^0", "123")
    assert receipt is not None
    assert (receipt.delivered, receipt.code, receipt.provider_message_id) == (
        True, "DELIVRD", "55^0")
    assert receipt.at == datetime(2018, 4, 27, 6, 19, 35, tzinfo=UTC)
    assert receipt.recipient == "+8615300000001" and "正文" not in receipt.detail


def test_send_status_1_is_sent_without_a_result_yet_and_2_is_a_failure() -> None:
    detail = DETAILS["SmsSendDetailDTOs"]["SmsSendDetailDTO"][0]   # type: ignore[index]
    waiting = ali.detail_receipt({**detail, "SendStatus": 1, "ReceiveDate": ""}, None, "123")
    assert waiting is not None and not waiting.final and not waiting.delivered
    failed = ali.detail_receipt({**detail, "SendStatus": 2, "ErrCode": "MK:0001"}, None, "x")
    assert failed is not None and not failed.delivered and failed.code == "MK:0001"
    assert failed.provider_message_id == ""   # a timed-out send: we never learnt the BizId


def test_without_our_id_only_a_single_detail_is_taken() -> None:
    two = {"SmsSendDetailDTOs": {"SmsSendDetailDTO": [{"OutId": "a"}, {"OutId": "b"}]}}
    assert ali.pick_detail(two, None) is None
    assert ali.pick_detail(DETAILS, None) is not None
    assert ali.pick_detail({"SmsSendDetailDTOs": {}}, "123") is None


def test_phone_numbers_are_masked_for_logs() -> None:
    assert ali.mask_phone("+8613812345678") == "138******78"
    assert ali.mask_phone("+85261234567") == "852******67"
    assert ali.mask_phone("123") == "***"
