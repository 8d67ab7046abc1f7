"""Running a simulator as a process: start it, print its URL, stop it on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
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


def main(name: str, start: Callable[[], Awaitable[None]]) -> int:
    """A simulator process's entry point: log to stdout, run ``start()`` until stopped; a
    bad setting (a ValueError from the simulator) exits 2 with its message."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        asyncio.run(start())
    except ValueError as exc:
        print(f"{name}: {exc}")
        return 2
    return 0
