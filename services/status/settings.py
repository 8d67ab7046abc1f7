"""Status-tracking settings (env prefix ORDERSTREAM_STATUS_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class StatusSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERSTREAM_STATUS_", extra="ignore")

    http_port: int = 6068
