"""Channel adapters, one module per channel; adding a channel = one module + its samples."""

from __future__ import annotations

from types import ModuleType

from services.ingestion.channels import douyin, jd, pinduoduo, pos, shopify, tmall, web

#: channel name -> adapter module (``channel``, ``normalise(payload, zone=)``, ``order_id_of``)
ADAPTERS: dict[str, ModuleType] = {module.channel: module for module in (
    web, tmall, jd, pinduoduo, douyin, shopify, pos,
)}
