"""Notifier's Faust app and topics: wiring only."""

from __future__ import annotations

from pathlib import Path

from services.notifier.settings import NotifierSettings
from shared.runtime import Runtime
from shared.topics import ORDERS_STATUS

settings = NotifierSettings()
runtime = Runtime("notifier", settings, Path(__file__).parent / "migrations")
app = runtime.app

status_changes = runtime.topic(ORDERS_STATUS)
