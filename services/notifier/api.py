"""Notifier's HTTP API: the providers' delivery receipts in, the customers' inbox out.

- ``POST /v1/receipts/aliyun``: Aliyun's ``SmsReport`` push (a JSON array), answered
  ``{"code":0,"msg":"接收成功"}`` once kept, or HTTP 500 to ask for the push again.
- ``POST /v1/receipts/tencent``: Tencent Cloud's status callback (a JSON array), answered
  ``{"result":0,"errmsg":"OK"}``.
- ``POST /v1/receipts/wechat``: WeChat's ``TEMPLATESENDJOBFINISH`` event (XML), signed with
  the account's token in the query string (``signature``, ``timestamp``, ``nonce``),
  answered ``success``; ``GET`` answers WeChat's server-URL check (``echostr``).
- ``GET /v1/customers/{id}/inbox?limit=&before=``: the in-app messages, newest first.
- ``POST /v1/customers/{id}/inbox/{message_id}/read``: mark one read.

A receipt is kept (``receipts`` table, once per provider message id) and applied to its
delivery by the dispatcher, which is woken at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import faust
from aiohttp import web

from services.notifier import store
from services.notifier.metrics import NotifierMetrics
from services.notifier.providers import aliyun_sms, tencent_sms, wechat
from services.notifier.providers.base import Receipt
from services.notifier.settings import NotifierSettings
from shared.runtime import Runtime
from shared.timeutil import to_utc, utc_now

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
MAX_PAGE = 200


class TooLarge(ValueError):
    pass


async def read_body(request: Any, limit: int = MAX_BODY) -> bytes:
    """The whole body, however many chunks it came in, refusing one over ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"body of {request.content_length} bytes is over {limit}")
    chunks, size = [], 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body is over {limit} bytes")
        chunks.append(chunk)


class ReceiptIntake:
    """Parse, keep and hand over receipts; the web views are thin around it."""

    def __init__(self, runtime: Runtime, settings: NotifierSettings, metrics: NotifierMetrics,
                 wake: Callable[[], None]) -> None:
        self.runtime = runtime
        self.settings = settings
        self.metrics = metrics
        self.wake = wake

    async def keep(self, receipts: list[Receipt]) -> None:
        rows = [(r.provider, r.provider_message_id, r.message_id, r.delivered, r.code[:64],
                 r.detail[:300], to_utc(r.at)) for r in receipts]
        await store.add_receipts(await self.runtime.db.pool(), rows)
        if rows:
            self.wake()

    async def sms(self, provider: str, request: Any) -> web.Response:
        module = aliyun_sms if provider == "aliyun" else tencent_sms
        try:
            receipts = module.parse_receipts(await read_body(request))
        except TooLarge as exc:
            return self._answer(provider, 413, {"error": str(exc)})
        except ValueError as exc:
            log.warning("event=receipt_refused provider=%s error=%s", provider, exc)
            return self._answer(provider, 400, {"error": str(exc)[:200]})
        try:
            await self.keep(receipts)
        except Exception:
            log.exception("event=receipt_not_kept provider=%s", provider)
            return self._answer(provider, 500, {"error": "receipt not kept, push again"})
        return self._answer(provider, 200, module.RECEIPT_ANSWER)

    async def wechat(self, request: Any) -> web.Response:
        query = request.query
        if not wechat.verify_push(self.settings.wechat_token, query.get("signature"),
                                  query.get("timestamp"), query.get("nonce")):
            return self._plain("wechat", 401, "bad signature")
        try:
            receipt = wechat.parse_receipt(await read_body(request, 64 * 1024))
        except TooLarge as exc:
            return self._plain("wechat", 413, str(exc))
        except ValueError as exc:
            return self._plain("wechat", 400, str(exc)[:200])
        try:
            await self.keep([receipt] if receipt is not None else [])
        except Exception:
            log.exception("event=receipt_not_kept provider=wechat")
            return self._plain("wechat", 500, "not kept")
        return self._plain("wechat", 200, wechat.PUSH_REPLY)

    def _answer(self, provider: str, status: int, body: Any) -> web.Response:
        self.metrics.receipt_requests.labels(provider, str(status)).inc()
        return web.json_response(body, status=status)

    def _plain(self, provider: str, status: int, text: str) -> web.Response:
        self.metrics.receipt_requests.labels(provider, str(status)).inc()
        return web.Response(text=text, status=status)


def message_view(row: Any) -> dict[str, Any]:
    return {"message_id": row["message_id"], "order_id": row["order_id"],
            "status": row["status"], "title": row["title"], "body": row["body"],
            "created_at": row["created_at"].isoformat(),
            "read_at": row["read_at"].isoformat() if row["read_at"] else None}


def register(runtime: Runtime, settings: NotifierSettings, metrics: NotifierMetrics,
             wake: Callable[[], None]) -> ReceiptIntake:
    intake = ReceiptIntake(runtime, settings, metrics, wake)

    @runtime.app.page("/v1/receipts/{provider}", name="receipts")
    class Receipts(faust.web.View):
        async def post(self, request: faust.web.Request, provider: str) -> web.Response:
            if provider in ("aliyun", "tencent"):
                return await intake.sms(provider, request)
            if provider == "wechat":
                return await intake.wechat(request)
            return web.json_response({"reason": "unknown_provider",
                                      "error": f"no receipts from {provider[:32]!r}"},
                                     status=404)

        async def get(self, request: faust.web.Request, provider: str) -> web.Response:
            # WeChat checks a server URL by a signed GET whose echostr must come back.
            query = request.query
            if provider == "wechat" and wechat.verify_push(
                    settings.wechat_token, query.get("signature"), query.get("timestamp"),
                    query.get("nonce")):
                return web.Response(text=query.get("echostr", ""))
            return web.Response(text="bad signature", status=401)

    @runtime.app.page("/v1/customers/{customer_id}/inbox", name="inbox")
    class Inbox(faust.web.View):
        async def get(self, request: faust.web.Request, customer_id: str) -> web.Response:
            try:
                limit = int(request.query.get("limit", "50"))
                if not 1 <= limit <= MAX_PAGE:
                    raise ValueError(f"limit must be 1..{MAX_PAGE}")
                before_text = request.query.get("before")
                before = to_utc(datetime.fromisoformat(before_text)) if before_text else None
            except ValueError as exc:
                return web.json_response({"reason": "bad_query", "error": str(exc)},
                                         status=400)
            rows = await store.inbox(await runtime.db.pool(), customer_id, limit, before)
            items = [message_view(r) for r in rows]
            return web.json_response({
                "customer_id": customer_id, "messages": items,
                "next_before": items[-1]["created_at"] if len(items) == limit else None})

    @runtime.app.page("/v1/customers/{customer_id}/inbox/{message_id}/read", name="read")
    class Read(faust.web.View):
        async def post(self, request: faust.web.Request, customer_id: str,
                       message_id: str) -> web.Response:
            row = await store.mark_read(await runtime.db.pool(), customer_id, message_id,
                                        utc_now())
            if row is None:
                return web.json_response(
                    {"reason": "unknown_message",
                     "error": f"customer {customer_id[:64]!r} has no message "
                              f"{message_id[:64]!r}"}, status=404)
            return web.json_response({"message_id": row["message_id"],
                                      "read_at": row["read_at"].isoformat()})

    return intake
