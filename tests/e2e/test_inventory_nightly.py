"""The inventory service runs the reconciliation itself at the configured time of day."""

from __future__ import annotations

import asyncio
import csv
import time
from datetime import UTC, datetime, timedelta

import pytest
from support import given_stock, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]


def test_the_nightly_reconciliation_runs_at_its_time_and_writes_its_report(
        stack_info, broker, tmp_path_factory):
    work = tmp_path_factory.mktemp("nightly")
    # The next whole minute that is at least 40 s away (start-up must be done before it).
    at = (datetime.now(UTC) + timedelta(seconds=100)).replace(second=0, microsecond=0)
    env = {"ORDERSTREAM_INVENTORY_RECONCILE_AT": at.strftime("%H:%M"),
           "ORDERSTREAM_INVENTORY_RECONCILE_ZONE": "UTC",
           "ORDERSTREAM_INVENTORY_RECONCILE_DIR": str(work / "reports")}
    with running_system(stack_info, broker, work, env, services=("inventory",)) as system:
        asyncio.run(given_stock(system.conn, "SKU-NIGHT-1", 7))
        deadline = time.monotonic() + max(0.0, (at - datetime.now(UTC)).total_seconds()) + 60
        reports: list = []
        while time.monotonic() < deadline and not reports:
            reports = sorted((work / "reports").glob("reconcile-*.csv"))
            time.sleep(1)
        assert reports, f"no report by {at:%H:%M} UTC + 60 s"
        log = (system.supervisor.log_dir / "inventory.log").read_text()
        assert "event=nightly_reconciliation" in log
        with reports[0].open(newline="") as f:
            rows = list(csv.DictReader(f))
        # Table and ledger agree on the stocked SKU: nothing to report for it.
        assert not [r for r in rows if r.get("sku") == "SKU-NIGHT-1"], rows
