"""Ingestion settings (env prefix ORDERSTREAM_INGESTION_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IngestionSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERSTREAM_INGESTION_", extra="ignore")

    http_port: int = 6066
    channel_zones: dict[str, str] = Field(
        default={
            "tmall": "Asia/Shanghai", "jd": "Asia/Shanghai", "pinduoduo": "Asia/Shanghai",
            "douyin": "Asia/Shanghai", "shopify": "UTC", "web": "Asia/Shanghai",
            "pos": "Asia/Shanghai",
        },
        description="IANA zone in which each channel's naive timestamps are read (JSON object)",
    )
    webhook_secrets: dict[str, str] = Field(
        default={},
        description="Per-channel HMAC-SHA256 secret for POST /v1/channels/{channel}/orders "
                    "(JSON object); a channel without a secret is refused (401)",
    )
    webhook_max_bytes: int = Field(default=256 * 1024, ge=1024, description="Largest body")
