"""Tencent Cloud SMS (API 3.0, SendSms version 2021-01-11) over HTTP: sign a request with
TC3-HMAC-SHA256, send one message, read the answer into a class of failure, pull a number's
delivery status, and read the receipt callbacks Tencent pushes to us.

Wire facts follow Tencent's API 3.0 signing document (its worked example is a unit test) and
the SDK's ``tencentcloud/sms/v20210111`` models and error codes. Tencent does no dedupe on
SendSms: a send that timed out may have gone, so it is ``Failure.UNKNOWN``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import aiohttp
from yarl import URL

from services.notifier.providers.base import Failure, Outgoing, Receipt, SendResult, classify
from services.notifier.providers.unanswered import unanswered
from shared.httpsession import LazySession, retry_after_seconds
from shared.timeutil import to_utc, utc_now

log = logging.getLogger(__name__)

NAME = "tencent"
API_VERSION = "2021-01-11"
SERVICE = "sms"
DEFAULT_REGION = "ap-guangzhou"
ALGORITHM = "TC3-HMAC-SHA256"
CONTENT_TYPE = "application/json; charset=utf-8"
SIGNED_HEADERS = ("content-type", "host", "x-tc-action")
CHINA = ZoneInfo("Asia/Shanghai")   # the callback's user_receive_time is China wall time
RECEIPT_ANSWER: dict[str, Any] = {"result": 0, "errmsg": "OK"}  # what we answer a callback
PULL_LIMIT = 100                    # PullSmsSendStatusByPhoneNumber allows at most 100

F = Failure
#: Tencent code -> class, matched exactly or by dotted prefix (:func:`classify`), from the
#: SDK's ``sms/v20210111/errorcodes.py`` and API 3.0's common error codes.
CODES: dict[str, Failure] = {
    # flow control per number (30 s, hour, day, same content) and the API's request rate
    "LimitExceeded": F.THROTTLED,
    "RequestLimitExceeded": F.THROTTLED,
    # the app's own daily cap and the SMS package are used up, or the account is in arrears
    "LimitExceeded.AppDailyLimit": F.QUOTA,
    "LimitExceeded.DailyLimit": F.QUOTA,
    "FailedOperation.InsufficientBalanceInSmsPackage": F.QUOTA,
    "UnauthorizedOperation.SerivceSuspendDueToArrears": F.QUOTA,  # sic, Tencent's spelling
    # this recipient cannot be reached through Tencent
    "InvalidParameterValue.IncorrectPhoneNumber": F.BAD_RECIPIENT,
    "FailedOperation.PhoneNumberInBlacklist": F.BAD_RECIPIENT,
    "FailedOperation.PhoneNumberOnBlacklist": F.BAD_RECIPIENT,
    "UnsupportedOperation.UnsuportedRegion": F.BAD_RECIPIENT,     # sic
    # what the template variables say
    "FailedOperation.ContainSensitiveWord": F.CONTENT,
    "InvalidParameter.DirtyWordFound": F.CONTENT,
    "InvalidParameterValue.ProhibitedUseUrlInTemplateParameter": F.CONTENT,
    "InvalidParameterValue.ContentLengthLimit": F.CONTENT,
    "InvalidParameterValue.TemplateParameterLengthLimit": F.CONTENT,
    "InvalidParameterValue.TemplateParameterFormatError": F.CONTENT,
    # credentials, signature, template, app, request shape
    "AuthFailure": F.CONFIG,
    "FailedOperation": F.CONFIG,
    "FailedOperation.TemplateIncorrectOrUnapproved": F.CONFIG,
    "FailedOperation.SignatureIncorrectOrUnapproved": F.CONFIG,
    "FailedOperation.TemplateParamSetNotMatchApprovedTemplate": F.CONFIG,
    # a notice template classed as marketing (marketing may go out 08:00-22:00 only)
    "FailedOperation.MarketingSendTimeConstraint": F.CONFIG,
    "LimitExceeded.PhoneNumberCountLimit": F.CONFIG,              # > 200 numbers: a bug
    "InvalidParameter": F.CONFIG,
    "InvalidParameterValue": F.CONFIG,
    "MissingParameter": F.CONFIG,
    "UnauthorizedOperation": F.CONFIG,
    "UnsupportedOperation": F.CONFIG,
    "InvalidAction": F.CONFIG,
    "NoSuchVersion": F.CONFIG,
    "UnsupportedRegion": F.CONFIG,
    "InternalError.RequestTimeException": F.CONFIG,               # our clock is off
    # Tencent's side failed this time
    "InternalError": F.TRANSIENT,
    "FailedOperation.ParametersOtherError": F.TRANSIENT,           # "unknown error"
    "ResourceUnavailable": F.TRANSIENT,
}


class QueryFailed(ConnectionError):
    """The status pull gave no usable answer (refused, throttled, down, timed out). Never
    read it as "not sent": that would send twice."""

    def __init__(self, code: str, failure: Failure, detail: str = "") -> None:
        super().__init__(f"tencent PullSmsSendStatusByPhoneNumber failed: {code} {detail}"
                         .strip())
        self.code, self.failure, self.detail = code, failure, detail


# --- signing (TC3-HMAC-SHA256) -----------------------------------------------------------


def _sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def canonical_request(method: str, headers: Mapping[str, str], signed: Sequence[str],
                      payload: bytes, *, uri: str = "/", query: str = "") -> str:
    """Method, URI, query, the signed headers (``name:value``, lowercased, sorted), their
    names, and the payload's SHA-256, one per line."""
    folded = {k.lower(): v for k, v in headers.items()}
    names = sorted(name.lower() for name in signed)
    lines = "".join(f"{name}:{folded.get(name, '').strip().lower()}\n" for name in names)
    return "\n".join([method.upper(), uri, query, lines, ";".join(names),
                      _sha256_hex(payload)])


def utc_day(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def credential_scope(timestamp: int, service: str = SERVICE) -> str:
    # The UTC day of the timestamp: a China-local day breaks every call at 00:00-08:00.
    return f"{utc_day(timestamp)}/{service}/tc3_request"


def string_to_sign(timestamp: int, canonical: str, service: str = SERVICE) -> str:
    return "\n".join([ALGORITHM, str(timestamp), credential_scope(timestamp, service),
                      _sha256_hex(canonical)])


def signature(secret_key: str, timestamp: int, canonical: str,
              service: str = SERVICE) -> str:
    """Hex HMAC-SHA256 of the string to sign, keyed by the key derived from the secret key
    through the day, the service and ``tc3_request``."""
    key = _hmac(f"TC3{secret_key}".encode(), utc_day(timestamp))
    key = _hmac(_hmac(key, service), "tc3_request")
    return hmac.new(key, string_to_sign(timestamp, canonical, service).encode(),
                    hashlib.sha256).hexdigest()


def authorization(secret_id: str, secret_key: str, timestamp: int,
                  headers: Mapping[str, str], payload: bytes, *,
                  signed: Sequence[str] = SIGNED_HEADERS, service: str = SERVICE,
                  method: str = "POST") -> str:
    canonical = canonical_request(method, headers, signed, payload)
    names = ";".join(sorted(name.lower() for name in signed))
    return (f"{ALGORITHM} Credential={secret_id}/{credential_scope(timestamp, service)}, "
            f"SignedHeaders={names}, "
            f"Signature={signature(secret_key, timestamp, canonical, service)}")


class Authorization(NamedTuple):
    secret_id: str
    day: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> Authorization:
    """The parts of a TC3 Authorization header; raises ValueError when it is not one."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise ValueError(f"not {ALGORITHM}")
    parts = dict(item.strip().partition("=")[::2] for item in rest.split(","))
    try:
        secret_id, day, service, terminator = parts["Credential"].split("/")
        signed = tuple(parts["SignedHeaders"].split(";"))
        sig = parts["Signature"]
    except (KeyError, ValueError) as exc:
        raise ValueError(f"malformed Authorization: {exc!r}") from exc
    if terminator != "tc3_request" or not sig:
        raise ValueError("malformed Authorization credential")
    return Authorization(secret_id, day, service, signed, sig)


def request_headers(action: str, payload: bytes, *, host: str, secret_id: str,
                    secret_key: str, at: datetime, region: str = DEFAULT_REGION,
                    version: str = API_VERSION) -> dict[str, str]:
    """Every header of a signed API 3.0 JSON POST."""
    ts = int(to_utc(at).timestamp())
    headers = {"Content-Type": CONTENT_TYPE, "Host": host, "X-TC-Action": action,
               "X-TC-Version": version, "X-TC-Timestamp": str(ts), "X-TC-Region": region}
    headers["Authorization"] = authorization(secret_id, secret_key, ts, headers, payload)
    return headers


# --- requests ----------------------------------------------------------------------------


def e164(phone: str) -> str:
    """``+86`` in front of a bare mainland number; other numbers must already be E.164."""
    phone = phone.strip().replace(" ", "").replace("-", "")
    if phone.startswith("+"):
        return phone
    if phone.startswith("00"):
        return "+" + phone[2:]
    return "+86" + phone if len(phone) == 11 and phone.startswith("1") else "+" + phone


def encode(body: Mapping[str, Any]) -> bytes:
    """The exact bytes that are signed and sent (UTF-8 JSON, no spaces)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def send_body(message: Outgoing, *, sdk_app_id: str, sign_name: str) -> dict[str, Any]:
    """SendSms for one number. Template parameters go as strings in the mapping's order
    (Tencent's ``{1}``, ``{2}``...); ``SessionContext`` carries our message id."""
    return {"PhoneNumberSet": [e164(message.recipient)], "SmsSdkAppId": sdk_app_id,
            "TemplateId": message.template, "SignName": sign_name,
            "TemplateParamSet": [str(v) for v in message.params.values()],
            "SessionContext": message.message_id}


def pull_body(phone: str, *, sdk_app_id: str, begin: datetime, end: datetime,
              limit: int = PULL_LIMIT) -> dict[str, Any]:
    # Offset is "currently fixed at 0" (SDK model docs).
    return {"BeginTime": int(to_utc(begin).timestamp()), "EndTime": int(to_utc(end).timestamp()),
            "Offset": 0, "Limit": limit, "PhoneNumber": e164(phone), "SmsSdkAppId": sdk_app_id}


# --- answers -----------------------------------------------------------------------------


def _response(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    inner = value.get("Response") if isinstance(value, dict) else None
    return inner if isinstance(inner, dict) else None



def failure_for(code: str) -> Failure:
    return classify(CODES, code, F.TRANSIENT)


def error_of(response: Mapping[str, Any]) -> tuple[str, str] | None:
    """A whole-request failure, ``Response.Error`` as (code, message), or None."""
    error = response.get("Error")
    if not isinstance(error, dict):
        return None
    return str(error.get("Code", "")), str(error.get("Message", ""))[:200]


def send_result(status: int, body: bytes, retry_after: str | None = None) -> SendResult:
    """What SendSms's answer means for our one number. Failures come in two places: the
    whole request (``Response.Error``) or the number (``SendStatusSet[0].Code``)."""
    response = _response(body)
    if status == 429:
        return SendResult(NAME, False, "http_429", "", F.THROTTLED,
                          retry_after=retry_after_seconds(retry_after))
    if status >= 500:
        return SendResult(NAME, False, f"http_{status}", body[:200].decode(errors="replace"),
                          F.TRANSIENT, retry_after=retry_after_seconds(retry_after))
    if response is None:
        # A 200 we cannot read may still be an acceptance: query before sending again.
        return SendResult(NAME, False, "bad_answer" if status == 200 else f"http_{status}",
                          body[:200].decode(errors="replace"),
                          F.UNKNOWN if status == 200 else F.CONFIG)
    error = error_of(response)
    if error is not None:
        return SendResult(NAME, False, error[0], error[1], failure_for(error[0]))
    statuses = response.get("SendStatusSet")
    first = statuses[0] if isinstance(statuses, list) and statuses else None
    if not isinstance(first, dict):
        return SendResult(NAME, False, "bad_answer", "no SendStatusSet", F.UNKNOWN)
    code, detail = str(first.get("Code", "")), str(first.get("Message", ""))[:200]
    if code == "Ok":
        return SendResult(NAME, True, code, detail,
                          provider_message_id=str(first.get("SerialNo", "")) or None)
    return SendResult(NAME, False, code, detail, failure_for(code))


def china_time(text: str) -> datetime:
    """``yyyy-MM-dd HH:mm:ss`` China wall time as an aware UTC instant."""
    return to_utc(datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA))


def parse_receipts(body: bytes | str | list[Any]) -> list[Receipt]:
    """The receipts in one status callback: a JSON array of ``{user_receive_time,
    nationcode, mobile, report_status (SUCCESS|FAIL), errmsg, description, sid}``, ``sid``
    being the send's ``SerialNo``. Raises ValueError naming a malformed item."""
    items = json.loads(body) if isinstance(body, bytes | str) else body
    if not isinstance(items, list):
        raise ValueError("a status callback is a JSON array")
    return [_callback_receipt(item, n) for n, item in enumerate(items)]


def _callback_receipt(item: Any, n: int) -> Receipt:
    if not isinstance(item, dict):
        raise ValueError(f"callback item {n}: not an object")
    try:
        sid, status = str(item["sid"]), str(item["report_status"])
        at = china_time(str(item["user_receive_time"]))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"callback item {n}: {exc!r}") from exc
    if status not in ("SUCCESS", "FAIL"):
        raise ValueError(f"callback item {n}: report_status {status!r}")
    mobile = str(item.get("mobile", ""))
    recipient = f"+{item.get('nationcode', '86')}{mobile}" if mobile else None
    return Receipt(NAME, sid, status == "SUCCESS", str(item.get("errmsg", "")),
                   str(item.get("description", "")), at, None, recipient)


def find_status(response: Mapping[str, Any], serial_no: str | None,
                message_id: str | None) -> dict[str, Any] | None:
    """Our message among a pull's statuses: by ``SerialNo``, or by ``SessionContext`` when
    the send timed out and we never learnt the serial number."""
    items = response.get("PullSmsSendStatusSet") or []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        if serial_no and item.get("SerialNo") == serial_no:
            return item
        if not serial_no and message_id and item.get("SessionContext") == message_id:
            return item
    return None


def status_receipt(item: Mapping[str, Any]) -> Receipt:
    """A pulled status as a receipt. The pull carries no carrier code (DELIVRD...): its
    ``ReportStatus`` stands in for it."""
    report = str(item.get("ReportStatus", ""))
    at = datetime.fromtimestamp(int(item.get("UserReceiveTime") or 0), UTC)
    return Receipt(NAME, str(item.get("SerialNo", "")), report == "SUCCESS", report,
                   str(item.get("Description", "")), at,
                   str(item.get("SessionContext") or "") or None,
                   str(item.get("PhoneNumber") or "") or None)


def mask_phone(phone: str) -> str:
    """For logs: the subscriber number with all but its first 3 and last 2 digits hidden."""
    digits = e164(phone).lstrip("+")
    if digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    if len(digits) <= 5:
        return "*" * len(digits)
    return digits[:3] + "*" * (len(digits) - 5) + digits[-2:]


def host_of(base_url: str) -> str:
    """The Host header for ``base_url`` (with the port when it is not the scheme's)."""
    url = URL(base_url)
    return url.host_port_subcomponent or url.host or ""


# --- the client --------------------------------------------------------------------------


class TencentSms:
    """The Tencent Cloud SMS provider. Every call is bounded by ``timeout`` seconds; ``send``
    never raises for Tencent's answer or a network failure, ``query`` raises
    :class:`QueryFailed`."""

    name = NAME
    channel = "sms"

    def __init__(self, base_url: str, secret_id: str, secret_key: str, sdk_app_id: str,
                 sign_name: str, *, region: str = DEFAULT_REGION, timeout: float = 5.0,
                 session: aiohttp.ClientSession | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self._url = base_url.rstrip("/") + "/"
        self._host = host_of(self._url)
        self._secret_id, self._secret_key = secret_id, secret_key
        self._app, self._sign_name, self._region = sdk_app_id, sign_name, region
        self._timeout = timeout
        self._session = LazySession(session)
        self._clock = clock

    async def send(self, message: Outgoing) -> SendResult:
        body = send_body(message, sdk_app_id=self._app, sign_name=self._sign_name)
        try:
            status, answer, retry_after = await self._call("SendSms", body)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            result = unanswered(NAME, exc, self._timeout)
        else:
            result = send_result(status, answer, retry_after)
        self._log(message, result)
        return result

    async def query(self, message: Outgoing, provider_message_id: str | None,
                    sent_at: datetime) -> Receipt | None:
        """The pulled status of ``message``: a receipt once the carrier reported, None when
        Tencent has none (never sent, or no report yet). Pulls reach back 7 days."""
        # A minute of slack either side of our clock and theirs.
        body = pull_body(message.recipient, sdk_app_id=self._app,
                         begin=sent_at - timedelta(minutes=1),
                         end=max(self._clock(), sent_at) + timedelta(minutes=1))
        try:
            status, answer, _ = await self._call("PullSmsSendStatusByPhoneNumber", body)
        except TimeoutError as exc:
            raise QueryFailed("timeout", F.UNKNOWN) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise QueryFailed("connection_error", F.TRANSIENT, repr(exc)[:200]) from exc
        response = _response(answer)
        if status != 200 or response is None:
            raise QueryFailed(f"http_{status}", F.THROTTLED if status == 429 else
                              F.TRANSIENT if status >= 500 or status == 200 else F.CONFIG)
        error = error_of(response)
        if error is not None:
            raise QueryFailed(error[0], failure_for(error[0]), error[1])
        item = find_status(response, provider_message_id, message.message_id)
        return status_receipt(item) if item is not None else None

    async def _call(self, action: str, body: Mapping[str, Any]
                    ) -> tuple[int, bytes, str | None]:
        payload = encode(body)
        headers = request_headers(action, payload, host=self._host, secret_id=self._secret_id,
                                  secret_key=self._secret_key, at=self._clock(),
                                  region=self._region)
        session = self._session.get()
        async with asyncio.timeout(self._timeout):
            async with session.post(self._url, data=payload, headers=headers) as resp:
                return resp.status, await resp.read(), resp.headers.get("Retry-After")

    def _log(self, message: Outgoing, result: SendResult) -> None:
        outcome = "accepted" if result.accepted else str(result.failure)
        log.info("event=sms_send provider=%s message_id=%s phone=%s template=%s outcome=%s "
                 "code=%s provider_message_id=%s", NAME, message.message_id,
                 mask_phone(message.recipient), message.template, outcome, result.code,
                 result.provider_message_id)

    async def close(self) -> None:
        await self._session.close()
