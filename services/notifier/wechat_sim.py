"""A local stand-in for WeChat's Official Account API over real HTTP: it issues stable
access tokens, takes template messages the way WeChat does (same JSON, same ``errcode``
answers, same 10-minute ``client_msg_id`` dedup), pushes the signed ``TEMPLATESENDJOBFINISH``
receipt to a callback, and misbehaves on purpose, reproducibly, when told to.

WeChat API:
    POST /cgi-bin/stable_token              {"grant_type", "appid", "secret", "force_refresh"}
    POST /cgi-bin/message/template/send     ?access_token=...  {"touser", "template_id", ...}
Control API (JSON):
    GET|POST /sim/faults    read / change fault settings at run time
    POST /sim/tokens/expire expire every token (42001), or {"invalidate": true} (40001)
    GET /sim/messages       every accepted message, with its receipt's fate
    DELETE /sim/messages    forget them (and the dedup memory)
    GET /sim/stats          counters

What a send meets, in order: the injected infrastructure faults (``outage`` HTTP 503,
``latency``, ``hang_rate`` never answered, ``busy_rate`` errcode -1); the token (missing
41001, unknown or invalidated 40001, expired 42001); the body (empty 44002, not JSON 47001);
the dedup memory (a known (touser, client_msg_id) answers its first msgid and sends nothing);
the template id (40037); the openid (malformed 40003, unsubscribed 43004); the url (40066);
each data value (over 20 characters or with a newline: 47003, the content rules of May 2023);
the daily quota (45009, counted on accepted messages, reset at midnight Asia/Shanghai).
Stricter than WeChat on one point: its May 2023 notice says an over-long field is cut, not
refused; refusing it here makes a template the lint let through fail loudly in tests.

Faults are seeded: request faults come from one ``random.Random`` stream drawn twice per send
in arrival order, and a message's receipt fate (system failure, user block, lost push) from
one seeded by (seed, msgid), so the same seed and request sequence always give the same
faults, whatever the timing.

Run as a process: ``python -m services.notifier.wechat_sim --port 8203 --callback-url URL
--token T --app-id A --app-secret S --seed 1``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import logging
import random
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from services.notifier.providers.wechat import (
    PUSH_REPLY,
    RECEIPT_EVENT,
    SEND_PATH,
    SHANGHAI,
    TOKEN_PATH,
    mask_openid,
    push_signature,
)
from shared import simserve
from shared.simserve import serve
from shared.timeutil import utc_now

log = logging.getLogger(__name__)

# The template ids of the notifier's catalogue (templates/*.yaml), so the demo's messages
# are accepted out of the box; --templates / ``templates=`` replace them.
DEFAULT_TEMPLATES = frozenset(
    f"OS_{lang}_{name}" for lang in ("ZH", "EN")
    for name in ("ORDER_CONFIRMED", "ORDER_REJECTED", "ORDER_SHIPPED", "OUT_FOR_DELIVERY",
                 "ORDER_DELIVERED", "ORDER_CANCELLED"))
FIELD_LIMIT = 20                              # characters per data value since 2023-05-04
OPENID = re.compile(r"[A-Za-z0-9_-]{28}")     # every openid in WeChat's examples: 28 chars
FORCE_SPACING = 30.0                          # force_refresh is ignored within 30 s ...
FORCE_PER_DAY = 20                            # ... and allowed 20 times a day
ACCOUNT = "gh_0123456789ab"                   # the account's original id, in pushes
STATUS_SUCCESS = "success"
STATUS_BLOCKED = "failed:user block"
STATUS_FAILED = "failed: system failed"


@dataclass(frozen=True)
class Faults:
    """Fault settings; rates are probabilities in [0, 1], times are seconds."""

    busy_rate: float = 0.0          # sends answered errcode -1 (system busy)
    fail_rate: float = 0.0          # accepted, then receipt "failed: system failed"
    block_rate: float = 0.0         # accepted, then receipt "failed:user block"
    lose_receipt_rate: float = 0.0  # accepted, and no receipt is ever pushed
    receipt_delay: float = 0.0      # seconds between acceptance and the receipt push
    latency: float = 0.0            # seconds added before every API answer
    hang_rate: float = 0.0          # sends never answered (until the simulator stops)
    outage: bool = False            # every API call answered HTTP 503

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
        for name in ("busy_rate", "fail_rate", "block_rate", "lose_receipt_rate", "hang_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1], not {value!r}")
        for name in ("receipt_delay", "latency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be >= 0 seconds, not {value!r}")
        if not isinstance(self.outage, bool):
            raise ValueError(f"outage must be true or false, not {self.outage!r}")


@dataclass
class Stats:
    token_requests: int = 0
    tokens_issued: int = 0
    token_refusals: int = 0       # bad grant_type, appid or secret
    sends: int = 0                # every request to the send API
    accepted: int = 0             # new messages (dedup hits not included)
    duplicates: int = 0           # dedup hits: the first msgid answered again
    busy: int = 0
    hung: int = 0
    outage_answers: int = 0
    refusals: dict[str, int] = field(default_factory=dict)  # errcode -> count
    receipts_sent: int = 0        # pushes the callback answered "success"
    receipt_failures: int = 0     # failed attempts
    receipts_abandoned: int = 0   # given up after every retry
    receipts_lost: int = 0        # never pushed (lose_receipt_rate)


@dataclass
class _Token:
    value: str
    expires_at: float             # epoch seconds
    valid: bool = True            # False once invalidated (force_refresh, /sim/tokens/expire)


@dataclass
class _Message:
    openid: str
    template_id: str
    data: dict[str, str]
    url: str | None
    client_msg_id: str | None
    msgid: int
    time: str                     # aware ISO-8601 UTC
    fate: str                     # the Status its receipt carries
    push: str                     # pending | delivered | abandoned | lost | none
    accepted_at: float = 0.0      # monotonic, for the dedup window

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["accepted_at"]
        return out


class WeChatSimulator:
    """The WeChat Official Account API, for one account. ``await start()`` returns its base
    URL; ``await stop()``."""

    def __init__(self, *, app_id: str = "wxd0e1f2a3b4c5d6e7", app_secret: str = "sim-secret",
                 token: str = "sim-token", callback_url: str | None = None, seed: int = 0,
                 token_lifetime: int = 7200, token_overlap: float = 300.0,
                 daily_quota: int = 100_000, templates: Iterable[str] = DEFAULT_TEMPLATES,
                 unsubscribed: Iterable[str] = (), dedup_window: float = 600.0,
                 push_retries: int = 3, push_retry_delay: float = 1.0,
                 push_timeout: float = 5.0, **faults: Any) -> None:
        if token_lifetime < 1 or daily_quota < 0 or push_retries < 0:
            raise ValueError("token_lifetime >= 1, daily_quota >= 0 and push_retries >= 0")
        self.app_id, self.app_secret, self.token = app_id, app_secret, token
        self.callback_url = callback_url
        self.seed = seed
        self.token_lifetime = token_lifetime
        self.token_overlap = token_overlap    # WeChat rotates the token 5 min before its end
        self.daily_quota = daily_quota
        self.templates = frozenset(templates)
        self.unsubscribed = set(unsubscribed)
        self.dedup_window = dedup_window
        self.push_retries, self.push_retry_delay = push_retries, push_retry_delay
        self.push_timeout = push_timeout
        self.faults = Faults().updated(faults)
        self.stats = Stats()
        self.messages: list[_Message] = []
        self._dedup: dict[tuple[str, str], _Message] = {}
        self._tokens: dict[str, _Token] = {}
        self._current: _Token | None = None
        self._forced: list[float] = []        # epoch seconds of force refreshes
        self._token_seq = itertools.count(1)
        self._msgids = itertools.count(200_000_001)
        self._rids = itertools.count(1)
        self._request_rng = random.Random(f"{seed}|request")
        self._nonce_rng = random.Random(f"{seed}|nonce")
        self._quota_day = utc_now().astimezone(SHANGHAI).date()
        self._quota_used = 0
        self._pushes: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.app = web.Application()
        self.app.router.add_post(TOKEN_PATH, self._stable_token)
        self.app.router.add_post(SEND_PATH, self._send)
        self.app.router.add_get("/sim/faults", self._get_faults)
        self.app.router.add_post("/sim/faults", self._set_faults)
        self.app.router.add_post("/sim/tokens/expire", self._expire_tokens)
        self.app.router.add_get("/sim/messages", self._get_messages)
        self.app.router.add_delete("/sim/messages", self._clear_messages)
        self.app.router.add_get("/sim/stats", self._stats)

    # --- life cycle ----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._stopping.clear()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.push_timeout))
        # Hanging handlers end as soon as stop() is called, so a short shutdown suffices.
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.base_url = f"http://{host}:{self._runner.addresses[0][1]}"
        log.info("event=wechat_sim_started url=%s seed=%s", self.base_url, self.seed)
        return self.base_url

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._pushes:
            task.cancel()
        await asyncio.gather(*self._pushes, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        log.info("event=wechat_sim_stopped accepted=%d receipts_sent=%d", self.stats.accepted,
                 self.stats.receipts_sent)

    async def __aenter__(self) -> WeChatSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def pending_pushes(self) -> int:
        """Receipts scheduled or being pushed (delays and retries included)."""
        return len(self._pushes)

    # --- WeChat API: tokens --------------------------------------------------------------

    async def _stable_token(self, request: web.Request) -> web.StreamResponse:
        self.stats.token_requests += 1
        raw = await request.read()  # before any delay: a caller that gives up cuts it short
        early = await self._infrastructure()
        if early is not None:
            return early
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            return self._refuse(47001, "data format error")
        if body.get("grant_type") != "client_credential":
            return self._refuse(40002, "invalid grant_type", token=True)
        if body.get("appid") != self.app_id:
            return self._refuse(40013, "invalid appid", token=True)
        if body.get("secret") != self.app_secret:
            return self._refuse(40125, "invalid appsecret", token=True)
        now = time.time()
        if body.get("force_refresh") is True:
            refused = self._force_refresh(now)
            if refused is not None:
                return refused
        current = self._current
        if current is None or not current.valid or current.expires_at - now <= self.token_overlap:
            # Normal mode hands out a new token only in the old one's last minutes (or after
            # it died); the old one stays valid to its own end, as on WeChat.
            current = self._issue(now)
        return web.json_response({"access_token": current.value,
                                  "expires_in": max(1, int(current.expires_at - now))})

    def _force_refresh(self, now: float) -> web.Response | None:
        """Force mode: a new token that kills the last one, within WeChat's limits."""
        self._forced = [t for t in self._forced if now - t < 86_400]
        if self._forced and now - self._forced[-1] < FORCE_SPACING:
            return None   # "否则不会刷新": within 30 s the current token is answered again
        if len(self._forced) >= FORCE_PER_DAY:
            # The docs give the limit but not its errcode: 45009 is our guess.
            return self._refuse(45009, "reach max api daily quota limit", token=True)
        self._forced.append(now)
        if self._current is not None:
            self._current.valid = False
        self._issue(now)
        return None

    def _issue(self, now: float) -> _Token:
        n = next(self._token_seq)
        secret = hashlib.sha256(f"{self.seed}|{self.app_id}|{n}|{now}".encode()).hexdigest()
        token = _Token(f"{n}_{secret}", now + self.token_lifetime)
        self._tokens[token.value] = token
        self._current = token
        self.stats.tokens_issued += 1
        return token

    def _token_problem(self, value: str | None) -> tuple[int, str] | None:
        if not value:
            return 41001, "access_token missing"
        token = self._tokens.get(value)
        if token is None or not token.valid:
            return 40001, "invalid credential, access_token is invalid or not latest"
        if time.time() >= token.expires_at:
            return 42001, "access_token expired"
        return None

    # --- WeChat API: template send -------------------------------------------------------

    async def _send(self, request: web.Request) -> web.StreamResponse:
        self.stats.sends += 1
        hang, busy = self._request_rng.random(), self._request_rng.random()  # always two
        raw = await request.read()
        early = await self._infrastructure()
        if early is not None:
            return early
        if hang < self.faults.hang_rate:
            self.stats.hung += 1
            await self._stopping.wait()
            return web.Response(status=503, text="simulator stopping")
        if busy < self.faults.busy_rate:
            self.stats.busy += 1
            return self._answer(-1, "system error")
        problem = self._token_problem(request.query.get("access_token"))
        if problem is not None:
            return self._refuse(*problem)
        if not raw.strip():
            return self._refuse(44002, "empty post data")
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            return self._refuse(47001, "data format error")
        openid, client_msg_id = body.get("touser"), body.get("client_msg_id") or None
        if isinstance(openid, str) and isinstance(client_msg_id, str):
            earlier = self._recent(openid, client_msg_id)
            if earlier is not None:
                self.stats.duplicates += 1
                return self._answer(0, "ok", msgid=earlier.msgid)
        problem = self._message_problem(body)
        if problem is not None:
            return self._refuse(*problem)
        if not self._take_quota():
            return self._refuse(45009, "reach max api daily quota limit")
        message = self._accept(body)
        return self._answer(0, "ok", msgid=message.msgid)

    def _recent(self, openid: str, client_msg_id: str) -> _Message | None:
        earlier = self._dedup.get((openid, client_msg_id))
        if earlier is None or time.monotonic() - earlier.accepted_at > self.dedup_window:
            return None
        return earlier

    def _message_problem(self, body: Mapping[str, Any]) -> tuple[int, str] | None:
        template_id, openid, url = body.get("template_id"), body.get("touser"), body.get("url")
        if not isinstance(template_id, str) or template_id not in self.templates:
            return 40037, "invalid template_id"
        if not isinstance(openid, str) or not OPENID.fullmatch(openid):
            return 40003, "invalid openid"
        if openid in self.unsubscribed:
            return 43004, "require subscribe"
        if url not in (None, "") and not (isinstance(url, str)
                                          and url.startswith(("http://", "https://"))):
            return 40066, "invalid url"
        client_msg_id = body.get("client_msg_id")
        if client_msg_id is not None and not isinstance(client_msg_id, str):
            return 47001, "data format error"
        return _data_problem(body.get("data"))

    def _take_quota(self) -> bool:
        today = utc_now().astimezone(SHANGHAI).date()
        if today != self._quota_day:
            self._quota_day, self._quota_used = today, 0
        if self._quota_used >= self.daily_quota:
            return False
        self._quota_used += 1
        return True

    def _accept(self, body: Mapping[str, Any]) -> _Message:
        msgid = next(self._msgids)
        rng = random.Random(f"{self.seed}|fate|{msgid}")
        fail, block, lose = rng.random(), rng.random(), rng.random()
        fate = (STATUS_FAILED if fail < self.faults.fail_rate
                else STATUS_BLOCKED if block < self.faults.block_rate else STATUS_SUCCESS)
        lost = lose < self.faults.lose_receipt_rate
        push = "lost" if lost else "pending" if self.callback_url else "none"
        message = _Message(
            openid=body["touser"], template_id=body["template_id"],
            data={name: item["value"] for name, item in body["data"].items()},
            url=body.get("url") or None, client_msg_id=body.get("client_msg_id") or None,
            msgid=msgid, time=utc_now().isoformat(), fate=fate, push=push,
            accepted_at=time.monotonic())
        self.messages.append(message)
        if message.client_msg_id:
            self._dedup[(message.openid, message.client_msg_id)] = message
        self.stats.accepted += 1
        if lost:
            self.stats.receipts_lost += 1
        elif self.callback_url:
            task = asyncio.create_task(self._push_receipt(message, self.callback_url))
            self._pushes.add(task)
            task.add_done_callback(self._pushes.discard)
        log.info("event=wechat_sim_accepted openid=%s msgid=%d fate=%s push=%s",
                 mask_openid(message.openid), msgid, fate, push)
        return message

    # --- receipts ------------------------------------------------------------------------

    async def _push_receipt(self, message: _Message, url: str) -> None:
        if self.faults.receipt_delay:
            await asyncio.sleep(self.faults.receipt_delay)
        for attempt in range(self.push_retries + 1):
            if attempt:
                await asyncio.sleep(self.push_retry_delay)
            failure = await self._deliver(message, url)
            if failure is None:
                message.push = "delivered"
                self.stats.receipts_sent += 1
                return
            self.stats.receipt_failures += 1
            log.info("event=wechat_sim_push_failed msgid=%d attempt=%d error=%s",
                     message.msgid, attempt + 1, failure)
        message.push = "abandoned"
        self.stats.receipts_abandoned += 1

    async def _deliver(self, message: _Message, url: str) -> str | None:
        """One push attempt; None when the callback answered ``success``, else why not."""
        assert self._session is not None
        timestamp = str(int(time.time()))
        nonce = str(self._nonce_rng.randrange(10**9, 10**10))
        target = URL(url).update_query(signature=push_signature(self.token, timestamp, nonce),
                                       timestamp=timestamp, nonce=nonce)
        try:
            async with self._session.post(target, data=receipt_xml(message, timestamp),
                                          headers={"Content-Type": "text/xml"}) as resp:
                text = (await resp.text(errors="replace")).strip()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return repr(exc)
        # WeChat takes "success" or an empty body as "received, no reply".
        if resp.status == 200 and text in (PUSH_REPLY, ""):
            return None
        return f"HTTP {resp.status} {text[:40]!r}"

    # --- answers -------------------------------------------------------------------------

    async def _infrastructure(self) -> web.Response | None:
        """The faults of what stands in front of the API: an outage, then latency."""
        if self.faults.outage:
            self.stats.outage_answers += 1
            return web.Response(status=503, text="503 Service Unavailable")
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        return None

    def _answer(self, errcode: int, errmsg: str, **extra: Any) -> web.Response:
        # Business answers are HTTP 200 with the code in the body; errors carry a rid.
        if errcode:
            errmsg = f"{errmsg} rid: {int(time.time()):08x}-{next(self._rids):08x}-sim"
        return web.json_response({"errcode": errcode, "errmsg": errmsg, **extra})

    def _refuse(self, errcode: int, errmsg: str, *, token: bool = False) -> web.Response:
        if token:
            self.stats.token_refusals += 1
        key = str(errcode)
        self.stats.refusals[key] = self.stats.refusals.get(key, 0) + 1
        return self._answer(errcode, errmsg)

    # --- control API ---------------------------------------------------------------------

    async def _get_faults(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(asdict(self.faults))

    async def _set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object of fault settings")
            self.faults = self.faults.updated(changes)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        log.info("event=wechat_sim_faults_changed %s",
                 " ".join(f"{k}={v}" for k, v in asdict(self.faults).items()))
        return web.json_response(asdict(self.faults))

    async def _expire_tokens(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return web.json_response({"error": "expected a JSON object"}, status=400)
        invalidate = isinstance(body, dict) and body.get("invalidate") is True
        now = time.time()
        for token in self._tokens.values():
            if invalidate:
                token.valid = False
            else:
                token.expires_at = min(token.expires_at, now)
        key = "invalidated" if invalidate else "expired"
        return web.json_response({key: len(self._tokens)})

    async def _get_messages(self, request: web.Request) -> web.StreamResponse:
        return web.json_response([m.to_json() for m in self.messages],
                                 dumps=lambda v: json.dumps(v, ensure_ascii=False))

    async def _clear_messages(self, request: web.Request) -> web.StreamResponse:
        count = len(self.messages)
        self.messages.clear()
        self._dedup.clear()
        return web.json_response({"removed": count})

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({**asdict(self.stats), "pending_pushes": self.pending_pushes,
                                  "quota_used": self._quota_used,
                                  "tokens_live": sum(t.valid and t.expires_at > time.time()
                                                     for t in self._tokens.values())})


def _data_problem(data: Any) -> tuple[int, str] | None:
    """47003 for a ``data`` that breaks the template rules, naming the field as WeChat does."""
    if not isinstance(data, dict) or not data:
        return 47003, "argument invalid! data invalid"
    for name, item in data.items():
        value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(value, str):
            return 47003, f"argument invalid! data.{name}.value invalid"
        if len(value) > FIELD_LIMIT or "\n" in value or "\r" in value:
            return 47003, (f"argument invalid! data.{name}.value exceeds {FIELD_LIMIT} "
                           "characters or has a line break")
    return None


def receipt_xml(message: _Message, create_time: str) -> bytes:
    """The ``TEMPLATESENDJOBFINISH`` event WeChat pushes for ``message`` (plain mode)."""
    return (
        "<xml>"
        f"<ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
        f"<FromUserName><![CDATA[{message.openid}]]></FromUserName>"
        f"<CreateTime>{create_time}</CreateTime>"
        "<MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[{RECEIPT_EVENT}]]></Event>"
        f"<MsgID>{message.msgid}</MsgID>"
        f"<Status><![CDATA[{message.fate}]]></Status>"
        "</xml>"
    ).encode()


# --- process entry point -----------------------------------------------------------------

_FAULT_FLAGS = (("busy_rate", float), ("fail_rate", float), ("block_rate", float),
                ("lose_receipt_rate", float), ("receipt_delay", float), ("latency", float),
                ("hang_rate", float))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m services.notifier.wechat_sim",
                                description="Local WeChat Official Account API simulator.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--callback-url", default=None, help="where receipts are pushed")
    p.add_argument("--token", default="sim-token", help="the server token pushes are signed with")
    p.add_argument("--app-id", default="wxd0e1f2a3b4c5d6e7")
    p.add_argument("--app-secret", default="sim-secret")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--token-lifetime", type=int, default=7200, help="seconds")
    p.add_argument("--daily-quota", type=int, default=100_000)
    p.add_argument("--templates", default=",".join(sorted(DEFAULT_TEMPLATES)),
                   help="comma-separated template ids the account has")
    p.add_argument("--unsubscribed", default="", help="comma-separated openids (43004)")
    p.add_argument("--push-retries", type=int, default=3)
    p.add_argument("--push-retry-delay", type=float, default=1.0, help="seconds")
    for name, kind in _FAULT_FLAGS:
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    p.add_argument("--outage", action="store_true", help="answer every API call HTTP 503")
    return p


async def _serve(args: argparse.Namespace) -> None:
    faults: dict[str, Any] = {name: getattr(args, name) for name, _ in _FAULT_FLAGS
                              if getattr(args, name) is not None}
    if args.outage:
        faults["outage"] = True
    sim = WeChatSimulator(
        app_id=args.app_id, app_secret=args.app_secret, token=args.token,
        callback_url=args.callback_url, seed=args.seed, token_lifetime=args.token_lifetime,
        daily_quota=args.daily_quota, templates=_split(args.templates),
        unsubscribed=_split(args.unsubscribed), push_retries=args.push_retries,
        push_retry_delay=args.push_retry_delay, **faults)
    await serve(sim, args.host, args.port)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return simserve.main("wechat_sim", lambda: _serve(args))


if __name__ == "__main__":
    raise SystemExit(main())

