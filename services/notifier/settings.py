"""Notifier settings (env prefix ORDERSTREAM_NOTIFIER_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERSTREAM_NOTIFIER_", extra="ignore")

    http_port: int = 6069
