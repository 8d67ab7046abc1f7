"""Inventory settings (env prefix ORDERSTREAM_INVENTORY_)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class InventorySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERSTREAM_INVENTORY_", extra="ignore")

    http_port: int = 6067
    hold_minutes: float = Field(default=30, gt=0, description="Unpaid hold before it expires")
    default_safety_stock: int = Field(default=0, ge=0, description="Threshold for new SKUs")
    expiry_scan_seconds: float = Field(
        default=30, gt=0, description="How often due unpaid holds are looked for")

    @property
    def hold(self) -> timedelta:
        return timedelta(minutes=self.hold_minutes)
