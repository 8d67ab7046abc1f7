"""The WeChat Official Account (服务号) template-message adapter: it keeps the access token,
sends one template message per :class:`Outgoing`, classifies WeChat's ``errcode`` answers,
and reads the ``TEMPLATESENDJOBFINISH`` receipt WeChat pushes back.

Wire facts (WeChat's own documentation, checked against the wechatpy and silenceper/wechat
SDKs):

- token: ``POST /cgi-bin/stable_token`` with ``{"grant_type": "client_credential", "appid",
  "secret", "force_refresh"}`` answers ``{"access_token", "expires_in"}`` (at most 7200 s);
- send: ``POST /cgi-bin/message/template/send?access_token=...`` with ``{"touser",
  "template_id", "url"?, "client_msg_id", "data": {name: {"value": text}}}`` answers
  ``{"errcode": 0, "errmsg": "ok", "msgid": n}``. WeChat sends one message per (openid,
  ``client_msg_id``) within 10 minutes, so a send retried after a timeout inside that window
  cannot reach the customer twice. Errors are HTTP 200 with a non-zero ``errcode``;
- receipt: an XML event pushed to the account's server URL, signed by ``signature`` =
  sha1 of the sorted (token, timestamp, nonce) in its query string, answered ``success``.

Sources: developers.weixin.qq.com (getStableAccessToken, sendTemplateMessage, the template
message guide, the common error codes), the 2023-05-04 template rules notice, wechatpy
(``constants.WeChatErrorCode``, ``utils.check_signature``, ``TemplateSendJobFinishEvent``) and
silenceper/wechat PR #651 (``client_msg_id``).

Only plain mode (明文模式) is spoken: an account set to safe mode (安全模式, AES-encrypted
pushes) needs a decrypting step this module does not have.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.parsers import expat
from zoneinfo import ZoneInfo

import aiohttp

from services.notifier.providers.base import Failure, Outgoing, Receipt, SendResult, classify
from shared.httpsession import LazySession
from shared.timeutil import utc_now

log = logging.getLogger(__name__)

TOKEN_PATH = "/cgi-bin/stable_token"
SEND_PATH = "/cgi-bin/message/template/send"
RECEIPT_EVENT = "TEMPLATESENDJOBFINISH"
PUSH_REPLY = "success"             # what the push handler answers WeChat, as plain text
SHANGHAI = ZoneInfo("Asia/Shanghai")
# WeChat rotates a stable token 5 minutes before it ends and keeps the old one valid for
# those 5 minutes, so asking again inside that window yields the next token with no gap.
REFRESH_MARGIN = 300.0
MAX_PUSH_BYTES = 64 * 1024         # a receipt is a few hundred bytes; refuse anything huge
_TOKEN_IN_URL = re.compile(r"access_token=[^&'\"\s]+")

#: Answers to a send that mean "the token is bad": fetch one and try the send once more.
TOKEN_REFUSED = frozenset({"40001", "40014", "42001"})

#: errcode -> class for the send API (WeChat's global return codes; sources above).
SEND_CODES: dict[str, Failure] = {
    "-1": Failure.TRANSIENT,        # system busy: try again later
    "-1000": Failure.TRANSIENT,     # system error
    "40001": Failure.CONFIG,        # invalid credential (still refused after a fresh token)
    "40014": Failure.CONFIG,        # invalid access_token (likewise)
    "42001": Failure.CONFIG,        # access_token expired (likewise)
    "41001": Failure.CONFIG,        # access_token missing
    "40003": Failure.BAD_RECIPIENT,  # invalid openid (not this account's, or malformed)
    "41009": Failure.BAD_RECIPIENT,  # openid missing
    "43004": Failure.BAD_RECIPIENT,  # require subscribe: the user does not follow us
    "43019": Failure.BAD_RECIPIENT,  # the account has blacklisted this user
    "43101": Failure.BAD_RECIPIENT,  # user refuses to accept the message
    "46004": Failure.BAD_RECIPIENT,  # user does not exist
    "40036": Failure.CONFIG,        # invalid template_id size
    "40037": Failure.CONFIG,        # invalid template_id
    "40039": Failure.CONFIG,        # invalid url size
    "40048": Failure.CONFIG,        # invalid url domain (not the account's jump domain)
    "40066": Failure.CONFIG,        # invalid url
    "48001": Failure.CONFIG,        # api unauthorized (no template-message permission)
    "48004": Failure.CONFIG,        # api forbidden for irregularities (account penalised)
    "50002": Failure.CONFIG,        # user limited: the account is restricted
    "45009": Failure.QUOTA,         # reach max api daily quota limit
    "45011": Failure.THROTTLED,     # api minute-quota reach limit, retry next minute
    "40033": Failure.CONTENT,       # invalid charset (\\uxxxx escapes)
    "40035": Failure.CONTENT,       # invalid parameter
    "44002": Failure.CONTENT,       # empty post data
    "45002": Failure.CONTENT,       # content size out of limit
    "47001": Failure.CONTENT,       # data format error (JSON)
    "47003": Failure.CONTENT,       # argument invalid: a data field (over 20 chars, newline)
}

#: errcode -> class for the token API: a refused appid/secret needs a person.
TOKEN_CODES: dict[str, Failure] = {
    "-1": Failure.TRANSIENT,        # system busy
    "-1000": Failure.TRANSIENT,
    "40002": Failure.CONFIG,        # invalid grant_type
    "40013": Failure.CONFIG,        # invalid appid
    "40125": Failure.CONFIG,        # invalid appsecret
    "40164": Failure.CONFIG,        # caller IP not in the account's whitelist
    "41002": Failure.CONFIG,        # appid missing
    "41004": Failure.CONFIG,        # appsecret missing
    "45009": Failure.QUOTA,         # token calls over the daily limit
    "45011": Failure.THROTTLED,     # token calls over the per-minute limit
}


class BadPush(ValueError):
    """A push body that is not a well-formed, plain WeChat event: refuse it (HTTP 400)."""


# --- pure helpers ------------------------------------------------------------------------


def mask_openid(openid: str) -> str:
    """An openid for logs: its first 4 characters, then ``***``."""
    return f"{openid[:4]}***"


def send_body(message: Outgoing) -> dict[str, Any]:
    """The JSON body of ``POST /cgi-bin/message/template/send`` for ``message``."""
    body: dict[str, Any] = {
        "touser": message.recipient,
        "template_id": message.template,
        "client_msg_id": message.message_id,  # WeChat's dedup key: our idempotency key
        "data": {name: {"value": value} for name, value in message.params.items()},
    }
    if message.url:
        body["url"] = message.url
    return body


def seconds_to_shanghai_midnight(now: datetime) -> float:
    """Seconds from ``now`` (aware) to the next 00:00 in Asia/Shanghai, when WeChat's daily
    quotas start again (a China-time day; at least 1 s so a pause is never zero)."""
    local = now.astimezone(SHANGHAI)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(),
                                tzinfo=SHANGHAI)
    return max(1.0, (midnight - local).total_seconds())


def seconds_to_next_minute(now: datetime) -> float:
    """Seconds from ``now`` to the next whole minute (45011: "retry next minute")."""
    return max(1.0, 60.0 - (now.second + now.microsecond / 1e6))


def send_outcome(answer: Any, now: datetime) -> SendResult:
    """What a send's HTTP-200 JSON answer means, at ``now`` (for quota pauses)."""
    if not isinstance(answer, Mapping) or "errcode" not in answer:
        # A 200 that is not WeChat's JSON: the send may or may not have gone through.
        return _failed("bad_answer", str(answer)[:200], Failure.UNKNOWN)
    code = str(answer.get("errcode"))
    detail = str(answer.get("errmsg", ""))
    msgid = answer.get("msgid")
    if code == "0" and msgid is not None:
        return SendResult("wechat", True, "0", detail, provider_message_id=str(msgid))
    if code == "0":
        return _failed("no_msgid", detail or "ok without msgid", Failure.UNKNOWN)
    failure = classify(SEND_CODES, code, Failure.CONFIG)  # an unknown code needs a person
    retry_after = None
    if failure is Failure.QUOTA:
        retry_after = seconds_to_shanghai_midnight(now)
    elif failure is Failure.THROTTLED:
        retry_after = seconds_to_next_minute(now)
    return _failed(code, detail, failure, retry_after)


def http_outcome(status: int) -> SendResult:
    """What a non-200 HTTP status means: WeChat answers its own errors with 200."""
    if status >= 500:
        failure = Failure.TRANSIENT
    elif status == 429:
        failure = Failure.THROTTLED
    else:
        failure = Failure.CONFIG   # 4xx: a wrong base URL or path, not a WeChat answer
    return _failed(f"http_{status}", f"HTTP {status}", failure)


def _failed(code: str, detail: str, failure: Failure,
            retry_after: float | None = None) -> SendResult:
    return SendResult("wechat", False, code, detail, failure=failure, retry_after=retry_after)


def push_signature(token: str, timestamp: str, nonce: str) -> str:
    """The ``signature`` WeChat puts on a push: sha1 hex of the sorted, joined parts."""
    joined = "".join(sorted((token, timestamp, nonce)))
    return hashlib.sha1(joined.encode("utf-8")).hexdigest()


def verify_push(token: str, signature: str | None, timestamp: str | None,
                nonce: str | None) -> bool:
    """Whether a push's query parameters are signed with our server ``token``. False, never
    an exception, for a missing part or an empty token (an unconfigured account must not
    accept what anyone could sign). Compared in constant time."""
    if not token or not signature or not timestamp or not nonce:
        return False
    expected = push_signature(token, timestamp, nonce)
    return hmac.compare_digest(expected.encode("ascii"), signature.strip().lower().encode())


def parse_receipt(body: bytes) -> Receipt | None:
    """The receipt in a ``TEMPLATESENDJOBFINISH`` push, or None for any other message or
    event. Raises :class:`BadPush` for a body that is not plain, well-formed WeChat XML."""
    fields = _push_fields(body)
    if fields.get("MsgType") != "event" or fields.get("Event") != RECEIPT_EVENT:
        return None
    msgid = fields.get("MsgID") or fields.get("MsgId")
    status = fields.get("Status", "")
    if not msgid or not status:
        raise BadPush("TEMPLATESENDJOBFINISH without MsgID or Status")
    try:
        at = datetime.fromtimestamp(int(fields.get("CreateTime", "")), UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise BadPush(f"bad CreateTime {fields.get('CreateTime')!r}") from exc
    return Receipt(provider="wechat", provider_message_id=msgid,
                   delivered=status == "success", code=status, detail=_status_detail(status),
                   at=at, recipient=fields.get("FromUserName") or None)


def _status_detail(status: str) -> str:
    if status == "success":
        return "delivered"
    if status.replace(" ", "") == "failed:userblock":
        return "the user refuses messages from this account"
    if status.replace(" ", "") == "failed:systemfailed":
        return "WeChat failed to deliver it"
    return f"not delivered: {status}"


def _push_fields(body: bytes) -> dict[str, str]:
    """The child elements of a push's ``<xml>`` root, as text.

    Pushes come from the network, so the parser is expat with every DOCTYPE refused: no
    entity can then be declared (no billion laughs, no external entities), and an undefined
    entity reference is a parse error. ElementTree is not used, because it offers no hook
    to refuse a DOCTYPE before entities in it are expanded.
    """
    if len(body) > MAX_PUSH_BYTES:
        raise BadPush(f"push body over {MAX_PUSH_BYTES} bytes")
    fields: dict[str, str] = {}
    path: list[str] = []
    text: list[str] = []

    def refuse(*_: object) -> None:
        raise BadPush("DOCTYPE and entity declarations are refused")

    def start(name: str, _attrs: object) -> None:
        if not path and name != "xml":
            raise BadPush(f"root element is <{name}>, not <xml>")
        path.append(name)
        text.clear()

    def end(name: str) -> None:
        if len(path) == 2:
            fields[name] = "".join(text).strip()
        path.pop()
        text.clear()

    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise BadPush(f"malformed XML: {exc}") from exc
    return fields


# --- the client --------------------------------------------------------------------------


class _TokenError(Exception):
    """No token to send with; carries the failure the send reports."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.detail)
        self.result = result


@dataclass(frozen=True)
class _Token:
    value: str
    refresh_at: datetime  # fetch again from then on


class WeChatTemplate:
    """One Official Account's template messages (the notifier's ``wechat`` channel).

    ``timeout`` bounds a whole :meth:`send`, the token fetch and the one retry after a
    refused token included. ``clock`` (aware UTC) times the token and the quota pause.
    ``session`` is used as given and not closed; without one the client opens its own on
    the first send and :meth:`close` closes it.
    """

    name = "wechat"
    channel = "wechat"

    def __init__(self, base_url: str, app_id: str, app_secret: str, *, timeout: float = 5.0,
                 session: aiohttp.ClientSession | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.base_url = base_url.rstrip("/")
        self.app_id = app_id
        self._secret = app_secret
        self.timeout = timeout
        self._clock = clock
        self._session = LazySession(session)
        self._token: _Token | None = None
        self._token_lock = asyncio.Lock()  # one fetch at a time; the others wait for it

    async def send(self, message: Outgoing) -> SendResult:
        deadline = asyncio.get_running_loop().time() + self.timeout
        body = send_body(message)
        refused: str | None = None
        for _ in range(2):  # the second pass only after a refused token
            try:
                token = await self._access_token(deadline, refused)
            except _TokenError as exc:
                self._log_failure(message, exc.result)
                return exc.result
            result = await self._post_send(token, body, deadline)
            if result.accepted or result.code not in TOKEN_REFUSED or refused is not None:
                break
            refused = token
            log.info("event=wechat_token_refused errcode=%s app_id=%s", result.code,
                     self.app_id)
        if result.accepted:
            log.info("event=wechat_send_accepted openid=%s msgid=%s message_id=%s",
                     mask_openid(message.recipient), result.provider_message_id,
                     message.message_id)
        else:
            self._log_failure(message, result)
        return result

    async def query(self, message: Outgoing, provider_message_id: str | None,
                    sent_at: datetime) -> Receipt | None:
        return None  # WeChat has no look-up for template messages: only the pushed receipt

    async def check(self) -> bool:
        """Whether a valid access token can be had now (the cached one, or a fresh one)."""
        try:
            await self._access_token(asyncio.get_running_loop().time() + self.timeout, None)
        except _TokenError:
            return False
        return True

    async def close(self) -> None:
        await self._session.close()

    # --- token ---------------------------------------------------------------------------

    async def _access_token(self, deadline: float, refused: str | None) -> str:
        """A usable token: the cached one unless it is near its end or was just refused
        (``refused``); else one fetch, shared by every sender waiting on the lock."""
        cached = self._usable(refused)
        if cached is not None:
            return cached
        try:
            async with asyncio.timeout_at(deadline), self._token_lock:
                cached = self._usable(refused)  # another sender may have refreshed it
                if cached is not None:
                    return cached
                self._token = await self._fetch_token()
                return self._token.value
        except TimeoutError as exc:
            # Nothing was sent yet, so a retry is safe: transient, not unknown.
            raise _TokenError(_failed("token_timeout", "no access token in time",
                                      Failure.TRANSIENT)) from exc

    def _usable(self, refused: str | None) -> str | None:
        token = self._token
        if token is None or token.value == refused or self._clock() >= token.refresh_at:
            return None
        return token.value

    async def _fetch_token(self) -> _Token:
        # force_refresh stays false, on a refused token too. The docs reserve force mode for
        # a leaked token: 20 a day, ignored within 30 s of the last, and it kills the token
        # every other process of this account is using (each would then see 40001 and force
        # again). Normal mode already hands out the current token, which is what a 40001 /
        # 42001 after a rotation or an expiry needs; if it hands back the very token that was
        # refused, the retry fails again and the send reports CONFIG for a person to look at.
        payload = {"grant_type": "client_credential", "appid": self.app_id,
                   "secret": self._secret, "force_refresh": False}
        try:
            status, answer = await self._post(TOKEN_PATH, None, payload)
        except TimeoutError:
            raise  # the caller's deadline: reported as token_timeout
        except (aiohttp.ClientError, OSError) as exc:
            raise _TokenError(_failed("token_network", _describe(exc),
                                      Failure.TRANSIENT)) from exc
        except ValueError as exc:
            raise _TokenError(_failed("bad_answer", "token answer is not JSON",
                                      Failure.TRANSIENT)) from exc
        if status != 200:
            raise _TokenError(http_outcome(status))
        if not isinstance(answer, Mapping):
            raise _TokenError(_failed("bad_answer", "token answer is not an object",
                                      Failure.TRANSIENT))
        if not answer.get("access_token"):
            code = str(answer.get("errcode", "no_token"))
            detail = str(answer.get("errmsg", ""))
            failure = classify(TOKEN_CODES, code, Failure.CONFIG)
            log.warning("event=wechat_token_failed app_id=%s errcode=%s failure=%s errmsg=%s",
                        self.app_id, code, failure, detail)
            raise _TokenError(_failed(code, f"access token: {detail}", failure))
        try:
            expires_in = max(1.0, float(answer.get("expires_in", 7200)))
        except (TypeError, ValueError) as exc:
            raise _TokenError(_failed("bad_answer", "token answer has a bad expires_in",
                                      Failure.TRANSIENT)) from exc
        # A token shorter-lived than the margin (tests, the last minutes of a rotation) is
        # used for half its life rather than refetched on every send.
        margin = min(REFRESH_MARGIN, expires_in / 2)
        log.info("event=wechat_token_fetched app_id=%s expires_in=%d", self.app_id, expires_in)
        return _Token(str(answer["access_token"]),
                      self._clock() + timedelta(seconds=expires_in - margin))

    # --- send ----------------------------------------------------------------------------

    async def _post_send(self, token: str, body: dict[str, Any], deadline: float) -> SendResult:
        try:
            async with asyncio.timeout_at(deadline):
                status, answer = await self._post(SEND_PATH, {"access_token": token}, body)
        except TimeoutError:
            return _failed("timeout", f"no answer within {self.timeout:g} s", Failure.UNKNOWN)
        except aiohttp.ClientConnectorError as exc:
            # Never connected, so nothing was sent: safe to retry.
            return _failed("connect_error", _describe(exc), Failure.TRANSIENT)
        except (aiohttp.ClientError, OSError) as exc:
            return _failed("network_error", _describe(exc), Failure.UNKNOWN)
        except ValueError:  # a 200 whose body is not JSON
            return _failed("bad_answer", "answer is not JSON", Failure.UNKNOWN)
        if status != 200:
            return http_outcome(status)
        return send_outcome(answer, self._clock())

    async def _post(self, path: str, params: Mapping[str, str] | None,
                    payload: Mapping[str, Any]) -> tuple[int, Any]:
        """POST JSON; (status, decoded JSON or None for a non-200). Raw UTF-8, not \\u
        escapes, as the SDKs send it; the body is decoded whatever its Content-Type says.
        The caller's deadline (``asyncio.timeout_at``) bounds it."""
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        async with self._session.get().post(
                self.base_url + path, params=params, data=data,
                headers={"Content-Type": "application/json; charset=utf-8"}) as resp:
            raw = await resp.read()
            if resp.status != 200:
                return resp.status, None
            return resp.status, json.loads(raw)

    @staticmethod
    def _log_failure(message: Outgoing, result: SendResult) -> None:
        log.warning("event=wechat_send_failed openid=%s message_id=%s errcode=%s failure=%s "
                    "detail=%s", mask_openid(message.recipient), message.message_id,
                    result.code, result.failure, result.detail)


def _describe(exc: BaseException) -> str:
    # An error's text can carry the request URL, and so the token: mask it.
    return _TOKEN_IN_URL.sub("access_token=***", f"{type(exc).__name__}: {exc}")[:200]
