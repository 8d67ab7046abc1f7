"""Inventory settings (env prefix ORDERSTREAM_INVENTORY_)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

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

    reconcile_at: str = Field(
        default="02:30", pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description="Nightly reconciliation time (HH:MM, in reconcile_zone)")
    reconcile_zone: str = Field(default="Asia/Shanghai",
                                description="Time zone of reconcile_at")
    reconcile_dir: Path = Field(default=Path(".state/reconcile"),
                                description="Where the nightly reports are written")
    reconcile_wms: Path | None = Field(
        default=None, description="WMS snapshot CSV compared every night, if any")

    @property
    def hold(self) -> timedelta:
        return timedelta(minutes=self.hold_minutes)
