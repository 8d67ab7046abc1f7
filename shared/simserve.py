"""Running a simulator as a process: start it, print its URL, stop it on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from typing import Any


async def serve(sim: Any, host: str, port: int) -> None:
    """Start ``sim`` (``start(host, port) -> url`` and ``stop()``), print its URL for
    whoever launched it, and run until SIGINT or SIGTERM; then stop it cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(await sim.start(host, port), flush=True)
    try:
        await stop.wait()
    finally:
        await sim.stop()
