"""Notifier's Faust app, consume loop, dispatcher, timers and HTTP API: wiring only."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from services.notifier import api
from services.notifier.agents import (
    NotifyHandler,
    catalogue_words,
    decode_state,
    encode_state,
)
from services.notifier.metrics import NotifierMetrics
from services.notifier.providers.aliyun_sms import AliyunSms
from services.notifier.providers.base import Provider
from services.notifier.providers.smtp import SmtpEmail
from services.notifier.providers.tencent_sms import TencentSms
from services.notifier.providers.wechat import WeChatTemplate
from services.notifier.sender import Dispatcher
from services.notifier.settings import NotifierSettings
from services.notifier.store import purge_projection
from services.notifier.templates import load_catalogue
from shared.batchloop import BatchLoop
from shared.runtime import Runtime
from shared.state import KeyedState
from shared.timeutil import utc_now
from shared.topics import ORDERS_STATUS, ORDERS_SUBMITTED

settings = NotifierSettings()
runtime = Runtime("notifier", settings, Path(__file__).parent / "migrations")
app = runtime.app
# No Faust agents or tables (the loop has its own consumer, see shared/batchloop.py).
app.producer_only = True
metrics = NotifierMetrics(runtime.registry)


def providers(s: NotifierSettings) -> dict[str, Provider]:
    """The providers configured: a channel with none is left out of every plan."""
    found: dict[str, Provider] = {}
    timeout = s.send_timeout_seconds
    if s.aliyun_sms_url:
        found["aliyun"] = AliyunSms(s.aliyun_sms_url, s.aliyun_access_key_id,
                                    s.aliyun_access_key_secret, s.aliyun_sign_name,
                                    timeout=timeout)
    if s.tencent_sms_url:
        found["tencent"] = TencentSms(s.tencent_sms_url, s.tencent_secret_id,
                                      s.tencent_secret_key, s.tencent_sdk_app_id,
                                      s.tencent_sign_name, timeout=timeout)
    if s.wechat_url:
        found["wechat"] = WeChatTemplate(s.wechat_url, s.wechat_app_id, s.wechat_app_secret,
                                         timeout=timeout)
    if s.smtp_host:
        found["smtp"] = SmtpEmail(s.smtp_host, s.smtp_port, s.email_from,
                                  username=s.smtp_username, password=s.smtp_password,
                                  start_tls=s.smtp_starttls, timeout=timeout)
    return found


configured = providers(settings)
#: checked at start-up: a broken template stops the worker before it sends anything
catalogue = load_catalogue()
dispatcher = Dispatcher(runtime, configured, settings, metrics)

#: order_id -> OrderView (the projection of orders.submitted), or Waiting
orders: KeyedState = KeyedState("orders", encode=encode_state, decode=decode_state,
                                max_cached=settings.state_cache_max)
loop = BatchLoop(
    runtime,
    NotifyHandler(settings.rules(frozenset(p.channel for p in configured.values())),
                  catalogue, catalogue_words, metrics, wake=dispatcher.wake,
                  max_waiting=settings.max_waiting),
    [ORDERS_SUBMITTED, ORDERS_STATUS], state=orders, batch_max=settings.batch_max)
runtime.readiness = lambda: loop.ready
api.register(runtime, settings, metrics, dispatcher.wake)


@app.task
async def notify_customers() -> None:
    """Runs for the worker's life; if it fails past its own retries, the worker stops and a
    restart redelivers the uncommitted batch."""
    await loop.run()


@app.task
async def send_messages() -> None:
    """Runs for the worker's life: sends what is due, on every worker (the database hands
    each delivery to one of them at a time)."""
    await dispatcher.run()


@app.timer(interval=settings.rate_check_seconds)
async def housekeeping() -> None:
    await dispatcher.housekeeping()


@app.timer(interval=60.0)
async def check_providers() -> None:
    await dispatcher.check_providers()


@app.timer(interval=3600.0)
async def forget_old_orders() -> None:
    before = utc_now() - timedelta(days=settings.projection_retention_days)
    await purge_projection(await runtime.db.pool(), orders.name, before)


@app.on_before_shutdown.connect
async def _close_providers(app: object, **_: object) -> None:
    for provider in configured.values():
        await provider.close()
