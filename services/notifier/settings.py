"""Notifier settings (env prefix ORDERSTREAM_NOTIFIER_). A channel runs only when its
provider is configured: SMS with an Aliyun or Tencent URL, WeChat with its URL, e-mail with
an SMTP host; the in-app inbox always."""

from __future__ import annotations

from datetime import time, timedelta
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from services.notifier import dispatch, domain
from shared.settings import ServiceSettings


class PolicySetting(BaseModel):
    kind: Literal["all", "failover"]
    channels: list[Literal["wechat", "sms", "email"]] = Field(min_length=1)


class NotifierSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERSTREAM_NOTIFIER_", extra="ignore")

    http_port: int = 6069
    public_url: str = Field(
        default="http://127.0.0.1:6069",
        description="This service's URL as providers see it (their receipt callbacks)")

    # --- who hears what ------------------------------------------------------------------
    triggers: list[Literal["confirmation", "shipped", "out_for_delivery", "delivered",
                           "rejected", "cancelled"]] = Field(
        default=list(domain.TRIGGERS), description="Triggers customers are told about")
    confirm_on: dict[str, Literal["reserved", "paid"]] = Field(
        default={}, description="Per sales channel: confirm on reservation or once paid "
                                "(JSON object, e.g. {\"web\": \"paid\"})")
    confirm_default: Literal["reserved", "paid"] = "reserved"
    policies: dict[str, PolicySetting] = Field(
        default={}, description="Per trigger: {\"kind\": \"all\"|\"failover\", \"channels\": "
                                "[...]} (JSON object), over the defaults")
    vip_deadline_seconds: float = Field(
        default=1800, gt=0, description="A VIP no channel reached this long after the change "
                                        "gets a follow-up task on ops.alerts")
    ship_cutoff: time = Field(default=time(16, 0),
                              description="Local time after which orders ship the next day")
    ship_at: time = Field(default=time(17, 0), description="Local time orders ship by")
    after_sales_url: str = "https://shop.example.com/after-sales"
    projection_retention_days: float = Field(
        default=90, gt=0, description="Orders untouched this long leave the projection")
    max_waiting: int = Field(default=50, ge=1,
                             description="Most changes kept waiting for an unseen order")

    # --- delivery ------------------------------------------------------------------------
    sms_weights: dict[str, float] = Field(
        default={"aliyun": 1.0, "tencent": 1.0},
        description="Share of SMS traffic per configured provider (JSON object)")
    max_attempts: int = Field(default=4, ge=1, le=20)
    backoff_base_seconds: float = Field(default=2.0, gt=0)
    backoff_cap_seconds: float = Field(default=300.0, gt=0)
    throttle_pause_seconds: float = Field(default=30.0, gt=0)
    quota_pause_seconds: float = Field(default=3600.0, gt=0)
    receipt_timeout_seconds: dict[str, float] = Field(
        default={"sms": 120.0, "wechat": 120.0},
        description="How long a channel waits for a receipt before a failover policy moves on")
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown_seconds: float = Field(default=30.0, gt=0)
    dispatch_batch: int = Field(default=500, ge=1, le=5000)
    dispatch_concurrency: int = Field(default=50, ge=1, le=1000)
    dispatch_tick_seconds: float = Field(default=0.5, gt=0)
    lease_seconds: float = Field(default=60.0, gt=0,
                                 description="A claimed delivery is this worker's for so long")
    send_timeout_seconds: float = Field(default=5.0, gt=0)

    # --- delivery rate -------------------------------------------------------------------
    rate_window_seconds: float = Field(default=3600, gt=0,
                                       description="The rolling window of the delivery rate")
    rate_threshold: float = Field(default=0.95, gt=0, le=1)
    rate_min_volume: int = Field(default=50, ge=1,
                                 description="Fewer results than this in the window: no alert")
    rate_check_seconds: float = Field(default=15, gt=0)

    # --- providers -----------------------------------------------------------------------
    smtp_host: str | None = Field(default=None, description="No e-mail without it")
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    email_from: str = "orderstream@localhost"

    aliyun_sms_url: str | None = Field(default=None, description="No Aliyun SMS without it")
    aliyun_access_key_id: str = ""
    aliyun_access_key_secret: str = ""
    aliyun_sign_name: str = "orderstream"

    tencent_sms_url: str | None = Field(default=None, description="No Tencent SMS without it")
    tencent_secret_id: str = ""
    tencent_secret_key: str = ""
    tencent_sdk_app_id: str = ""
    tencent_sign_name: str = "orderstream"

    wechat_url: str | None = Field(default=None, description="No WeChat without it")
    wechat_app_id: str = ""
    wechat_app_secret: str = ""
    wechat_token: str = Field(default="", description="Token WeChat signs its pushes with")

    def rules(self, available: frozenset[str]) -> domain.Rules:
        policies = dict(domain.DEFAULT_POLICIES)
        policies.update({name: domain.Policy(p.kind, tuple(p.channels))
                         for name, p in self.policies.items()})
        return domain.Rules(
            confirm_on=self.confirm_on, confirm_default=self.confirm_default,
            enabled=frozenset(self.triggers), policies=policies,
            vip_deadline=timedelta(seconds=self.vip_deadline_seconds),
            ship_cutoff=self.ship_cutoff, ship_at=self.ship_at,
            after_sales_url=self.after_sales_url, available=available)

    def dispatch(self, providers: dict[str, list[str]]) -> dispatch.Settings:
        """``providers``: channel -> the names of its configured providers."""
        weights = {channel: {name: (self.sms_weights.get(name, 1.0) if channel == "sms"
                                    else 1.0) for name in names}
                   for channel, names in providers.items()}
        return dispatch.Settings(
            providers=weights, max_attempts=self.max_attempts,
            backoff_base=self.backoff_base_seconds, backoff_cap=self.backoff_cap_seconds,
            throttle_pause=self.throttle_pause_seconds, quota_pause=self.quota_pause_seconds,
            receipt_timeout={"email": 0.0, **self.receipt_timeout_seconds},
            breaker_failures=self.breaker_failures,
            breaker_cooldown=self.breaker_cooldown_seconds)
