"""Kuaidi100 (快递100), the tracking aggregator our carriers reach us through: its real-time
query API (``POST /poll/query.do``) and its subscription push callbacks, in its own formats.

Formats, as Kuaidi100 documents them:

- Query: a form post with ``customer``, ``param`` (JSON: ``com``, ``num``, ``phone``,
  ``resultv2``, ``show``, ``order``) and ``sign`` = upper-case hex MD5 of
  ``param + key + customer``. A success is ``{"message": "ok", "nu", "ischeck",
  "condition", "com", "status": "200", "state", "data": [{"time", "ftime", "context",
  "location", "areaName", "status", "statusCode"}, ...]}``, newest scan first; a failure is
  ``{"result": false, "returnCode": "500", "message": "查询无结果..."}``. Both come
  with HTTP 200, so the JSON decides, not the HTTP status.
- Push: a form post with ``param`` (JSON: ``status`` polling/shutdown/abort/updateall,
  ``billstatus``, ``message``, ``lastResult`` = a query answer) and ``sign`` = upper-case
  MD5 of ``param + salt``; the subscriber answers ``{"result": true, "returnCode": "200",
  "message": "成功"}`` or the push is retried.
- Times are naive ``YYYY-MM-DD HH:MM:SS`` wall-clock times in China (Asia/Shanghai).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import aiohttp

from services.status.carriers.model import (
    KUAIDI100_STATES,
    CallbackRejected,
    CarrierError,
    CarrierQuotaExhausted,
    CarrierRejected,
    CarrierThrottled,
    CarrierTimeout,
    CarrierUnavailable,
    NoTrackingYet,
    Scan,
    UnknownCarrier,
    UnknownState,
    carrier_code,
    kuaidi100_com,
    normalize_state,
    state_for_name,
)
from shared.httpsession import LazySession, retry_after_seconds
from shared.timeutil import localize

log = logging.getLogger(__name__)

QUERY_PATH: Final = "/poll/query.do"
TIME_ZONE: Final = "Asia/Shanghai"
_SHANGHAI = ZoneInfo(TIME_ZONE)
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

#: What a subscriber answers a push with; anything else makes Kuaidi100 push again.
PUSH_ACK: Final[dict[str, Any]] = {"result": True, "returnCode": "200", "message": "成功"}

#: Kuaidi100's failure answers of the query API (``returnCode`` -> its message). 429 is not
#: Kuaidi100's: it is what our simulator (and any gateway in front) says when throttling.
ERROR_MESSAGES: Final[Mapping[str, str]] = {
    "400": "找不到对应公司",
    "408": "电话号码校验不通过",
    "429": "查询频率过快，请稍后再试",
    "500": "查询无结果，请隔段时间再查",
    "501": "服务器错误",
    "502": "服务器繁忙",
    "503": "验证签名失败",
    "601": "POLL:KEY已过期",
}


def error_answer(code: str, message: str | None = None) -> dict[str, Any]:
    """A Kuaidi100 failure answer, e.g. ``error_answer("503")`` for a bad signature."""
    return {"result": False, "returnCode": code,
            "message": message if message is not None else ERROR_MESSAGES.get(code, "")}


def error_for(code: str, message: str) -> CarrierError:
    """The exception for a failure answer. Unknown codes are rejections: retrying a request
    the provider refused for a reason we do not understand only hides the problem."""
    text = f"kuaidi100 {code}: {message}"
    if code == "500":
        return NoTrackingYet(text)
    if code in ("501", "502"):          # server error / server busy
        return CarrierUnavailable(text)
    if code in ("600", "601"):          # key expired / no queries left on the account
        return CarrierQuotaExhausted(text)
    if code == "429":
        return CarrierThrottled(text)
    return CarrierRejected(code, message)  # 400 bad request, 408 phone check, 503 bad sign


# --- signing -----------------------------------------------------------------------------


def md5_upper(text: str) -> str:
    """Kuaidi100's signature: MD5 of the UTF-8 text, as 32 upper-case hex digits."""
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest().upper()


def query_sign(param: str, key: str, customer: str) -> str:
    return md5_upper(param + key + customer)


def push_sign(param: str, salt: str) -> str:
    return md5_upper(param + salt)


def sign_matches(given: str, expected: str) -> bool:
    """Constant-time, case-insensitive (some senders lower-case the hex)."""
    return hmac.compare_digest(given.strip().upper().encode(), expected.encode())


def _dumps(value: Any) -> str:
    # Chinese text stays Chinese on the wire, as Kuaidi100 sends it; the signature is over
    # exactly these characters, so whoever signs must also send this very string.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --- query -------------------------------------------------------------------------------


def query_form(customer: str, key: str, carrier: str, tracking_number: str,
               phone: str | None = None) -> dict[str, str]:
    """The form fields of one real-time query. ``resultv2=4`` asks for a state per scan
    (``statusCode``), which gives every scan its own stage instead of a guess."""
    if not tracking_number.strip():
        raise ValueError("empty tracking number")
    param: dict[str, str] = {"com": kuaidi100_com(carrier), "num": tracking_number.strip()}
    if phone:
        param["phone"] = phone  # SF and ZTO refuse queries without the phone (or its last 4)
    param.update({"resultv2": "4", "show": "0", "order": "desc"})
    text = _dumps(param)
    return {"customer": customer, "param": text, "sign": query_sign(text, key, customer)}


def parse_query_response(body: bytes | str, carrier: str, tracking_number: str) -> list[Scan]:
    """The scans in a query answer, oldest first, or the exception its failure stands for.

    A body that is not a JSON object is a provider fault (a gateway's HTML error page looks
    just like that): :class:`CarrierUnavailable`, so the poller retries later.
    """
    ours = carrier_code(carrier)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CarrierUnavailable(f"kuaidi100 answer is not JSON: {_preview(body)}") from exc
    if not isinstance(doc, dict):
        raise CarrierUnavailable(f"kuaidi100 answer is not an object: {_preview(body)}")
    code = doc.get("returnCode")
    if doc.get("result") is False or (code is not None and str(code) != "200"):
        raise error_for(str(code), str(doc.get("message", "")))
    try:
        return result_scans(doc, ours, tracking_number)
    except UnknownState:
        raise
    except (TypeError, ValueError) as exc:
        raise CarrierUnavailable(f"kuaidi100 answer is malformed: {exc}") from exc


def _preview(body: bytes | str, limit: int = 120) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return repr(text[:limit])


def result_scans(result: Mapping[str, Any], carrier: str, tracking_number: str) -> list[Scan]:
    """Scans of a Kuaidi100 result (a query answer or a push's ``lastResult``), oldest first.

    Each scan's stage comes from its own ``statusCode`` (resultv2=4) or state name
    (``status``, resultv2=1). Without either, only the parcel's ``state`` is known: the
    newest scan gets it, the oldest gets 1 揽收 (Kuaidi100 defines pick-up as the scan that
    creates the first record) and those between get 0 在途.
    Raises :class:`UnknownState` for codes we do not know, ValueError/TypeError when the
    shape is wrong.
    """
    items = result.get("data")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise TypeError("data is not a list")
    if not items:
        return []
    parcel_state = normalize_state(result.get("state"), "state")
    rows = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise TypeError(f"data[{index}] is not an object")
        rows.append((_item_time(item, index), index, item))
    # Newest first, as Kuaidi100 sends them; equal times keep the order they came in.
    rows.sort(key=lambda row: row[0], reverse=True)
    scans: list[Scan] = []
    last = len(rows) - 1
    for position, (at, index, item) in enumerate(rows):
        code = _item_state(item, index)
        if code is None:
            code = parcel_state if position == 0 else ("1" if position == last else "0")
        context = item.get("context")
        if not isinstance(context, str):
            raise TypeError(f"data[{index}].context is not text")
        scans.append(Scan(
            carrier=carrier,
            tracking_number=tracking_number,
            stage=KUAIDI100_STATES[code].stage,
            scanned_at=at,
            description=context,
            location=_item_location(item),
            provider_state=code,
        ))
    scans.reverse()
    return scans


def _item_state(item: Mapping[str, Any], index: int) -> str | None:
    code = item.get("statusCode")
    if code not in (None, ""):
        return normalize_state(code, f"data[{index}].statusCode")
    name = item.get("status")
    if isinstance(name, str) and name.strip():
        return state_for_name(name, f"data[{index}].status")
    return None


def _item_time(item: Mapping[str, Any], index: int) -> datetime:
    for field in ("ftime", "time"):
        raw = item.get(field)
        if isinstance(raw, str) and raw.strip():
            return parse_time(raw)
    raise ValueError(f"data[{index}] has no time")


def parse_time(text: str) -> datetime:
    """A Kuaidi100 time ("2024-03-01 00:15:00", China wall clock) as an aware UTC instant."""
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is not None:
        return value.astimezone(UTC)
    return localize(value, TIME_ZONE)


def format_time(instant: datetime) -> str:
    """The Kuaidi100 spelling of an aware instant: naive China wall-clock time."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("naive datetime: an instant must carry its time zone")
    return instant.astimezone(_SHANGHAI).strftime(_TIME_FORMAT)


def _item_location(item: Mapping[str, Any]) -> str | None:
    for field in ("location", "areaName"):
        value = item.get(field)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def build_result(carrier: str, tracking_number: str, scans: Sequence[Scan], *,
                 order: str = "desc") -> dict[str, Any]:
    """A Kuaidi100 result (query answer / push ``lastResult``) holding ``scans``: what the
    provider would send. The parcel's ``state`` is the newest scan's."""
    newest_first = sorted(scans, key=lambda s: s.scanned_at, reverse=True)
    state = newest_first[0].provider_state if newest_first else "0"
    data = []
    for scan in newest_first if order != "asc" else reversed(newest_first):
        at = format_time(scan.scanned_at)
        info = KUAIDI100_STATES[normalize_state(scan.provider_state)]
        data.append({"time": at, "ftime": at, "context": scan.description,
                     "location": scan.location or "", "areaName": scan.location or "",
                     "status": info.name, "statusCode": scan.provider_state})
    return {"message": "ok", "nu": tracking_number,
            "ischeck": "1" if KUAIDI100_STATES[state].main == "3" else "0",
            "condition": "F00", "com": kuaidi100_com(carrier), "status": "200",
            "state": state, "data": data}


# --- push --------------------------------------------------------------------------------


def push_form(last_result: Mapping[str, Any], salt: str, *, status: str | None = None,
              message: str = "") -> dict[str, str]:
    """The form a provider posts to a subscriber's callback URL for ``last_result``.
    ``status`` defaults as Kuaidi100 sets it: shutdown once signed for (or signed back),
    polling before."""
    if status is None:
        main = KUAIDI100_STATES.get(str(last_result.get("state", "")))
        status = "shutdown" if main is not None and main.main in ("3", "4") else "polling"
    param = _dumps({"status": status, "billstatus": "got", "message": message,
                    "autoCheck": "0", "comOld": "", "comNew": "",
                    "lastResult": dict(last_result)})
    return {"param": param, "sign": push_sign(param, salt)}


def parse_push(form: Mapping[str, str], salt: str) -> tuple[str, str, list[Scan]]:
    """(our carrier code, tracking number, scans oldest first) of a pushed callback.

    The signature is checked over the raw ``param`` text before anything in it is trusted.
    Raises :class:`CallbackRejected` with ``reason`` bad_signature, malformed,
    unknown_carrier or unknown_state.
    """
    param, sign = form.get("param"), form.get("sign")
    if not isinstance(param, str) or not param:
        raise CallbackRejected("malformed", "no param field")
    if not isinstance(sign, str) or not sign:
        raise CallbackRejected("bad_signature", "no sign field")
    if not sign_matches(sign, push_sign(param, salt)):
        raise CallbackRejected("bad_signature", "sign does not match param + salt")
    try:
        doc = json.loads(param)
    except ValueError as exc:
        raise CallbackRejected("malformed", f"param is not JSON: {exc}") from exc
    result = doc.get("lastResult") if isinstance(doc, dict) else None
    if not isinstance(result, dict):
        raise CallbackRejected("malformed", "param has no lastResult object")
    number = result.get("nu")
    if not isinstance(number, str) or not number.strip():
        raise CallbackRejected("malformed", "lastResult has no tracking number (nu)")
    try:
        carrier = carrier_code(result.get("com"))  # type: ignore[arg-type]
    except UnknownCarrier as exc:
        raise CallbackRejected("unknown_carrier", str(exc)) from exc
    try:
        scans = result_scans(result, carrier, number.strip())
    except UnknownState as exc:
        raise CallbackRejected("unknown_state", str(exc)) from exc
    except (TypeError, ValueError) as exc:
        raise CallbackRejected("malformed", str(exc)) from exc
    return carrier, number.strip(), scans


# --- HTTP client -------------------------------------------------------------------------



class Kuaidi100Client:
    """Asks Kuaidi100 for a parcel's scans. One instance per process; every call is bounded
    by ``timeout`` seconds, so a hung provider never holds a caller longer than that."""

    def __init__(self, base_url: str, customer: str, key: str, *, timeout: float = 5.0,
                 session: aiohttp.ClientSession | None = None) -> None:
        self._url = base_url.rstrip("/") + QUERY_PATH
        self._customer = customer
        self._key = key
        self._timeout = timeout
        self._session = LazySession(session)

    async def track(self, carrier: str, tracking_number: str,
                    phone: str | None = None) -> list[Scan]:
        """All scans so far, oldest first. Raises a :class:`CarrierError` subclass."""
        try:
            return await self._track(carrier, tracking_number, phone)
        except CarrierError as exc:
            log.debug("event=kuaidi100_query_failed kind=%s carrier=%s tracking_number=%s "
                      "error=%s", exc.kind, carrier, tracking_number, exc)
            raise

    async def _track(self, carrier: str, tracking_number: str,
                     phone: str | None) -> list[Scan]:
        form = query_form(self._customer, self._key, carrier, tracking_number, phone)
        session = self._session.get()
        try:
            async with asyncio.timeout(self._timeout):
                async with session.post(self._url, data=form) as resp:
                    body = await resp.read()
                    status, retry_after = resp.status, resp.headers.get("Retry-After")
        except TimeoutError as exc:
            raise CarrierTimeout(f"kuaidi100 gave no answer within {self._timeout:g}s "
                                 f"for {carrier} {tracking_number}") from exc
        except aiohttp.ClientError as exc:
            raise CarrierUnavailable(f"kuaidi100 unreachable: {exc!r}") from exc
        if status == 429:
            raise CarrierThrottled(f"kuaidi100 429: {_preview(body)}",
                                   retry_after_seconds(retry_after))
        if status >= 500:
            raise CarrierUnavailable(f"kuaidi100 HTTP {status}: {_preview(body)}")
        if status != 200:
            raise CarrierRejected(str(status), _preview(body))
        try:
            return parse_query_response(body, carrier, tracking_number)
        except CarrierThrottled as exc:
            exc.retry_after = retry_after_seconds(retry_after)
            raise

    async def close(self) -> None:
        await self._session.close()
