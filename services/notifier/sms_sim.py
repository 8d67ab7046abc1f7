"""A local Aliyun or Tencent Cloud SMS over real HTTP, with seeded faults, so the notifier's
SMS adapters can be tested against a provider that answers, pushes receipts and fails the
way the real ones do.

Provider API (on ``/``, in the provider's own wire format):
    aliyun   GET|POST ``Action=SendSms`` / ``Action=QuerySendDetails`` (RPC, HMAC-SHA1)
    tencent  POST JSON with ``X-TC-Action: SendSms`` / ``PullSmsSendStatusByPhoneNumber``
             (API 3.0, TC3-HMAC-SHA256)
Signatures are checked with the configured secret and refused with the provider's own error;
requests are validated as the provider does (numbers, sign name, template, its variables,
banned words, URLs). Accepted messages get a delivery report after ``receipt_delay`` seconds,
pushed to ``callback_url`` in the provider's batch format (JSON arrays of up to
``push_batch`` receipts, or what gathered within ``push_interval`` seconds). A push the
subscriber does not acknowledge (Aliyun: HTTP 200 with a numeric ``code``; Tencent: HTTP 200
with ``result`` 0) is retried after each delay of ``push_retry_schedule`` in turn, then
abandoned: Aliyun documents +1, +5, +10 minutes; Tencent documents none, so it uses the same.
The send-detail query and the status pull answer from what was recorded, lost pushes too.

Control API (JSON):
    GET|DELETE /sim/messages   the accepted messages / forget them
    GET /sim/stats             counters by outcome, and what is still pending
    GET|POST /sim/faults       read / change fault settings at run time

Faults (:class:`Faults`) come from one ``random.Random`` stream per simulator, three draws
per provider request in arrival order, and a receipt's fate from one seeded by (seed, the
message's sequence number): the same seed and request sequence give the same faults.
Throttling, hangs and the balance apply to sends; an outage and latency to every request.

Run as a process: ``python -m services.notifier.sms_sim --provider aliyun --port 8201
--callback-url URL --seed 1`` (``--help`` lists the credentials and fault flags).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import hmac
import itertools
import json
import logging
import random
import re
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web

from services.notifier.providers import aliyun_sms as ali
from services.notifier.providers import tencent_sms as tc
from shared import simserve
from shared.simserve import serve
from shared.timeutil import utc_now

log = logging.getLogger(__name__)

PROVIDERS = ("aliyun", "tencent")
DEFAULT_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "aliyun": {"SMS_480100001": ("order_id", "status")},
    "tencent": {"1880001": ("order_id", "status")},
}
def default_templates(provider: str) -> dict[str, tuple[str, ...]]:
    """The templates the simulated account has approved: the built-in examples, and every
    SMS template of the notifier's shipped catalogue (code -> parameter names, in order)."""
    from services.notifier.templates import load_catalogue

    approved = dict(DEFAULT_TEMPLATES[provider])
    for (_, channel, _), entry in load_catalogue().entries.items():
        if channel == "sms" and provider in entry.codes:
            approved[entry.codes[provider]] = tuple(entry.params)
    return approved


DEFAULT_SIGN = "订单通知"
#: the signature the notifier's shipped settings send with
NOTIFIER_SIGN = "orderstream"
PUSH_RETRY_SCHEDULE = (60.0, 300.0, 600.0)    # Aliyun SmsReport: +1, +5, +10 minutes
PUSH_CONCURRENCY = 8
_URL = re.compile(r"(https?://|www\.)", re.IGNORECASE)
_MAINLAND = re.compile(r"^1[3-9]\d{9}$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass(frozen=True)
class Faults:
    """Fault settings. Rates are probabilities in [0, 1]."""

    throttle_rate: float = 0.0       # sends refused with the provider's flow-control code
    throttle_http: bool = False      # ...answered HTTP 429 + Retry-After by the gateway instead
    balance: int | None = None       # messages left; then the provider's balance code
    outage: bool = False             # HTTP 503 to every provider request
    latency: float = 0.0             # seconds before every provider answer
    hang_rate: float = 0.0           # sends never answered
    hang_sent_share: float = 0.5     # ...of which the message went out all the same
    fail_receipt_rate: float = 0.0   # delivered=false with a real failure code
    lose_receipt_rate: float = 0.0   # no push at all (the query still knows)
    receipt_delay: float = 0.1       # seconds from acceptance to the carrier's report

    def updated(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with ``changes`` applied; raises ValueError naming a bad key or value."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault settings {unknown}; known: {sorted(known)}")
        new = replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        for name in ("throttle_rate", "hang_rate", "hang_sent_share", "fail_receipt_rate",
                     "lose_receipt_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1], not {value!r}")
        for name in ("latency", "receipt_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be >= 0 seconds, not {value!r}")
        for name in ("throttle_http", "outage"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false")
        balance = self.balance
        if balance is not None and (isinstance(balance, bool) or not isinstance(balance, int)
                                    or balance < 0):
            raise ValueError(f"balance must be an integer >= 0 or null, not {balance!r}")


@dataclass
class _Message:
    """One accepted message to one number, and what became of its receipt."""

    seq: int
    provider_id: str               # Aliyun BizId, Tencent SerialNo
    our_id: str                    # OutId / SessionContext
    phone: str                     # E.164
    template: str
    params: Any                    # Aliyun: the variables; Tencent: the list
    sign_name: str
    sent_at: datetime
    report_at: datetime            # when the carrier's report arrives
    delivered: bool
    lost: bool
    push: str = "pending"          # pending|batched|pushed|lost|abandoned|no_callback
    push_attempts: int = 0

    def final(self, now: datetime) -> bool:
        return now >= self.report_at

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "phone": self.phone, "template": self.template,
                "params": self.params, "sign_name": self.sign_name,
                "message_id": self.provider_id, "our_id": self.our_id,
                "sent_at": self.sent_at.isoformat(), "report_at": self.report_at.isoformat(),
                "fate": "delivered" if self.delivered else "failed", "lost": self.lost,
                "push": self.push, "push_attempts": self.push_attempts}


@dataclass
class _Send:
    """A send request that passed whole-request validation."""

    phones: list[str]                               # E.164, in request order
    template: str
    params: Any
    our_id: str
    sign_name: str
    problems: dict[str, Refusal] = field(default_factory=dict)  # per-number refusals

    @property
    def good(self) -> list[str]:
        return [p for p in self.phones if p not in self.problems]


class Refusal(Exception):
    """A provider error answer; ``stat`` is the counter it adds to."""

    def __init__(self, code: str, message: str, *, status: int = 200,
                 stat: str = "invalid") -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status, self.stat = code, message, status, stat


@dataclass(order=True)
class _Due:
    at: float
    order: int
    what: int | _Push = field(compare=False)     # a message's report (its seq), or a push


@dataclass
class _Push:
    seqs: list[int]
    body: bytes
    attempt: int = 0


def _china(at: datetime) -> str:
    return at.astimezone(ali.CHINA).strftime("%Y-%m-%d %H:%M:%S")


def _national(phone: str) -> str:
    return phone[3:] if phone.startswith("+86") else phone.lstrip("+")


def _request_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper()


def _content_problem(values: Iterable[str], keywords: Sequence[str]
                     ) -> tuple[str, str] | None:
    """('url' | 'keyword', the offending value) for template variables, or None."""
    for value in values:
        if _URL.search(value):
            return "url", value
        if any(word in value for word in keywords):
            return "keyword", value
    return None


# --- the two providers' wire formats -----------------------------------------------------


class _Aliyun:
    """dysmsapi's RPC API: form/query parameters, HMAC-SHA1, JSON answers with ``Code``."""

    name, send_action, query_action = "aliyun", "SendSms", "QuerySendDetails"
    throttle = ("isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1")
    broke = ("isv.AMOUNT_NOT_ENOUGH", "账户余额不足")
    delivered = ("DELIVERED", "用户接收成功")
    failed = ("MK:0001", "用户接收失败")
    skew = timedelta(minutes=15)

    def __init__(self, sim: SmsSimulator) -> None:
        self.sim = sim
        self._nonces: deque[tuple[float, str]] = deque()
        self._nonce_set: set[str] = set()

    @staticmethod
    def peek_action(request: web.Request, form: Mapping[str, str]) -> str:
        return form.get("Action", "")

    async def params(self, request: web.Request) -> dict[str, str]:
        params = {k: str(v) for k, v in request.query.items()}
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        return params

    @staticmethod
    def body(raw: bytes, params: dict[str, str]) -> Mapping[str, Any]:
        return params

    def authenticate(self, request: web.Request, raw: bytes, params: Mapping[str, str]
                     ) -> str:
        """The action of a well-signed request; raises :class:`Refusal` (gateway errors)."""
        if not params.get("Signature"):
            raise Refusal("IncompleteSignature", "The request signature does not conform to "
                          "Aliyun standards.", status=400, stat="signature_failures")
        if params.get("AccessKeyId") != self.sim.key_id:
            raise Refusal("InvalidAccessKeyId.NotFound", "Specified access key is not found.",
                          status=404, stat="signature_failures")
        self._check_time(params.get("Timestamp", ""))
        if not ali.signature_matches(params, self.sim.secret, request.method):
            raise Refusal("SignatureDoesNotMatch", "Specified signature is not matched with "
                          "our calculation. server string to sign is:"
                          + ali.string_to_sign(params, request.method), status=400,
                          stat="signature_failures")
        self._use_nonce(params.get("SignatureNonce", ""))
        if params.get("Version") != ali.API_VERSION:
            raise Refusal("InvalidVersion", "Specified parameter Version is not valid.",
                          status=400)
        action = params.get("Action", "")
        if action not in (self.send_action, self.query_action):
            raise Refusal("InvalidAction.NotFound", "Specified api is not found, please "
                          "check your url and method.", status=404)
        return action

    def _check_time(self, text: str) -> None:
        try:
            at = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError as exc:
            raise Refusal("InvalidTimeStamp.Format", "Specified time stamp or date value is "
                          "not well formatted.", status=400) from exc
        if abs(utc_now() - at) > self.skew:
            raise Refusal("InvalidTimeStamp.Expired", "Specified time stamp or date value is "
                          "expired.", status=400)

    def _use_nonce(self, nonce: str) -> None:
        now = time.time()
        while self._nonces and self._nonces[0][0] < now - self.skew.total_seconds():
            self._nonce_set.discard(self._nonces.popleft()[1])
        if not nonce or nonce in self._nonce_set:
            raise Refusal("SignatureNonceUsed", "Specified signature nonce was used already.",
                          status=400)
        self._nonces.append((now, nonce))
        self._nonce_set.add(nonce)

    def parse_send(self, params: Mapping[str, str]) -> _Send:
        for name in ("PhoneNumbers", "SignName", "TemplateCode"):
            if not params.get(name):
                raise Refusal(f"Missing{name}", f"{name} is mandatory for this action.",
                              status=400)
        numbers = params["PhoneNumbers"].split(",")
        if len(numbers) > 1000:
            raise Refusal("isv.MOBILE_COUNT_OVER_LIMIT", "手机号码数量超过限制")
        phones = [self._phone(n) for n in numbers]
        if params["SignName"] not in self.sim.sign_names:
            raise Refusal("isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名")
        names = self.sim.templates.get(params["TemplateCode"])
        if names is None:
            raise Refusal("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
        variables = self._variables(params.get("TemplateParam"), names)
        return _Send(phones, params["TemplateCode"], variables, params.get("OutId", ""),
                     params["SignName"])

    @staticmethod
    def _phone(number: str) -> str:
        national = ali.aliyun_phone(number)
        if _MAINLAND.match(national):
            return "+86" + national
        if national.isdigit() and 7 <= len(national) <= 15 and not national.startswith(
                ("0", "1", "86")):
            return "+" + national
        raise Refusal("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")

    def _variables(self, raw: str | None, names: Sequence[str]) -> dict[str, str]:
        try:
            variables = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise Refusal("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值") from exc
        if not isinstance(variables, dict) or not all(
                isinstance(v, str) for v in variables.values()):
            raise Refusal("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
        if any(name not in variables for name in names):
            raise Refusal("isv.TEMPLATE_MISSING_PARAMETERS", "模板变量缺少对应参数值")
        problem = _content_problem(variables.values(), self.sim.keywords)
        if problem and problem[0] == "url":
            raise Refusal("isv.PARAM_NOT_SUPPORT_URL", "不支持URL作为变量", stat="content")
        if problem:
            raise Refusal("isv.BLACK_KEY_CONTROL_LIMIT", "模板变量中存在限制发送的关键字",
                          stat="content")
        if any(len(v) > self.sim.param_max_length for v in variables.values()):
            raise Refusal("isv.PARAM_LENGTH_LIMIT", "参数超出长度限制", stat="content")
        return variables

    def new_ids(self, rng: random.Random, count: int) -> list[str]:
        biz_id = f"{rng.randrange(10 ** 17, 10 ** 18)}^0"    # one BizId per request
        return [biz_id] * count

    def accepted(self, send: _Send, messages: list[_Message], rng: random.Random
                 ) -> web.Response:
        return _json({"Message": "OK", "RequestId": _request_id(rng),
                      "BizId": messages[0].provider_id, "Code": "OK"})

    def refused(self, refusal: Refusal, send: _Send | None, rng: random.Random
                ) -> web.Response:
        body = {"RequestId": _request_id(rng), "Code": refusal.code, "Message": refusal.message}
        if refusal.status != 200:   # the POP gateway's shape
            body |= {"HostId": "dysmsapi.aliyuncs.com",
                     "Recommend": f"https://api.aliyun.com/troubleshoot?q={refusal.code}"}
        return _json(body, status=refusal.status)

    def query(self, params: Mapping[str, str], messages: Iterable[_Message],
              rng: random.Random) -> web.Response:
        for name in ("PhoneNumber", "SendDate", "PageSize", "CurrentPage"):
            if not params.get(name):
                raise Refusal(f"Missing{name}", f"{name} is mandatory for this action.",
                              status=400)
        try:
            day = datetime.strptime(params["SendDate"], "%Y%m%d").replace(tzinfo=ali.CHINA).date()
            size, page = int(params["PageSize"]), int(params["CurrentPage"])
        except ValueError as exc:
            raise Refusal("isv.INVALID_PARAMETERS", "参数格式不正确") from exc
        if not 1 <= size <= 50 or page < 1 or day < utc_now().date() - timedelta(days=30):
            raise Refusal("isv.INVALID_PARAMETERS", "参数超出范围")
        found = self._matching(messages, ali.aliyun_phone(params["PhoneNumber"]), day,
                               params.get("BizId"))
        now = utc_now()
        return _json({"Code": "OK", "Message": "OK", "RequestId": _request_id(rng),
                      "TotalCount": len(found), "SmsSendDetailDTOs": {"SmsSendDetailDTO": [
                          self._detail(m, now) for m in found[(page - 1) * size:page * size]]}})

    @staticmethod
    def _matching(messages: Iterable[_Message], national: str, day: date,
                  biz_id: str | None) -> list[_Message]:
        found = [m for m in messages if _national(m.phone) == national
                 and ali.china_date(m.sent_at) == day and (not biz_id or m.provider_id == biz_id)]
        return sorted(found, key=lambda m: m.seq, reverse=True)

    def _detail(self, m: _Message, now: datetime) -> dict[str, Any]:
        final = m.final(now)
        code = (self.delivered if m.delivered else self.failed)[0] if final else ""
        text = "，".join(f"{k}：{v}" for k, v in m.params.items())
        return {"PhoneNum": _national(m.phone), "SendStatus": (3 if m.delivered else 2)
                if final else 1, "ErrCode": code, "TemplateCode": m.template,
                "Content": f"【{m.sign_name}】{text}", "SendDate": _china(m.sent_at),
                "ReceiveDate": _china(m.report_at) if final else "", "OutId": m.our_id}

    def push_item(self, m: _Message) -> dict[str, Any]:
        code, text = self.delivered if m.delivered else self.failed
        return {"phone_number": _national(m.phone), "send_time": _china(m.sent_at),
                "report_time": _china(m.report_at), "success": m.delivered, "err_code": code,
                "err_msg": text, "sms_size": "1", "biz_id": m.provider_id,
                "out_id": m.our_id}

    @staticmethod
    def acknowledged(status: int, body: bytes) -> bool:
        """Aliyun checks only for HTTP 200 and a numeric ``code``."""
        try:
            answer = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return False
        code = answer.get("code") if isinstance(answer, dict) else None
        return status == 200 and isinstance(code, int | float) and not isinstance(code, bool)


class _Tencent:
    """SMS API 3.0: a signed JSON POST; errors in ``Response.Error`` or per number."""

    name, send_action, query_action = "tencent", "SendSms", "PullSmsSendStatusByPhoneNumber"
    throttle = ("LimitExceeded.PhoneNumberThirtySecondLimit",
                "the number of SMS messages sent to a single mobile number within 30 seconds "
                "exceeds the upper limit")
    broke = ("FailedOperation.InsufficientBalanceInSmsPackage",
             "insufficient balance in SMS package")
    delivered = ("DELIVRD", "用户短信送达成功")
    failed = ("UNDELIV", "用户短信未送达：关机、停机或号码状态异常")
    regions = ("ap-guangzhou", "ap-beijing", "ap-nanjing")
    skew = 300

    def __init__(self, sim: SmsSimulator) -> None:
        self.sim = sim

    @staticmethod
    def peek_action(request: web.Request, form: Mapping[str, str]) -> str:
        return request.headers.get("X-TC-Action", "")

    async def params(self, request: web.Request) -> dict[str, str]:
        return {}   # the raw body is what is signed, and what is read

    @staticmethod
    def body(raw: bytes, params: dict[str, str]) -> Mapping[str, Any]:
        return _body(raw)

    def authenticate(self, request: web.Request, raw: bytes, params: Mapping[str, str]
                     ) -> str:
        """The action of a well-signed request; raises :class:`Refusal`."""
        headers = request.headers
        try:
            auth = tc.parse_authorization(headers.get("Authorization", ""))
            stamp = int(headers.get("X-TC-Timestamp", ""))
        except ValueError as exc:
            raise Refusal("AuthFailure.InvalidAuthorization", "Authorization header is "
                          "invalid.", stat="signature_failures") from exc
        if auth.secret_id != self.sim.key_id:
            raise Refusal("AuthFailure.SecretIdNotFound", "The SecretId is not found, please "
                          "ensure that your SecretId is correct.", stat="signature_failures")
        if abs(time.time() - stamp) > self.skew:
            raise Refusal("AuthFailure.SignatureExpire", f"Signature expired. Timestamp: "
                          f"{stamp}.", stat="signature_failures")
        canonical = tc.canonical_request(request.method, headers, auth.signed_headers, raw)
        expected = tc.signature(self.sim.secret, stamp, canonical, auth.service)
        if (auth.service != tc.SERVICE or auth.day != tc.utc_day(stamp)
                or not {"content-type", "host"} <= set(auth.signed_headers)
                or not hmac.compare_digest(expected.encode(), auth.signature.encode())):
            raise Refusal("AuthFailure.SignatureFailure", "The provided credentials could not "
                          "be validated. Please check your signature is correct.",
                          stat="signature_failures")
        if headers.get("X-TC-Version") != tc.API_VERSION:
            raise Refusal("NoSuchVersion", f"The API version `{headers.get('X-TC-Version')}` "
                          "does not exist.")
        if headers.get("X-TC-Region") not in self.regions:
            raise Refusal("UnsupportedRegion", "The region is not supported.")
        action = headers.get("X-TC-Action", "")
        if action not in (self.send_action, self.query_action):
            raise Refusal("InvalidAction", f"The requested action `{action}` does not exist.")
        return action

    def parse_send(self, body: Mapping[str, Any]) -> _Send:
        numbers = body.get("PhoneNumberSet")
        if not isinstance(numbers, list) or not numbers:
            raise Refusal("MissingParameter.EmptyPhoneNumberSet", "the phone number set is "
                          "empty")
        if len(numbers) > 200:
            raise Refusal("LimitExceeded.PhoneNumberCountLimit", "more than 200 numbers")
        if body.get("SmsSdkAppId") != self.sim.sdk_app_id:
            raise Refusal("InvalidParameterValue.SdkAppIdNotExist", "SdkAppId not exist.")
        names = self.sim.templates.get(str(body.get("TemplateId", "")))
        if names is None:
            raise Refusal("FailedOperation.TemplateIncorrectOrUnapproved",
                          "template is not approved or request content does not match the "
                          "approved template content")
        if body.get("SignName") not in self.sim.sign_names:
            raise Refusal("FailedOperation.SignatureIncorrectOrUnapproved",
                          "signature format is incorrect or signature is not approved")
        values = body.get("TemplateParamSet") or []
        context = body.get("SessionContext") or ""
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values) \
                or not isinstance(context, str) or len(context.encode()) > 512:
            raise Refusal("InvalidParameter", "TemplateParamSet must be strings; "
                          "SessionContext at most 512 bytes")
        send = _Send([str(n) for n in numbers], str(body["TemplateId"]), values, context,
                     str(body["SignName"]))
        shared = self._content_refusal(values, names)
        for phone in send.phones:
            problem = shared or self._number_refusal(phone)
            if problem:
                send.problems[phone] = problem
        return send

    def _content_refusal(self, values: list[str], names: Sequence[str]) -> Refusal | None:
        if len(values) != len(names):
            return Refusal("FailedOperation.TemplateParamSetNotMatchApprovedTemplate",
                           "request content does not match the template content")
        problem = _content_problem(values, self.sim.keywords)
        if problem and problem[0] == "url":
            return Refusal("InvalidParameterValue.ProhibitedUseUrlInTemplateParameter",
                           "URL is prohibited in template parameters", stat="content")
        if problem:
            return Refusal("FailedOperation.ContainSensitiveWord", "the content contains "
                           "sensitive words", stat="content")
        return None

    def _number_refusal(self, phone: str) -> Refusal | None:
        if not _E164.match(phone) or (phone.startswith("+86")
                                      and not _MAINLAND.match(phone[3:])):
            return Refusal("InvalidParameterValue.IncorrectPhoneNumber",
                           "incorrect number format")
        if phone in self.sim.blacklist:
            return Refusal("FailedOperation.PhoneNumberInBlacklist",
                           "the number is in the blocklist", stat="blacklisted")
        return None

    @staticmethod
    def new_ids(rng: random.Random, count: int) -> list[str]:
        return [f"3369:{rng.randrange(10 ** 26, 10 ** 27)}" for _ in range(count)]

    def accepted(self, send: _Send, messages: list[_Message], rng: random.Random
                 ) -> web.Response:
        sent = {m.phone: m for m in messages}
        statuses = []
        for phone in send.phones:
            m, problem = sent.get(phone), send.problems.get(phone)
            if m is not None:
                statuses.append(self._status(phone, send, m.provider_id, 1, "Ok",
                                             "send success", "CN"))
            else:
                code, text = (problem.code, problem.message) if problem else self.broke
                statuses.append(self._status(phone, send, "", 0, code, text, ""))
        return _json({"Response": {"SendStatusSet": statuses, "RequestId": _request_id(rng)}})

    @staticmethod
    def _status(phone: str, send: _Send, serial: str, fee: int, code: str, text: str,
                iso: str) -> dict[str, Any]:
        return {"SerialNo": serial, "PhoneNumber": phone, "Fee": fee,
                "SessionContext": send.our_id, "Code": code, "Message": text, "IsoCode": iso}

    def refused(self, refusal: Refusal, send: _Send | None, rng: random.Random
                ) -> web.Response:
        if send is not None:   # a per-number refusal of every number (throttle, balance)
            for phone in send.phones:
                send.problems.setdefault(phone, refusal)
            return self.accepted(send, [], rng)
        return _json({"Response": {"Error": {"Code": refusal.code, "Message": refusal.message},
                                   "RequestId": _request_id(rng)}}, status=refusal.status)

    def query(self, body: Mapping[str, Any], messages: Iterable[_Message],
              rng: random.Random) -> web.Response:
        begin, limit, phone = body.get("BeginTime"), body.get("Limit"), body.get("PhoneNumber")
        end = body.get("EndTime", int(time.time()))
        if begin is None or limit is None or not phone:
            raise Refusal("MissingParameter", "BeginTime, Limit and PhoneNumber are required")
        if not isinstance(limit, int) or not 0 < limit <= tc.PULL_LIMIT:
            raise Refusal("InvalidParameterValue.LimitVerifyFail", "Limit is invalid")
        if body.get("Offset", 0) != 0:
            raise Refusal("InvalidParameterValue.OffsetVerifyFail", "Offset is invalid")
        if not isinstance(begin, int) or not isinstance(end, int) or begin > end:
            raise Refusal("InvalidParameterValue.BeginTimeVerifyFail", "BeginTime is invalid")
        if body.get("SmsSdkAppId") != self.sim.sdk_app_id:
            raise Refusal("InvalidParameterValue.SdkAppIdNotExist", "SdkAppId not exist.")
        now = utc_now()
        found = [m for m in messages if m.phone == phone and m.final(now)
                 and begin <= int(m.sent_at.timestamp()) <= end]
        return _json({"Response": {"PullSmsSendStatusSet": [
            self._pulled(m) for m in found[:limit]], "RequestId": _request_id(rng)}})

    def _pulled(self, m: _Message) -> dict[str, Any]:
        return {"UserReceiveTime": int(m.report_at.timestamp()), "CountryCode": "86",
                "SubscriberNumber": _national(m.phone), "PhoneNumber": m.phone,
                "SerialNo": m.provider_id, "ReportStatus": "SUCCESS" if m.delivered else "FAIL",
                "Description": (self.delivered if m.delivered else self.failed)[1],
                "SessionContext": m.our_id}

    def push_item(self, m: _Message) -> dict[str, Any]:
        code, text = self.delivered if m.delivered else self.failed
        return {"user_receive_time": _china(m.report_at), "nationcode": "86",
                "mobile": _national(m.phone),
                "report_status": "SUCCESS" if m.delivered else "FAIL", "errmsg": code,
                "description": text, "sid": m.provider_id}

    @staticmethod
    def acknowledged(status: int, body: bytes) -> bool:
        try:
            answer = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return False
        result = answer.get("result") if isinstance(answer, dict) else None
        return status == 200 and result == 0 and not isinstance(result, bool)


# --- the simulator -----------------------------------------------------------------------


class SmsSimulator:
    """An SMS provider look-alike. ``await start()`` returns its base URL; ``await stop()``.

    ``key_id``/``secret`` are Aliyun's AccessKeyId/AccessKeySecret or Tencent's
    SecretId/SecretKey; ``templates`` maps a template code (Aliyun) or id (Tencent) to its
    variable names, in order; ``keywords`` are banned words; ``blacklist`` are E.164 numbers
    Tencent refuses. ``stats`` counts: requests, sends, accepted, invalid, content,
    blacklisted, signature_failures, throttled, balance_exhausted, outage, hung, hung_sent,
    queries, receipts_due, receipts_failed, receipts_lost, pushes_sent, receipts_pushed,
    push_failures, pushes_abandoned.
    """

    def __init__(self, provider: str = "aliyun", *, key_id: str = "sim-key-id",
                 secret: str = "sim-secret", sdk_app_id: str = "1400000001",
                 sign_names: Sequence[str] = (DEFAULT_SIGN, NOTIFIER_SIGN),
                 templates: Mapping[str, Sequence[str]] | None = None,
                 callback_url: str | None = None, seed: int = 0,
                 keywords: Sequence[str] = (), blacklist: Sequence[str] = (),
                 param_max_length: int = 35, push_batch: int = 100,
                 push_interval: float = 0.05,
                 push_retry_schedule: Sequence[float] = PUSH_RETRY_SCHEDULE,
                 push_timeout: float = 5.0, **faults: Any) -> None:
        if provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {PROVIDERS}, not {provider!r}")
        self.provider = provider
        self.key_id, self.secret, self.sdk_app_id = key_id, secret, sdk_app_id
        self.sign_names = frozenset(sign_names)
        self.templates = {k: tuple(v) for k, v in
                          (templates or default_templates(provider)).items()}
        self.callback_url, self.seed = callback_url, seed
        self.keywords, self.blacklist = tuple(keywords), frozenset(blacklist)
        self.param_max_length = param_max_length
        self.push_batch, self.push_interval = max(1, push_batch), push_interval
        self.push_retry_schedule = tuple(float(s) for s in push_retry_schedule)
        self.push_timeout = push_timeout
        self.faults = Faults().updated(faults)
        self.stats: Counter[str] = Counter()
        self._dialect = _Aliyun(self) if provider == "aliyun" else _Tencent(self)
        self._rng = random.Random(f"{seed}|requests")
        self._ids = random.Random(f"{seed}|ids")
        self._messages: dict[int, _Message] = {}
        self._seq = itertools.count(1)
        self._order = itertools.count()
        self._heap: list[_Due] = []
        self._batch: list[int] = []
        self._batch_since = 0.0
        self._queue: asyncio.Queue[_Push] = asyncio.Queue()
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.app = web.Application()
        self.app.router.add_post("/", self._api)
        if provider == "aliyun":
            self.app.router.add_get("/", self._api)
        self.app.router.add_get("/sim/messages", self._list_messages)
        self.app.router.add_delete("/sim/messages", self._clear_messages)
        self.app.router.add_get("/sim/stats", self._stats)
        self.app.router.add_get("/sim/faults", self._get_faults)
        self.app.router.add_post("/sim/faults", self._set_faults)

    # --- life cycle ----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._stopping.clear()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.push_timeout))
        self._tasks.append(asyncio.create_task(self._schedule(), name="sms-sim-scheduler"))
        self._tasks.extend(asyncio.create_task(self._push_worker(), name=f"sms-sim-push-{n}")
                           for n in range(PUSH_CONCURRENCY))
        # Hanging handlers end as soon as stop() is called, so a short shutdown suffices.
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.base_url = f"http://{host}:{self._runner.addresses[0][1]}"
        log.info("event=sms_sim_started provider=%s url=%s seed=%s", self.provider,
                 self.base_url, self.seed)
        return self.base_url

    async def stop(self) -> None:
        self._stopping.set()   # releases hung requests at once
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        log.info("event=sms_sim_stopped provider=%s %s", self.provider,
                 " ".join(f"{k}={v}" for k, v in sorted(self.stats.items())))

    async def __aenter__(self) -> SmsSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def messages(self) -> list[_Message]:
        return list(self._messages.values())

    @property
    def pending(self) -> int:
        """Reports not yet due, receipts batched, pushes queued, in flight or awaiting a
        retry: zero when every receipt has met its end."""
        return len(self._heap) + len(self._batch) + self._queue.qsize() + self._in_flight

    # --- provider API --------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        self.stats["requests"] += 1
        d = self._dialect
        raw = await request.read()
        params = await d.params(request)
        is_send = d.peek_action(request, params) == d.send_action
        hang, went, throttle = (self._rng.random() for _ in range(3))
        if self.faults.outage:
            self.stats["outage"] += 1
            return web.Response(status=503, text="503 Service Temporarily Unavailable")
        await self._pause(self.faults.latency)
        if is_send and self.faults.throttle_http and throttle < self.faults.throttle_rate:
            self.stats["throttled"] += 1
            return web.Response(status=429, text="Too Many Requests",
                                headers={"Retry-After": "1"})
        if is_send and hang < self.faults.hang_rate:
            self.stats["hung"] += 1
            if went < self.faults.hang_sent_share:
                self.stats["hung_sent"] += 1
                self._answer(request, raw, params, throttled=False)   # the answer is lost
            return await self._hang()
        throttled = not self.faults.throttle_http and throttle < self.faults.throttle_rate
        return self._answer(request, raw, params, throttled=is_send and throttled)

    def _answer(self, request: web.Request, raw: bytes, params: dict[str, str], *,
                throttled: bool) -> web.Response:
        d = self._dialect
        try:
            action = d.authenticate(request, raw, params)
            body = d.body(raw, params)
            if action == d.query_action:
                self.stats["queries"] += 1
                return d.query(body, self._messages.values(), self._ids)
            self.stats["sends"] += 1
            return self._send(body, throttled)
        except Refusal as refusal:
            self.stats[refusal.stat] += 1
            log.debug("event=sms_sim_refused code=%s", refusal.code)
            return d.refused(refusal, None, self._ids)

    def _send(self, body: Mapping[str, Any], throttled: bool) -> web.Response:
        d = self._dialect
        send = d.parse_send(body)       # whole-request refusals raise
        for problem in send.problems.values():
            self.stats[problem.stat] += 1
        good = send.good
        refusal = None
        if good and throttled:
            self.stats["throttled"] += 1
            refusal = Refusal(*d.throttle, stat="throttled")
        elif good and self.faults.balance is not None and self.faults.balance < len(good):
            self.stats["balance_exhausted"] += 1
            refusal = Refusal(*d.broke, stat="balance_exhausted")
        if refusal is not None:
            return d.refused(refusal, send, self._ids)
        ids = d.new_ids(self._ids, len(good))
        messages = [self._accept(send, phone, pid)
                    for phone, pid in zip(good, ids, strict=True)]
        return d.accepted(send, messages, self._ids)

    def _accept(self, send: _Send, phone: str, provider_id: str) -> _Message:
        seq = next(self._seq)
        fate = random.Random(f"{self.seed}|receipt|{seq}")
        failed, lost = fate.random(), fate.random()
        now = utc_now()
        delay = self.faults.receipt_delay
        message = _Message(seq, provider_id, send.our_id, phone, send.template, send.params,
                           send.sign_name, now, now + timedelta(seconds=delay),
                           delivered=failed >= self.faults.fail_receipt_rate,
                           lost=lost < self.faults.lose_receipt_rate)
        self._messages[seq] = message
        if self.faults.balance is not None:
            self.faults = replace(self.faults, balance=self.faults.balance - 1)
        self.stats["accepted"] += 1
        heapq.heappush(self._heap, _Due(time.time() + delay, next(self._order), seq))
        self._wake.set()
        log.debug("event=sms_sim_accepted seq=%d phone=%s template=%s", seq,
                  ali.mask_phone(phone), send.template)
        return message

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._stopping.wait()

    async def _hang(self) -> web.Response:
        await self._stopping.wait()
        return web.Response(status=503, text="simulator stopped")

    # --- receipts ------------------------------------------------------------------------

    async def _schedule(self) -> None:
        """One task for every message: reports falling due, batches, and push retries."""
        while True:
            self._wake.clear()
            now = time.time()
            while self._heap and self._heap[0].at <= now:
                due = heapq.heappop(self._heap)
                if isinstance(due.what, _Push):
                    self._queue.put_nowait(due.what)
                else:
                    self._report_due(due.what, now)
            if self._batch and now >= self._batch_since + self.push_interval:
                self._flush()
            times = [self._heap[0].at] if self._heap else []
            if self._batch:
                times.append(self._batch_since + self.push_interval)
            wait = max(0.0, min(times) - time.time()) if times else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def _report_due(self, seq: int, now: float) -> None:
        message = self._messages.get(seq)
        if message is None:
            return   # forgotten meanwhile (DELETE /sim/messages)
        self.stats["receipts_due"] += 1
        self.stats["receipts_failed"] += not message.delivered
        if message.lost:
            message.push = "lost"
            self.stats["receipts_lost"] += 1
        elif not self.callback_url:
            message.push = "no_callback"
        else:
            message.push = "batched"
            if not self._batch:
                self._batch_since = now
            self._batch.append(seq)
            if len(self._batch) >= self.push_batch:
                self._flush()

    def _flush(self) -> None:
        seqs = [s for s in self._batch if s in self._messages]
        self._batch = []
        if seqs:
            items = [self._dialect.push_item(self._messages[s]) for s in seqs]
            body = json.dumps(items, ensure_ascii=False).encode()
            self._queue.put_nowait(_Push(seqs, body))

    async def _push_worker(self) -> None:
        while True:
            push = await self._queue.get()
            self._in_flight += 1
            try:
                await self._deliver(push)
            finally:
                self._in_flight -= 1

    async def _deliver(self, push: _Push) -> None:
        assert self._session is not None and self.callback_url
        try:
            async with self._session.post(self.callback_url, data=push.body, headers={
                    "Content-Type": "application/json; charset=utf-8"}) as resp:
                ok = self._dialect.acknowledged(resp.status, await resp.read())
        except (aiohttp.ClientError, TimeoutError, OSError):
            ok = False
        for seq in push.seqs:
            if seq in self._messages:
                self._messages[seq].push_attempts += 1
        if ok:
            self.stats["pushes_sent"] += 1
            self.stats["receipts_pushed"] += len(push.seqs)
            self._mark(push, "pushed")
            return
        self.stats["push_failures"] += 1
        if push.attempt >= len(self.push_retry_schedule):
            self.stats["pushes_abandoned"] += 1
            self._mark(push, "abandoned")
            log.warning("event=sms_sim_push_abandoned receipts=%d attempts=%d",
                        len(push.seqs), push.attempt + 1)
            return
        at = time.time() + self.push_retry_schedule[push.attempt]
        heapq.heappush(self._heap, _Due(at, next(self._order),
                                        replace(push, attempt=push.attempt + 1)))
        self._wake.set()

    def _mark(self, push: _Push, state: str) -> None:
        for seq in push.seqs:
            if seq in self._messages:
                self._messages[seq].push = state

    # --- control API ---------------------------------------------------------------------

    async def _list_messages(self, request: web.Request) -> web.StreamResponse:
        return _json([m.as_json() for m in self._messages.values()])

    async def _clear_messages(self, request: web.Request) -> web.StreamResponse:
        count = len(self._messages)
        self._messages.clear()
        return _json({"removed": count})

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        return _json({**self.stats, "messages": len(self._messages), "pending": self.pending})

    async def _get_faults(self, request: web.Request) -> web.StreamResponse:
        return _json(asdict(self.faults))

    async def _set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object of fault settings")
            self.faults = self.faults.updated(changes)
        except ValueError as exc:
            return _json({"error": str(exc)}, status=400)
        log.info("event=sms_sim_faults_changed %s",
                 " ".join(f"{k}={v}" for k, v in asdict(self.faults).items()))
        return _json(asdict(self.faults))


def _body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refusal("FailedOperation.JsonParseFail", "failed to parse the request body") \
            from exc
    if not isinstance(body, dict):
        raise Refusal("FailedOperation.JsonParseFail", "the request body is not an object")
    return body


def _json(body: Any, *, status: int = 200) -> web.Response:
    # Raw UTF-8 Chinese, as both providers answer, not \\u escapes.
    return web.json_response(body, status=status,
                             dumps=lambda v: json.dumps(v, ensure_ascii=False))


# --- process entry point -----------------------------------------------------------------


def _template(text: str) -> tuple[str, tuple[str, ...]]:
    code, _, names = text.partition("=")
    if not code:
        raise argparse.ArgumentTypeError("a template is CODE=name1,name2")
    return code, tuple(n for n in names.split(",") if n)


def _schedule_arg(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError("a schedule is seconds,seconds,...") from exc


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m services.notifier.sms_sim",
                                description="Local Aliyun / Tencent Cloud SMS simulator "
                                            "with fault injection.")
    p.add_argument("--provider", choices=PROVIDERS, default="aliyun")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--callback-url", default=None, help="where receipts are pushed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--key-id", default="sim-key-id", help="AccessKeyId / SecretId")
    p.add_argument("--secret", default="sim-secret", help="AccessKeySecret / SecretKey")
    p.add_argument("--sdk-app-id", default="1400000001", help="Tencent SmsSdkAppId")
    p.add_argument("--sign-name", action="append", help="an approved sign name (repeatable)")
    p.add_argument("--template", action="append", type=_template,
                   help="an approved template: CODE=var1,var2 (repeatable)")
    p.add_argument("--keyword", action="append", default=[], help="a banned word")
    p.add_argument("--blacklist", action="append", default=[], help="a refused E.164 number")
    p.add_argument("--push-batch", type=int, default=100)
    p.add_argument("--push-interval", type=float, default=0.05, help="seconds")
    p.add_argument("--push-retry-schedule", type=_schedule_arg, default=PUSH_RETRY_SCHEDULE,
                   help="seconds between push attempts, e.g. 60,300,600")
    for name, kind in (("throttle_rate", float), ("balance", int), ("latency", float),
                       ("hang_rate", float), ("hang_sent_share", float),
                       ("fail_receipt_rate", float), ("lose_receipt_rate", float),
                       ("receipt_delay", float)):
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    p.add_argument("--throttle-http", action="store_true", default=None,
                   help="throttle with HTTP 429 instead of the provider's code")
    p.add_argument("--outage", action="store_true", default=None)
    return p


async def _serve(args: argparse.Namespace) -> None:
    faults = {f.name: getattr(args, f.name) for f in fields(Faults)
              if getattr(args, f.name) is not None}
    sim = SmsSimulator(
        args.provider, key_id=args.key_id, secret=args.secret, sdk_app_id=args.sdk_app_id,
        sign_names=args.sign_name or (DEFAULT_SIGN, NOTIFIER_SIGN),
        templates=dict(args.template) if args.template else None,
        callback_url=args.callback_url, seed=args.seed, keywords=args.keyword,
        blacklist=args.blacklist, push_batch=args.push_batch,
        push_interval=args.push_interval, push_retry_schedule=args.push_retry_schedule,
        **faults)
    await serve(sim, args.host, args.port)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return simserve.main("sms_sim", lambda: _serve(args))


if __name__ == "__main__":
    raise SystemExit(main())
