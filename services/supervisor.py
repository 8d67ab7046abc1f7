"""Runs the four services as child processes, waits until they answer, and stops them cleanly."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from services.ingestion.settings import IngestionSettings
from services.inventory.settings import InventorySettings
from services.notifier.settings import NotifierSettings
from services.status.settings import StatusSettings

log = logging.getLogger(__name__)

SERVICES = ("ingestion", "inventory", "status", "notifier")
_SETTINGS = {
    "ingestion": IngestionSettings,
    "inventory": InventorySettings,
    "status": StatusSettings,
    "notifier": NotifierSettings,
}


class SupervisorError(RuntimeError):
    pass


def configured_port(service: str) -> int:
    """The HTTP port a service will use, from its own settings (environment or default)."""
    return _SETTINGS[service]().http_port


@dataclass
class Child:
    name: str  # the service, or service-N for its N-th extra worker
    service: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)
    #: a helper process (a simulator): its command line, and the path that answers 200 once
    #: it is up (None: running is enough)
    argv: list[str] | None = None
    ready_path: str | None = "/health"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Supervisor:
    """Starts ``python -m services.<name>`` per service with ``env`` added to ours.

    Children run in their own sessions, so a Ctrl-C reaches only us and we stop them in
    order (SIGTERM, then SIGKILL after a grace period): no orphan is left behind.
    """

    def __init__(self, env: dict[str, str], log_dir: Path,
                 services: tuple[str, ...] = SERVICES,
                 ports: dict[str, int] | None = None,
                 workers: dict[str, list[int]] | None = None,
                 helpers: list[Child] | None = None) -> None:
        """``ports`` gives a service's HTTP port; ``workers`` adds more workers of a
        service (same consumer group: they share its partitions), one port each;
        ``helpers`` are started first and stopped last (simulators the services call)."""
        self.env = {**os.environ, **env}
        self.log_dir = log_dir
        ports = ports or {}
        self.children = [*(helpers or ()), *(
            Child(name, name, ports.get(name) or configured_port(name), log_dir / f"{name}.log")
            for name in services
        )]
        for service, extra_ports in (workers or {}).items():
            for n, port in enumerate(extra_ports, start=2):
                name = f"{service}-{n}"
                self.children.append(Child(name, service, port, log_dir / f"{name}.log"))

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for child in self.children:
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        if child.log_file is None:
            child.log_file = child.log_path.open("wb")
        env = {**self.env, f"ORDERSTREAM_{child.service.upper()}_HTTP_PORT": str(child.port)}
        child.proc = subprocess.Popen(
            child.argv or [sys.executable, "-m", f"services.{child.service}"],
            env=env, stdin=subprocess.DEVNULL, stdout=child.log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.info("event=service_started service=%s pid=%s port=%s log=%s",
                 child.name, child.proc.pid, child.port, child.log_path)

    def kill(self, name: str) -> None:
        """SIGKILL one worker and its process group, as a crash would (fault tests)."""
        child = self._child(name)
        if child.proc is not None and child.proc.poll() is None:
            os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait()

    def restart(self, name: str) -> None:
        """Start a worker that was killed again, on the same port, appending to its log."""
        self._spawn(self._child(name))

    def _child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def dead(self) -> list[Child]:
        return [c for c in self.children if c.proc is None or c.proc.poll() is not None]

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Block until every service answers /health; returns seconds waited."""
        started = time.monotonic()
        pending = list(self.children)
        while pending:
            if dead := self.dead():
                raise SupervisorError(self.died_message(dead))
            pending = [c for c in pending
                       if c.ready_path is not None and not _healthy(c.url + c.ready_path)]
            if not pending:
                break
            if time.monotonic() - started > timeout:
                names = ", ".join(c.name for c in pending)
                raise SupervisorError(f"not ready after {timeout:.0f}s: {names}")
            time.sleep(0.2)
        return time.monotonic() - started

    def stop(self, grace: float = 20.0) -> None:
        # Services first (they may still call a helper while shutting down), then helpers.
        self._stop([c for c in self.children if c.argv is None], grace)
        self._stop([c for c in self.children if c.argv is not None], grace)
        for child in self.children:
            if child.log_file is not None:
                child.log_file.close()
                child.log_file = None

    def _stop(self, children: list[Child], grace: float) -> None:
        running = [c for c in children if c.proc is not None and c.proc.poll() is None]
        for child in running:
            child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in running:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("event=service_killed service=%s reason=no exit after SIGTERM",
                            child.name)
                os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait()

    def died_message(self, dead: list[Child]) -> str:
        parts = []
        for child in dead:
            tail = child.log_path.read_text(errors="replace").splitlines()[-30:]
            code = child.proc.returncode if child.proc else None
            parts.append(f"{child.name} exited with {code}; last log lines:\n" + "\n".join(tail))
        return "\n\n".join(parts)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
