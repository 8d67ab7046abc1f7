"""Status-tracking settings (env prefix ORDERSTREAM_STATUS_)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.events import OrderStatus
from shared.settings import ServiceSettings


def _seconds(value: Any) -> Any:
    """Durations from the environment: a plain number is seconds ("300"), as in JSON."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
        return float(value)
    return value


#: seconds (a number) or an ISO 8601 duration ("PT10M")
Duration = Annotated[timedelta, BeforeValidator(_seconds)]

#: The deadlines from the requirements (PAID not PACKED in 24 h, no scan in 48 h, ...).
DEFAULT_STALE_AFTER: dict[OrderStatus, timedelta] = {
    OrderStatus.SUBMITTED: timedelta(minutes=1),
    OrderStatus.RESERVED: timedelta(hours=2),
    OrderStatus.PAID: timedelta(hours=24),
    OrderStatus.PACKED: timedelta(hours=24),
    OrderStatus.PICKED_UP: timedelta(hours=48),
    OrderStatus.IN_TRANSIT: timedelta(hours=48),
    OrderStatus.OUT_FOR_DELIVERY: timedelta(hours=24),
    OrderStatus.DELIVERY_EXCEPTION: timedelta(hours=24),
}

#: The shortest carrier polling interval allowed in production: carriers throttle and bill
#: per query, and callbacks cover the normal case.
MIN_POLL_INTERVAL = timedelta(minutes=5)


class StatusSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERSTREAM_STATUS_", extra="ignore")

    http_port: int = 6068
    merchant_zone: str = Field(
        default="Asia/Shanghai",
        description="IANA zone in which the query API also shows times (besides UTC)")

    # --- stale orders --------------------------------------------------------------------
    stale_after: dict[OrderStatus, Duration] = Field(
        default=DEFAULT_STALE_AFTER,
        description="How long an order may stay in a status before it is stale (JSON object of "
                    "status to seconds or ISO 8601 duration, e.g. {\"PAID\": \"PT12H\"}; merged "
                    "over the defaults, null removes one). With the carrier it counts from the "
                    "last scan. Statuses not listed never go stale")
    stale_repeat: Duration = Field(
        default=timedelta(hours=6),
        description="A stale order raises one more alert only after this long (seconds or ISO)")
    stale_check_seconds: float = Field(default=30, gt=0,
                                       description="How often stale orders are looked for")
    orphan_after: Duration = Field(
        default=timedelta(hours=1),
        description="Fulfilment or payment news for an order never submitted alerts after this")
    notice_webhook: str | None = Field(
        default=None, description="Operator robot webhook (WeCom style) for stale-order notices")
    notice_email_to: list[str] = Field(
        default=[], description="Operator e-mail addresses for stale-order notices (JSON list)")
    notice_email_from: str = Field(default="orderstream@localhost")
    smtp_host: str = Field(default="127.0.0.1")
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False

    # --- carriers ------------------------------------------------------------------------
    poll_interval: Duration = Field(
        default=timedelta(minutes=10),
        description="Poll a carrier for a parcel with no news for this long (minimum 5 "
                    "minutes unless allow_short_poll)")
    allow_short_poll: bool = Field(
        default=False, description="Allow poll_interval below 5 minutes (tests and the demo)")
    poll_tick_seconds: float = Field(default=5, gt=0,
                                     description="How often due parcels are looked for")
    poll_batch: int = Field(default=200, ge=1, le=5000,
                            description="Most parcels claimed per look")
    poll_concurrency: int = Field(default=20, ge=1, le=500,
                                  description="Carrier queries in flight at once")
    poll_timeout_seconds: float = Field(default=10, gt=0, description="One query's time limit")
    carrier_rate_per_second: dict[str, float] = Field(
        default={}, description="Per-carrier query rate limit (JSON object); others use "
                                "default_carrier_rate")
    default_carrier_rate: float = Field(default=5.0, gt=0)
    kuaidi100_url: str | None = Field(
        default=None, description="Base URL of the Kuaidi100-style query API; no polling "
                                  "without it")
    kuaidi100_customer: str = Field(default="", description="Kuaidi100 customer id")
    kuaidi100_key: str = Field(default="", description="Kuaidi100 API key (signs queries)")
    kuaidi100_salt: str = Field(default="", description="Salt Kuaidi100 signs pushes with")

    # --- fulfilment webhook --------------------------------------------------------------
    fulfilment_secrets: dict[str, str] = Field(
        default={},
        description="Per-source HMAC-SHA256 secret for POST /v1/fulfilment/{source} with a "
                    "JSON body (JSON object, e.g. {\"wms\": \"...\"}); unknown sources get 404")
    webhook_max_bytes: int = Field(default=256 * 1024, ge=1024, description="Largest body")

    @field_validator("stale_after", mode="before")
    @classmethod
    def _merged(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        merged: dict[Any, Any] = {**{k.value: v for k, v in DEFAULT_STALE_AFTER.items()},
                                  **value}
        return {k: v for k, v in merged.items() if v is not None}

    @model_validator(mode="after")
    def _poll_floor(self) -> StatusSettings:
        if self.poll_interval < MIN_POLL_INTERVAL and not self.allow_short_poll:
            raise ValueError(
                f"poll_interval {self.poll_interval} is below the minimum of "
                f"{MIN_POLL_INTERVAL}; set allow_short_poll for tests")
        if self.poll_interval <= timedelta(0):
            raise ValueError("poll_interval must be positive")
        return self

    def carrier_rate(self, carrier: str) -> float:
        return self.carrier_rate_per_second.get(carrier, self.default_carrier_rate)
