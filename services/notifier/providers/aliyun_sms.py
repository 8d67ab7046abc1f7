"""Aliyun SMS (dysmsapi 2017-05-25, RPC style) over HTTP: sign and send one message, read
Aliyun's answer into a class of failure, ask QuerySendDetails what became of a send, and
read the SmsReport receipts Aliyun pushes to us.

Wire facts (signature v1, parameters, codes, receipt push) follow Aliyun's documentation
(RPC signature, SendSms, QuerySendDetails, SmsReport) and its Python SDK core
(``aliyunsdkcore/auth/composer/rpc_signature_composer.py``). Aliyun does no idempotency on
SMS: a send that timed out may have gone, so it is ``Failure.UNKNOWN`` and the caller
queries before sending again.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import aiohttp

from services.notifier.providers.base import Failure, Outgoing, Receipt, SendResult, classify
from services.notifier.providers.unanswered import unanswered
from shared.httpsession import LazySession, retry_after_seconds
from shared.timeutil import to_utc, utc_now

log = logging.getLogger(__name__)

NAME = "aliyun"
API_VERSION = "2017-05-25"
DEFAULT_REGION = "cn-hangzhou"
CHINA = ZoneInfo("Asia/Shanghai")   # SendDate, send_time, report_time: China wall time
SIGNATURE_METHOD = "HMAC-SHA1"
SIGNATURE_VERSION = "1.0"
RECEIPT_ANSWER: dict[str, Any] = {"code": 0, "msg": "接收成功"}  # what we answer an SmsReport push
QUERY_PAGE_SIZE = 50     # QuerySendDetails allows 1..50
QUERY_MAX_PAGES = 20     # a phone gets few messages a day from one shop; stop somewhere

F = Failure
#: Aliyun code -> class. Exact codes first; ``isv``/``isp`` catch the rest of their family
#: through :func:`classify`'s dotted-prefix match. Sources: Aliyun's SMS error-code pages
#: (alibabacloud.com doc-detail 73694 and 116206) and the POP gateway's answers.
CODES: dict[str, Failure] = {
    # flow control: per number per minute/hour/day, or the gateway's own throttling
    "isv.BUSINESS_LIMIT_CONTROL": F.THROTTLED,
    "isv.BUSINESS_LIMIT_HOUR": F.THROTTLED,
    "isv.BUSINESS_LIMIT_DAY": F.THROTTLED,
    "BUSINESS_LIMIT_CONTROL_MINUTE": F.THROTTLED,
    "BUSINESS_LIMIT_CONTROL_PHONE": F.THROTTLED,
    "Throttling": F.THROTTLED,
    # money: the balance is gone, or the account is stopped for arrears ("业务停机")
    "isv.AMOUNT_NOT_ENOUGH": F.QUOTA,
    "isv.OUT_OF_SERVICE": F.QUOTA,
    # this recipient cannot be reached through Aliyun
    "isv.MOBILE_NUMBER_ILLEGAL": F.BAD_RECIPIENT,
    "isv.PHONE_NUMBER_ILLEGAL": F.BAD_RECIPIENT,
    "isv.NOT_SUPPORTED_COUNTRY": F.BAD_RECIPIENT,
    "isv.COUNTRY_RESTRICTED": F.BAD_RECIPIENT,
    # what the template variables say: banned words, URLs, too long
    "isv.BLACK_KEY_CONTROL_LIMIT": F.CONTENT,
    "isv.PARAM_NOT_SUPPORT_URL": F.CONTENT,
    "isv.PARAM_LENGTH_LIMIT": F.CONTENT,
    # template, signature, request shape, account, credentials
    "isv.SMS_TEMPLATE_ILLEGAL": F.CONFIG,
    "isv.SMS_SIGNATURE_ILLEGAL": F.CONFIG,
    "isv.SMS_SIGN_NAME_ILLEGAL": F.CONFIG,
    "isv.SMS_CONTENT_CODE_ILLEGAL": F.CONFIG,
    "isv.TEMPLATE_MISSING_PARAMETERS": F.CONFIG,
    "isv.CONTENT_MISSING_PARAMETERS": F.CONFIG,
    "isv.INVALID_JSON_PARAM": F.CONFIG,
    "isv.INVALID_PARAMETERS": F.CONFIG,
    "isv.MOBILE_COUNT_OVER_LIMIT": F.CONFIG,
    "isv.PHONE_NUMBER_COUNT_OVER_LIMIT": F.CONFIG,
    "isv.ACCOUNT_NOT_EXISTS": F.CONFIG,
    "isv.ACCOUNT_ABNORMAL": F.CONFIG,
    "isv.PRODUCT_UNSUBSCRIBE": F.CONFIG,
    "isv.PRODUCT_UN_SUBSCRIPT": F.CONFIG,
    "isv.FORBIDDEN_ACTION": F.CONFIG,
    "isv.RAM_CHECK_FAILED": F.CONFIG,
    "isp.RAM_PERMISSION_DENY": F.CONFIG,
    "isv": F.CONFIG,
    # Aliyun's side failed this time
    "isp.SYSTEM_ERROR": F.TRANSIENT,
    "isp.GATEWAY_ERROR": F.TRANSIENT,
    "isp.UNKNOWN": F.TRANSIENT,
    "isv.DATA_NOT_EXIST": F.TRANSIENT,        # "please try again later"
    "isv.BILLING_DEDUCTION_ERROR": F.TRANSIENT,
    "isp": F.TRANSIENT,
    # the POP gateway in front of every RPC API (HTTP 4xx/5xx with the same JSON shape)
    "SignatureDoesNotMatch": F.CONFIG,
    "IncompleteSignature": F.CONFIG,
    "InvalidAccessKeyId": F.CONFIG,
    "InvalidTimeStamp": F.CONFIG,             # our clock is off by more than 15 minutes
    "SignatureNonceUsed": F.CONFIG,
    "Forbidden": F.CONFIG,
    "InvalidAction": F.CONFIG,
    "InvalidVersion": F.CONFIG,
    "MissingParameter": F.CONFIG,
    "MissingPhoneNumbers": F.CONFIG,
    "MissingSignName": F.CONFIG,
    "MissingTemplateCode": F.CONFIG,
    "InvalidParameter": F.CONFIG,
    "ServiceUnavailable": F.TRANSIENT,
    "InternalError": F.TRANSIENT,
    "UnknownError": F.TRANSIENT,
}


class QueryFailed(ConnectionError):
    """QuerySendDetails gave no usable answer (refused, throttled, down, timed out). Never
    read it as "not sent": that would send twice."""

    def __init__(self, code: str, failure: Failure, detail: str = "") -> None:
        super().__init__(f"aliyun QuerySendDetails failed: {code} {detail}".strip())
        self.code, self.failure, self.detail = code, failure, detail


# --- signing -----------------------------------------------------------------------------


def percent_encode(value: str) -> str:
    """RFC 3986 encoding of the UTF-8 bytes, as Aliyun's RPC signature needs it: only
    ``A-Z a-z 0-9 - _ . ~`` stay; a space is ``%20``, ``*`` is ``%2A``, ``~`` stays."""
    return quote(value, safe="-_.~")


def canonical_query(params: Mapping[str, str]) -> str:
    """The parameters (``Signature`` aside) sorted by name, encoded, joined with ``&``."""
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}"
                    for k, v in sorted(params.items()) if k != "Signature")


def string_to_sign(params: Mapping[str, str], method: str = "POST") -> str:
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"


def sign(params: Mapping[str, str], secret: str, method: str = "POST") -> str:
    """Base64 of HMAC-SHA1 over :func:`string_to_sign`, keyed by ``secret + "&"``."""
    digest = hmac.new(f"{secret}&".encode(), string_to_sign(params, method).encode(),
                      hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_matches(params: Mapping[str, str], secret: str, method: str) -> bool:
    given = params.get("Signature", "")
    return bool(given) and hmac.compare_digest(given, sign(params, secret, method))


# --- requests ----------------------------------------------------------------------------


def timestamp(at: datetime) -> str:
    """ISO 8601 in UTC to the second, ``Z``-suffixed, as the ``Timestamp`` parameter."""
    return to_utc(at).strftime("%Y-%m-%dT%H:%M:%SZ")


def common_params(action: str, *, access_key_id: str, at: datetime, nonce: str,
                  region: str = DEFAULT_REGION) -> dict[str, str]:
    return {
        "AccessKeyId": access_key_id, "Action": action, "Version": API_VERSION,
        "RegionId": region, "Format": "JSON", "Timestamp": timestamp(at),
        "SignatureMethod": SIGNATURE_METHOD, "SignatureVersion": SIGNATURE_VERSION,
        "SignatureNonce": nonce,
    }


def aliyun_phone(recipient: str) -> str:
    """A number as Aliyun wants it: mainland numbers as their 11 digits, others as country
    code + number without ``+`` (``+85261234567`` -> ``85261234567``)."""
    digits = recipient.strip().replace(" ", "").replace("-", "")
    for prefix in ("+86", "0086"):
        if digits.startswith(prefix) and len(digits) == len(prefix) + 11:
            return digits[len(prefix):]
    return digits.lstrip("+")


def e164(phone: str) -> str:
    """Aliyun's form of a number back to E.164: 11 mainland digits get ``+86``."""
    phone = phone.strip()
    if phone.startswith("+"):
        return phone
    if len(phone) == 11 and phone.startswith("1"):
        return "+86" + phone
    return "+" + phone


def template_param(params: Mapping[str, str]) -> str:
    """The template variables as the JSON *string* SendSms wants (values are strings)."""
    return json.dumps({k: str(v) for k, v in params.items()}, ensure_ascii=False,
                      separators=(",", ":"))


def send_params(message: Outgoing, *, access_key_id: str, sign_name: str, at: datetime,
                nonce: str, region: str = DEFAULT_REGION) -> dict[str, str]:
    """The unsigned SendSms parameters for one message; ``OutId`` carries our message id,
    which Aliyun echoes in receipts and send details."""
    params = common_params("SendSms", access_key_id=access_key_id, at=at, nonce=nonce,
                           region=region)
    params.update(PhoneNumbers=aliyun_phone(message.recipient), SignName=sign_name,
                  TemplateCode=message.template, OutId=message.message_id)
    if message.params:
        params["TemplateParam"] = template_param(message.params)
    return params


def query_params(phone: str, send_date: date, *, access_key_id: str, at: datetime,
                 nonce: str, biz_id: str | None = None, page: int = 1,
                 page_size: int = QUERY_PAGE_SIZE, region: str = DEFAULT_REGION
                 ) -> dict[str, str]:
    params = common_params("QuerySendDetails", access_key_id=access_key_id, at=at,
                           nonce=nonce, region=region)
    params.update(PhoneNumber=aliyun_phone(phone), SendDate=send_date.strftime("%Y%m%d"),
                  PageSize=str(page_size), CurrentPage=str(page))
    if biz_id:
        params["BizId"] = biz_id
    return params


def china_date(at: datetime) -> date:
    return to_utc(at).astimezone(CHINA).date()


# --- answers -----------------------------------------------------------------------------


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _detail(answer: Mapping[str, Any] | None, body: bytes) -> str:
    text = str(answer.get("Message", "")) if answer else body[:200].decode(errors="replace")
    # SignatureDoesNotMatch echoes the whole string to sign: phone numbers, parameters.
    return text.split(" server string to sign is:")[0][:200]



def failure_for(code: str, status: int = 200) -> Failure:
    """The class of Aliyun code ``code``; an unknown one is the request's fault when the
    HTTP status is 4xx, else Aliyun's."""
    return classify(CODES, code, F.CONFIG if 400 <= status < 500 else F.TRANSIENT)


def send_result(status: int, body: bytes, retry_after: str | None = None) -> SendResult:
    """What SendSms's HTTP answer means: accepted with its ``BizId``, or a classed failure."""
    answer = _json_object(body)
    code = str(answer.get("Code", "")) if answer else ""
    detail = _detail(answer, body)
    if status == 429:
        return SendResult(NAME, False, code or "http_429", detail, F.THROTTLED,
                          retry_after=retry_after_seconds(retry_after))
    if status >= 500:
        return SendResult(NAME, False, code or f"http_{status}", detail, F.TRANSIENT,
                          retry_after=retry_after_seconds(retry_after))
    if status == 200 and code == "OK":
        return SendResult(NAME, True, code, detail,
                          provider_message_id=str(answer.get("BizId", "")) or None)
    if not code:
        # A 200 we cannot read may still be an acceptance: query before sending again.
        failure = F.UNKNOWN if status == 200 else F.CONFIG
        return SendResult(NAME, False, "bad_answer" if status == 200 else f"http_{status}",
                          detail, failure)
    return SendResult(NAME, False, code, detail, failure_for(code, status))


def china_time(text: str) -> datetime:
    """Aliyun's ``yyyy-MM-dd HH:mm:ss`` China wall time as an aware UTC instant."""
    return to_utc(datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA))


def parse_receipts(body: bytes | str | list[Any]) -> list[Receipt]:
    """The receipts in one SmsReport push: a JSON array of
    ``{phone_number, send_time, report_time, success, err_code, err_msg, sms_size, biz_id,
    out_id}`` (times are China wall time). Raises ValueError naming a malformed item."""
    items = json.loads(body) if isinstance(body, bytes | str) else body
    if not isinstance(items, list):
        raise ValueError("an SmsReport push is a JSON array")
    return [_report_receipt(item, n) for n, item in enumerate(items)]


def _report_receipt(item: Any, n: int) -> Receipt:
    if not isinstance(item, dict):
        raise ValueError(f"SmsReport item {n}: not an object")
    try:
        biz_id, success = str(item["biz_id"]), item["success"]
        at = china_time(str(item.get("report_time") or item["send_time"]))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"SmsReport item {n}: {exc!r}") from exc
    if not isinstance(success, bool):
        raise ValueError(f"SmsReport item {n}: success must be true or false")
    phone = item.get("phone_number")
    return Receipt(NAME, biz_id, success, str(item.get("err_code", "")),
                   str(item.get("err_msg", "")), at, str(item.get("out_id") or "") or None,
                   e164(str(phone)) if phone else None)


def pick_detail(answer: Mapping[str, Any], message_id: str | None) -> dict[str, Any] | None:
    """The send detail of our message in a QuerySendDetails page: the one whose ``OutId``
    is ours, or, without an id, the only one (the query named a ``BizId``)."""
    holder = answer.get("SmsSendDetailDTOs") or {}
    details = holder.get("SmsSendDetailDTO", []) if isinstance(holder, dict) else []
    details = [d for d in details if isinstance(d, dict)]
    if message_id:
        return next((d for d in details if d.get("OutId") == message_id), None)
    return details[0] if len(details) == 1 else None


def detail_receipt(detail: Mapping[str, Any], biz_id: str | None,
                   message_id: str | None) -> Receipt | None:
    """A send detail as a receipt: ``SendStatus`` 3 delivered, 2 failed; 1 (waiting for the
    carrier's report) is a receipt that is not final: Aliyun has the message."""
    status = int(detail.get("SendStatus", 1))
    if status not in (2, 3):
        return Receipt(NAME, biz_id or "", False, "WAITING", f"SendStatus {status}",
                       utc_now(), str(detail.get("OutId") or "") or message_id, final=False)
    when = str(detail.get("ReceiveDate") or detail.get("SendDate") or "")
    at = china_time(when) if when else utc_now()
    phone = detail.get("PhoneNum")
    # The detail carries no BizId: without ours (a send that timed out) the receipt has an
    # empty provider id. Its Content is the customer's text: not copied.
    return Receipt(NAME, biz_id or "", status == 3, str(detail.get("ErrCode", "")),
                   f"SendStatus {status}", at, str(detail.get("OutId") or "") or message_id,
                   e164(str(phone)) if phone else None)


def mask_phone(phone: str) -> str:
    """For logs: the subscriber number with all but its first 3 and last 2 digits hidden."""
    digits = aliyun_phone(phone)
    if len(digits) <= 5:
        return "*" * len(digits)
    return digits[:3] + "*" * (len(digits) - 5) + digits[-2:]


# --- the client --------------------------------------------------------------------------


class AliyunSms:
    """The Aliyun SMS provider. Every call is bounded by ``timeout`` seconds; ``send`` never
    raises for Aliyun's answer or a network failure, ``query`` raises :class:`QueryFailed`."""

    name = NAME
    channel = "sms"

    def __init__(self, base_url: str, access_key_id: str, access_key_secret: str,
                 sign_name: str, *, region: str = DEFAULT_REGION, timeout: float = 5.0,
                 session: aiohttp.ClientSession | None = None,
                 clock: Callable[[], datetime] = utc_now,
                 nonce: Callable[[], str] = lambda: str(uuid.uuid4())) -> None:
        self._url = base_url.rstrip("/") + "/"
        self._key_id, self._secret = access_key_id, access_key_secret
        self._sign_name, self._region = sign_name, region
        self._timeout = timeout
        self._session = LazySession(session)
        self._clock, self._nonce = clock, nonce

    async def send(self, message: Outgoing) -> SendResult:
        params = send_params(message, access_key_id=self._key_id, sign_name=self._sign_name,
                             at=self._clock(), nonce=self._nonce(), region=self._region)
        try:
            status, body, retry_after = await self._call(params)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            result = unanswered(NAME, exc, self._timeout)
        else:
            result = send_result(status, body, retry_after)
        self._log(message, result)
        return result

    async def query(self, message: Outgoing, provider_message_id: str | None,
                    sent_at: datetime) -> Receipt | None:
        """What QuerySendDetails knows of ``message``: a receipt once the carrier reported,
        a receipt that is not final while Aliyun waits for the report, None when Aliyun
        has no record of it."""
        # The day is Aliyun's (China) day of the send; a send just before midnight may be
        # filed under the next one.
        days = sorted({china_date(sent_at), china_date(sent_at + timedelta(minutes=5))})
        for day in days:
            for page in range(1, QUERY_MAX_PAGES + 1):
                answer = await self._query_page(message.recipient, day, provider_message_id,
                                                page)
                detail = pick_detail(answer, message.message_id)
                if detail is not None:
                    return detail_receipt(detail, provider_message_id, message.message_id)
                if page * QUERY_PAGE_SIZE >= int(answer.get("TotalCount") or 0):
                    break
        return None

    async def _query_page(self, phone: str, day: date, biz_id: str | None,
                          page: int) -> dict[str, Any]:
        params = query_params(phone, day, access_key_id=self._key_id, at=self._clock(),
                              nonce=self._nonce(), biz_id=biz_id, page=page,
                              region=self._region)
        try:
            status, body, _ = await self._call(params)
        except TimeoutError as exc:
            raise QueryFailed("timeout", F.UNKNOWN) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise QueryFailed("connection_error", F.TRANSIENT, repr(exc)[:200]) from exc
        answer = _json_object(body)
        code = str(answer.get("Code", "")) if answer else ""
        if status != 200 or code != "OK" or answer is None:
            failure = F.TRANSIENT if status >= 500 else failure_for(code, status)
            raise QueryFailed(code or f"http_{status}",
                              F.THROTTLED if status == 429 else failure,
                              _detail(answer, body))
        return answer

    async def _call(self, params: dict[str, str]) -> tuple[int, bytes, str | None]:
        params["Signature"] = sign(params, self._secret, "POST")
        session = self._session.get()
        async with asyncio.timeout(self._timeout):
            async with session.post(self._url, data=params) as resp:
                return resp.status, await resp.read(), resp.headers.get("Retry-After")

    def _log(self, message: Outgoing, result: SendResult) -> None:
        outcome = "accepted" if result.accepted else str(result.failure)
        log.info("event=sms_send provider=%s message_id=%s phone=%s template=%s outcome=%s "
                 "code=%s provider_message_id=%s", NAME, message.message_id,
                 mask_phone(message.recipient), message.template, outcome, result.code,
                 result.provider_message_id)

    async def close(self) -> None:
        await self._session.close()
