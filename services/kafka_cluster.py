"""Real Apache Kafka on loopback for integration and fault tests: one node, or three with
replication 3 and min ISR 2, as detached JVMs in KRaft combined mode (every node is broker and
controller). The jars come from Maven Central through ``deploy/kafka/pom.xml`` (which also
names the version) into ``.cache/kafka/<version>/libs``; each cluster lives in a state dir
(``.state/kafka`` by default) holding a JSON state file and one ``node-<id>`` dir per node.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from services.stack import (
    _CHILDREN,
    HOST,
    StackError,
    _gone,
    _locked,
    _port_open,
    _process,
    _read_state,
    _run_async,
    _tail,
    _terminate,
    _write_state,
    free_port,
)
from services.stack import _resolve as _resolve_path

logger = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parent.parent
POM = _REPO / "deploy" / "kafka" / "pom.xml"
LOG4J2_CONFIG = _REPO / "deploy" / "kafka" / "log4j2.yaml"
CACHE_DIR = _REPO / ".cache" / "kafka"
STATE_FILE = "cluster.json"  # not stack.json: the two managers may share a state dir
NODE_COUNTS = (1, 3)
_COMPLETE = ".complete"  # written into the libs dir once every jar is there
_PROBE_TOPIC = "orderstream-cluster-probe"
_KAFKA_MAIN = "kafka.Kafka"
# Bounded heap. C1 only (-XX:TieredStopAtLevel=1) and the class-data-sharing archive that
# fetch() records cut start-up on a 2-core machine: 3 nodes ready in ~11 s with neither,
# ~7.5 s with C1, ~5 s with both (1 node: ~3.7 / ~3.2 / ~1.8 s). C1 code is slower at peak,
# which a test cluster does not reach.
_JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-UsePerfData",  # no hsperfdata file in the system temp dir (left behind on SIGKILL)
    "-Djava.awt.headless=true",
)
_TOOL_JVM_OPTIONS = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-XX:-UsePerfData")
_MIB = 1024 * 1024
_DOWN_GRACE = 2.0  # seconds down() gives nodes to exit on SIGTERM before SIGKILL


class KafkaClusterError(RuntimeError):
    """The Apache Kafka cluster could not be fetched, started or stopped."""


def _pom_version(pom: Path) -> str:
    """``<properties><kafka.version>`` of the fetch pom: the one place the version is named."""
    try:
        root = ET.parse(pom).getroot()
    except (OSError, ET.ParseError) as exc:
        raise KafkaClusterError(f"cannot read the Kafka version from {pom}: {exc}") from exc
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = (root.findtext("m:properties/m:kafka.version", namespaces=namespace) or "").strip()
    if not version:
        raise KafkaClusterError(f"{pom} has no <properties><kafka.version>")
    return version


KAFKA_VERSION: str = _pom_version(POM)


@dataclass(frozen=True)
class ClusterInfo:
    bootstrap_servers: str
    nodes: dict[int, int]  # node id -> broker (PLAINTEXT) port
    state_dir: Path
    version: str


def default_state_dir() -> Path:
    """``<repo root>/.state/kafka``."""
    return _REPO / ".state" / "kafka"


# --- fetch ----------------------------------------------------------------------------------


def fetch(*, quiet: bool = True) -> tuple[Path, float, int]:
    """The libs dir of Kafka ``KAFKA_VERSION``, fetching it with Maven on first use.

    Returns ``(libs dir, seconds the work took (0.0 when all was cached), total bytes of the
    jars)``. The jars are copied into a scratch dir that becomes the libs dir, marked complete,
    only once Maven succeeded, so an interrupted fetch is simply redone. Then, once per JDK, a
    training broker records a class-data-sharing archive that makes every later broker JVM
    start about a second sooner (best effort: without it brokers just start slower).
    ``quiet=False`` lets Maven print its progress.
    """
    base = CACHE_DIR / KAFKA_VERSION
    libs = base / "libs"
    with _locked(base):  # one fetch at a time (parallel test workers)
        started = time.monotonic()
        worked = not (libs / _COMPLETE).exists()
        if worked:
            _download(base, libs, quiet)
        worked = _train_cds(libs) or worked
        seconds = time.monotonic() - started if worked else 0.0
    total = _jar_bytes(libs)
    if worked:
        logger.info("Kafka %s: %d bytes of jars ready in %.1fs", KAFKA_VERSION, total, seconds)
    return libs, seconds, total


def _download(base: Path, libs: Path, quiet: bool) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaClusterError(
            f"Maven (mvn) is needed once to fetch the Apache Kafka {KAFKA_VERSION} jars "
            f"from Maven Central ({POM.relative_to(_REPO)}); install Maven and Java 17+."
        )
    scratch = Path(tempfile.mkdtemp(prefix="libs-", dir=base))
    cmd = [mvn, "-B", *(["-q"] if quiet else []), "-f", str(POM)]
    cmd += ["dependency:copy-dependencies", f"-DoutputDirectory={scratch}"]
    cmd += ["-DincludeScope=runtime"]
    logger.info("fetching Apache Kafka %s jars into %s", KAFKA_VERSION, libs)
    try:
        try:
            done = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, capture_output=quiet, timeout=1800, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise KafkaClusterError("Maven did not finish fetching Kafka in 30 min") from exc
        if done.returncode != 0 or not any(scratch.glob("kafka_2.13-*.jar")):
            output = (done.stdout or b"") + (done.stderr or b"")
            last = "\n".join(output.decode(errors="replace").splitlines()[-40:])
            raise KafkaClusterError(
                f"fetching Apache Kafka {KAFKA_VERSION} with Maven failed (exit "
                f"{done.returncode}): {' '.join(cmd)}\n{last}"
            )
        (scratch / _COMPLETE).write_text(f"{KAFKA_VERSION}\n")
        shutil.rmtree(libs, ignore_errors=True)
        scratch.chmod(0o755)  # mkdtemp made it private
        scratch.rename(libs)
        for stale in base.glob("cds-*"):  # archives name the old jars: they would not load
            stale.unlink()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _cds_archive(libs: Path) -> Path | None:
    """The class-data-sharing archive for these jars on the ``java`` on PATH, named after the
    JVM build (an archive only loads into the JVM build that wrote it); None if unknown."""
    java = shutil.which("java")
    if java is None:
        return None
    libjvm = Path(java).resolve().parent.parent / "lib" / "server" / "libjvm.so"
    try:
        build = libjvm.stat()
    except OSError:
        return None
    key = f"{libjvm}:{build.st_size}:{build.st_mtime_ns}"
    return libs.parent / f"cds-{hashlib.sha256(key.encode()).hexdigest()[:12]}.jsa"


def _train_cds(libs: Path) -> bool:
    """Record the archive with one training broker (start, probe topic, SIGTERM: the JVM
    writes the classes it loaded at exit). A truncated archive crashes every JVM that maps it
    (SIGBUS), so it is installed only after a JVM loaded it with -Xshare:on and said nothing.
    Returns whether it tried (a failure is noted next to the archive and not retried)."""
    archive = _cds_archive(libs)
    if archive is None or archive.exists() or archive.with_suffix(".failed").exists():
        return False
    logger.info("recording a class-data-sharing archive for Kafka %s", KAFKA_VERSION)
    scratch = Path(tempfile.mkdtemp(prefix="cds-training-", dir=libs.parent))
    dump = scratch / "classes.jsa"
    try:
        state = _create(scratch, 1, libs, 60.0)
        _launch(scratch, state, 1, libs, extra=(f"-XX:ArchiveClassesAtExit={dump}",))
        _await(scratch, state, 60.0, probe=True, kill_on_failure={1})
        entry = _nodes(state)[1]
        proc = _process(entry["pid"], entry["started"])
        if proc is not None:
            _stop(proc, 60.0, kill=False)  # writing the archive takes a few seconds
        check = [_java(), "-Xshare:on", f"-XX:SharedArchiveFile={dump}", "-cp", str(libs / "*")]
        done = subprocess.run(
            [*check, "kafka.tools.StorageTool", "random-uuid"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False,
        )
        output = (done.stdout + done.stderr).decode(errors="replace").strip()
        if done.returncode != 0 or len(output.splitlines()) != 1:  # just the uuid: no warning
            raise KafkaClusterError(f"the recorded archive does not load: {output[-2000:]}")
        dump.replace(archive)
    except (KafkaClusterError, OSError, subprocess.SubprocessError) as exc:
        failed = archive.with_suffix(".failed")
        logger.warning("no class-data-sharing archive, brokers start slower (delete %s to try "
                       "again): %s", failed, exc)
        failed.write_text(f"{exc}\n")
    finally:
        with contextlib.suppress(KafkaClusterError):
            _stop_all(scratch, _read(scratch), 10.0, grace=0.0)
        shutil.rmtree(scratch, ignore_errors=True)
    return True


def _libs(state: dict[str, Any]) -> Path:
    """The libs dir of the Kafka version a recorded cluster runs (the pom may have moved on)."""
    version = state.get("version", KAFKA_VERSION)
    if version == KAFKA_VERSION:
        return fetch()[0]
    libs = CACHE_DIR / version / "libs"
    if not (libs / _COMPLETE).exists():
        raise KafkaClusterError(f"the cluster runs Kafka {version}, whose jars are gone: down()")
    return libs


def _jar_bytes(libs: Path) -> int:
    return sum(jar.stat().st_size for jar in libs.glob("*.jar"))


# --- public lifecycle -----------------------------------------------------------------------


def up(nodes: int = 1, state_dir: Path | None = None, *, timeout: float = 120.0) -> ClusterInfo:
    """Start a ``nodes``-node cluster (1 or 3) and wait until it is ready, or reuse it.

    Ready means: every broker is in the cluster metadata and a probe topic with one replica
    per node was created with all replicas in sync (then deleted). A running cluster of the
    same size is reused (stopped nodes are started again); one of another size raises
    :class:`KafkaClusterError`. A recorded cluster with no node alive is discarded and a new,
    empty one started on new ports.
    """
    if nodes not in NODE_COUNTS:
        raise ValueError(f"nodes must be one of {NODE_COUNTS}, not {nodes}")
    libs = fetch()[0]
    sd = _resolve(state_dir)
    with _locked(sd):
        state = _read(sd)
        recorded = _nodes(state)
        alive = [node for node, entry in recorded.items() if _alive(entry)]
        if alive and len(recorded) != nodes:
            raise KafkaClusterError(
                f"a {len(recorded)}-node Kafka cluster is running from {sd} (nodes "
                f"{sorted(alive)} alive); call down() before asking for {nodes} node(s)"
            )
        if alive:
            stopped = set(recorded) - set(alive)
            libs = _libs(state)
            for node in sorted(stopped):
                _launch(sd, state, node, libs)
            _write(sd, state)
            _await(sd, state, timeout, probe=bool(stopped), kill_on_failure=stopped)
            return _info(sd, state)
        _wipe(sd, recorded)
        started = time.monotonic()
        state = _create(sd, nodes, libs, timeout)
        every = set(_nodes(state))
        try:
            for node in sorted(every):
                _launch(sd, state, node, libs)
            _write(sd, state)
            _await(sd, state, timeout, since=started, probe=True, kill_on_failure=every)
        except BaseException:
            _stop_all(sd, state, 10.0, grace=0.0)
            (sd / STATE_FILE).unlink(missing_ok=True)  # node dirs stay for a post-mortem
            raise
        logger.info(
            "Apache Kafka %s: %d node(s) ready in %.1fs on %s",
            KAFKA_VERSION, nodes, time.monotonic() - started, _bootstrap(state),
        )
        return _info(sd, state)


def down(state_dir: Path | None = None, *, timeout: float = 30.0) -> None:
    """Stop every node (also ones the state file lost track of) and remove their dirs.

    Nodes get SIGTERM together and SIGKILL if they linger 2 s; the data goes anyway. A no-op
    when nothing was started from the state dir.
    """
    sd = _resolve(state_dir)
    if not sd.exists():
        return
    with _locked(sd):
        state = _read(sd)
        _stop_all(sd, state, timeout, grace=_DOWN_GRACE)
        _wipe(sd, _nodes(state))


def status(state_dir: Path | None = None) -> dict[str, Any]:
    """What the state dir records and which nodes run right now (process alive, port open)."""
    sd = _resolve(state_dir)
    state = _read(sd)
    recorded = _nodes(state)
    nodes = {
        node: {
            "running": _alive(entry) and _port_open(HOST, entry["port"]),
            "pid": entry.get("pid"),
            "port": entry["port"],
            "controller_port": entry["controller_port"],
            "log": str(_node_dir(sd, node) / "logs" / "server.log"),
        }
        for node, entry in recorded.items()
    }
    return {
        "state_dir": str(sd),
        "version": state.get("version", KAFKA_VERSION),
        "cluster_id": state.get("cluster_id"),
        "bootstrap": _bootstrap(state) if recorded else None,
        "running": bool(nodes) and all(node["running"] for node in nodes.values()),
        "nodes": nodes,
    }


def stop_node(
    node_id: int, state_dir: Path | None = None, *, kill: bool = False, timeout: float = 30.0
) -> None:
    """Stop one node: SIGTERM (a controlled shutdown that hands its leaderships over) or,
    with ``kill``, SIGKILL (a crash: the controller fences it after the broker session
    timeout). Returns once the process is gone; a no-op if it is not running."""
    sd = _resolve(state_dir)
    with _locked(sd):
        state = _read(sd)
        entry = _node(sd, state, node_id)
        proc = _process(entry.get("pid"), entry.get("started"))
        if proc is not None:
            logger.info("stopping Kafka node %s (pid %s, %s)", node_id, proc.pid,
                        "SIGKILL" if kill else "SIGTERM")
            _stop(proc, timeout, kill=kill)
        entry["pid"] = entry["started"] = None
        _write(sd, state)


def start_node(node_id: int, state_dir: Path | None = None, *, timeout: float = 120.0) -> None:
    """Start a stopped node again on its ports and data, and wait until it has rejoined.

    Rejoined means: the node itself answers metadata listing itself as a broker (so the
    controller unfenced it), and every partition that has a replica on it lists it in the ISR
    again (it caught up, so the cluster tolerates losing another node). Waiting for the ISR
    matters after a SIGKILL: the controller only accepts the new registration once it has
    fenced the old one (broker session timeout).
    """
    sd = _resolve(state_dir)
    with _locked(sd):
        state = _read(sd)
        entry = _node(sd, state, node_id)
        if not _alive(entry):
            libs = _libs(state)
            for port in (entry["port"], entry["controller_port"]):
                if _port_open(HOST, port):
                    raise KafkaClusterError(
                        f"cannot restart Kafka node {node_id}: its port {port} on {HOST} is now "
                        "taken by another process"
                    )
            _launch(sd, state, node_id, libs)
            _write(sd, state)
        _await(sd, state, timeout, rejoined=node_id, kill_on_failure={node_id})


# --- state ----------------------------------------------------------------------------------


def _resolve(state_dir: Path | None) -> Path:
    return _resolve_path(state_dir or default_state_dir())


def _read(sd: Path) -> dict[str, Any]:
    return _read_state(sd, STATE_FILE)


def _write(sd: Path, state: dict[str, Any]) -> None:
    _write_state(sd, state, STATE_FILE)


def _nodes(state: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The recorded nodes by id (JSON keys are strings); entries are the state's own dicts."""
    return {int(node): entry for node, entry in state.get("nodes", {}).items()}


def _node(sd: Path, state: dict[str, Any], node_id: int) -> dict[str, Any]:
    entry = _nodes(state).get(node_id)
    if entry is None:
        known = sorted(_nodes(state)) or "none: call up() first"
        raise KafkaClusterError(f"no Kafka node {node_id} recorded in {sd} (nodes: {known})")
    return entry


def _node_dir(sd: Path, node_id: int) -> Path:
    return sd / f"node-{node_id}"


def _bootstrap(state: dict[str, Any]) -> str:
    return ",".join(f"{HOST}:{entry['port']}" for _, entry in sorted(_nodes(state).items()))


def _info(sd: Path, state: dict[str, Any]) -> ClusterInfo:
    return ClusterInfo(
        bootstrap_servers=_bootstrap(state),
        nodes={node: entry["port"] for node, entry in sorted(_nodes(state).items())},
        state_dir=sd,
        version=state["version"],
    )


def _alive(entry: dict[str, Any]) -> bool:
    return _process(entry.get("pid"), entry.get("started")) is not None


def _wipe(sd: Path, recorded: dict[int, dict[str, Any]]) -> None:
    """Remove the state file and the node dirs (config, data, logs)."""
    (sd / STATE_FILE).unlink(missing_ok=True)
    for node_dir in {*sd.glob("node-*"), *(_node_dir(sd, node) for node in recorded)}:
        shutil.rmtree(node_dir, ignore_errors=True)


# --- creating and starting nodes ------------------------------------------------------------


def _kafka_uuid() -> str:
    """A random Kafka Uuid as its tools print it: 16 bytes, URL-safe base64, no padding.
    Like Kafka's Uuid.randomUuid, never one starting with "-" (it would read as an option)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise KafkaClusterError(f"Apache Kafka {KAFKA_VERSION} needs Java 17+: no java on PATH")
    return java


def _java_cmd(sd: Path, node_id: int, libs: Path, options: tuple[str, ...]) -> list[str]:
    logs = _node_dir(sd, node_id) / "logs"
    archive = _cds_archive(libs)
    if archive is not None and archive.exists():
        options = (*options, f"-XX:SharedArchiveFile={archive}")
    return [
        _java(),
        *options,
        f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
        f"-Dkafka.logs.dir={logs}",
        "-cp",
        str(libs / "*"),
    ]


def _create(sd: Path, count: int, libs: Path, timeout: float) -> dict[str, Any]:
    """Pick ports, write each node's config and format its storage (one cluster id)."""
    ports = _free_ports(2 * count)
    state: dict[str, Any] = {
        "version": KAFKA_VERSION,
        "cluster_id": _kafka_uuid(),
        "nodes": {
            str(node): {
                "port": ports[2 * i],
                "controller_port": ports[2 * i + 1],
                # the metadata log dir's id, for --initial-controllers (--standalone picks one)
                "directory_id": _kafka_uuid() if count > 1 else None,
                "pid": None,
                "started": None,
            }
            for i, node in enumerate(range(1, count + 1))
        },
    }
    recorded = _nodes(state)
    for node in recorded:
        node_dir = _node_dir(sd, node)
        (node_dir / "logs").mkdir(parents=True)
        (node_dir / "data").mkdir()
        (node_dir / "server.properties").write_text(_server_properties(sd, node, recorded))
    _write(sd, state)
    # Kafka 4 uses a dynamic KRaft quorum (controller.quorum.bootstrap.servers): one node is
    # formatted --standalone, several with the same --initial-controllers id@host:port:dir-id.
    if count == 1:
        quorum = ["--standalone"]
    else:
        voters = ",".join(
            f"{node}@{HOST}:{entry['controller_port']}:{entry['directory_id']}"
            for node, entry in sorted(recorded.items())
        )
        quorum = ["--initial-controllers", voters]
    formats = {}
    for node in recorded:
        node_dir = _node_dir(sd, node)
        cmd = _java_cmd(sd, node, libs, _TOOL_JVM_OPTIONS)
        cmd += ["kafka.tools.StorageTool", "format", "-t", state["cluster_id"]]
        cmd += ["-c", str(node_dir / "server.properties"), *quorum]
        with (node_dir / "format.log").open("wb") as out:
            formats[node] = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=node_dir,
                start_new_session=True,
            )
    deadline = time.monotonic() + timeout
    failed = []
    for node, proc in formats.items():
        try:
            code = proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if code != 0:
            failed.append(node)
    if failed:
        for proc in formats.values():
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
        details = "\n".join(
            f"{_node_dir(sd, node) / 'format.log'}:\n{_tail(_node_dir(sd, node) / 'format.log')}"
            for node in failed
        )
        _wipe(sd, recorded)
        raise KafkaClusterError(f"formatting Kafka storage failed for nodes {failed}:\n{details}")
    return state


def _server_properties(sd: Path, node_id: int, nodes: dict[int, dict[str, Any]]) -> str:
    entry, node_dir = nodes[node_id], _node_dir(sd, node_id)
    replicas, min_isr = (3, 2) if len(nodes) == 3 else (1, 1)
    listeners = f"PLAINTEXT://{HOST}:{entry['port']},CONTROLLER://{HOST}:{entry['controller_port']}"
    quorum = ",".join(f"{HOST}:{e['controller_port']}" for _, e in sorted(nodes.items()))
    settings: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": node_id,
        "listeners": listeners,
        "advertised.listeners": listeners,
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "controller.quorum.bootstrap.servers": quorum,
        "log.dirs": node_dir / "data",
        # our services create their topics from the catalogue: a missing one must show
        "auto.create.topics.enable": "false",
        "num.partitions": 1,
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": 10,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": 10,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": 0,
        # Notice a crashed node within seconds, not the production 9 s / 30 s. The session
        # timeout also bounds a restart: the controller refuses the new registration
        # (DUPLICATE_BROKER_REGISTRATION) until the old session expired, even after a clean stop.
        "broker.heartbeat.interval.ms": 500,
        "broker.session.timeout.ms": 4000,
        "replica.lag.time.max.ms": 10000,
        # small disk footprint: segments of 16 MiB, at most 256 MiB or a day per partition
        "log.segment.bytes": 16 * _MIB,
        "log.index.size.max.bytes": _MIB,
        "log.retention.bytes": 256 * _MIB,
        "log.retention.hours": 24,
        "num.network.threads": 2,
        "num.io.threads": 4,
    }
    lines = [f"# Kafka node {node_id}, written by services/kafka_cluster.py"]
    for key, value in settings.items():
        # a properties file reads a backslash as an escape: double them (in paths)
        lines.append(f"{key}=" + str(value).replace("\\", "\\\\"))
    return "\n".join(lines) + "\n"


def _launch(
    sd: Path, state: dict[str, Any], node_id: int, libs: Path, extra: tuple[str, ...] = ()
) -> None:
    """Start node ``node_id`` as a detached JVM and record its pid in ``state``."""
    node_dir = _node_dir(sd, node_id)
    cmd = _java_cmd(sd, node_id, libs, (*_JVM_OPTIONS, *extra))
    cmd += [_KAFKA_MAIN, str(node_dir / "server.properties")]
    # log4j2 writes logs/server.log (size-capped); the console file only gets what the JVM
    # itself prints (crashes, log4j2's own status lines).
    with (node_dir / "console.log").open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=node_dir,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc  # services.stack reaps it when it is stopped
    try:
        started = psutil.Process(proc.pid).create_time()
    except psutil.Error:
        started = time.time()
    entry = _nodes(state)[node_id]
    entry["pid"], entry["started"] = proc.pid, started
    logger.info("started Kafka node %s (pid %s) on %s:%s", node_id, proc.pid, HOST, entry["port"])


# --- readiness ------------------------------------------------------------------------------


def _await(
    sd: Path,
    state: dict[str, Any],
    timeout: float,
    *,
    since: float | None = None,
    probe: bool = False,
    rejoined: int | None = None,
    kill_on_failure: set[int],
) -> None:
    """Poll until the cluster is ready (``probe``) or node ``rejoined`` is back, at most
    ``timeout`` seconds after ``since`` (a time.monotonic(); default now).

    On a timeout or a node exiting, the nodes in ``kill_on_failure`` are killed and
    :class:`KafkaClusterError` names what was missing, with the last lines of every log.
    """
    recorded = _nodes(state)
    needed = set(recorded) if rejoined is None else {rejoined}  # others may be stopped on purpose
    deadline = (time.monotonic() if since is None else since) + timeout
    missing = "no answer yet"
    while True:
        dead = sorted(node for node in needed if not _alive(recorded[node]))
        if dead:
            why = f"node(s) {dead} exited"
            break
        if rejoined is None:
            check = _cluster_ready(_bootstrap(state), set(recorded), probe)
        else:
            check = _node_rejoined(state, rejoined)
        result = _run_async(check)
        if result is None:
            return
        missing = result
        logger.debug("not ready yet: %s", missing)
        if time.monotonic() >= deadline:
            why = f"not ready within {timeout:.0f}s (last check: {missing})"
            break
        time.sleep(0.25)
    for node in kill_on_failure:
        proc = _process(recorded[node].get("pid"), recorded[node].get("started"))
        if proc is not None:
            _stop(proc, 10.0, kill=True)
        recorded[node]["pid"] = recorded[node]["started"] = None
    _write(sd, state)
    what = f"node {rejoined}" if rejoined is not None else f"{len(recorded)}-node cluster"
    raise KafkaClusterError(f"Apache Kafka {what} from {sd}: {why}\n{_logs(sd, recorded)}")


def _logs(sd: Path, recorded: dict[int, dict[str, Any]]) -> str:
    parts = []
    for node in sorted(recorded):
        node_dir = _node_dir(sd, node)
        server_log = node_dir / "logs" / "server.log"
        parts.append(f"--- last lines of {server_log}:\n{_tail(server_log)}")
        console = node_dir / "console.log"
        if console.exists() and console.stat().st_size:
            parts.append(f"--- last lines of {console}:\n{_tail(console)}")
    return "\n".join(parts)


async def _cluster_ready(bootstrap: str, expected: set[int], probe: bool) -> str | None:
    """None once every broker of ``expected`` is in the metadata and (``probe``) a topic with
    one replica per broker could be created with all replicas in sync; else what is missing."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await admin.start()
        brokers = {broker["node_id"] for broker in (await admin.describe_cluster())["brokers"]}
        if brokers != expected:
            return f"brokers {sorted(brokers)} in the metadata, expected {sorted(expected)}"
        if not probe:
            return None
        topic = NewTopic(_PROBE_TOPIC, num_partitions=len(expected),
                         replication_factor=len(expected))
        created = (await admin.create_topics([topic])).to_object()["topic_errors"]
        errors = [e for e in created if e["error_code"] not in (0, 36)]  # 36: already exists
        if errors:
            return f"creating the probe topic: {errors}"
        (described,) = await admin.describe_topics([_PROBE_TOPIC])
        partitions = described["partitions"]
        if described["error_code"] or len(partitions) != len(expected) or any(
            p["leader"] < 0 or set(p["isr"]) != expected for p in partitions
        ):
            return f"probe topic not fully in sync yet: {described}"
        deleted = (await admin.delete_topics([_PROBE_TOPIC])).to_object()
        logger.debug("probe topic deleted: %s", deleted)
        return None
    except (KafkaError, OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await admin.close()


async def _node_rejoined(state: dict[str, Any], node_id: int) -> str | None:
    """None once ``node_id`` answers metadata listing itself as a broker and is in the ISR of
    every partition it has a replica of; else what is missing."""
    own = f"{HOST}:{_nodes(state)[node_id]['port']}"
    admin = AIOKafkaAdminClient(bootstrap_servers=own, request_timeout_ms=5000)
    try:
        await admin.start()
        brokers = {broker["node_id"] for broker in (await admin.describe_cluster())["brokers"]}
        if node_id not in brokers:
            return f"node {node_id} not yet among the brokers {sorted(brokers)}"
        lagging = [
            f"{topic['topic']}-{p['partition']}"
            for topic in await admin.describe_topics()
            for p in topic["partitions"]
            if node_id in p["replicas"] and node_id not in p["isr"]
        ]
        if lagging:
            return f"node {node_id} not yet in the ISR of {len(lagging)} partitions: {lagging[:5]}"
        return None
    except (KafkaError, OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await admin.close()


# --- stopping -------------------------------------------------------------------------------


def _stop(proc: psutil.Process, timeout: float, *, kill: bool) -> None:
    """SIGKILL, or SIGTERM with most of ``timeout`` for Kafka's controlled shutdown (then
    SIGKILL); returns once the process has exited with all its threads."""
    deadline = time.monotonic() + timeout
    try:
        if not kill:
            grace = time.monotonic() + max(timeout - 5.0, timeout / 2)
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGTERM)
            while not _gone(proc) and time.monotonic() < grace:
                time.sleep(0.05)
        if kill or not _gone(proc):
            if not kill:
                logger.warning("Kafka pid %s ignored SIGTERM, killing it", proc.pid)
            _terminate(proc, max(1.0, deadline - time.monotonic()), sig=signal.SIGKILL)
    except StackError as exc:
        raise KafkaClusterError(str(exc)) from exc
    _reap(proc, max(1.0, deadline - time.monotonic()))


def _reap(proc: psutil.Process, timeout: float) -> None:
    """Wait until ``proc`` has exited with all its threads. services.stack counts a zombie as
    gone, but right after SIGKILL a JVM's main thread can be a zombie while its other threads
    still exit and hold the node's ports. waitpid on our own child returns only once all
    threads are gone; for another process's child, watch its thread count."""
    late = f"Kafka pid {proc.pid} still exits after {timeout:.0f}s"
    child = _CHILDREN.pop(proc.pid, None)
    if child is not None:
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            _CHILDREN[proc.pid] = child
            raise KafkaClusterError(late) from exc
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            if not proc.is_running() or (
                proc.status() == psutil.STATUS_ZOMBIE and proc.num_threads() <= 1
            ):
                return
        except psutil.NoSuchProcess:
            return
        if time.monotonic() >= deadline:
            raise KafkaClusterError(late)
        time.sleep(0.05)


def _stop_all(sd: Path, state: dict[str, Any], timeout: float, *, grace: float) -> None:
    """Stop every recorded node and any JVM still running a config from ``sd`` (e.g. after
    the state file was lost): SIGTERM to all at once, SIGKILL to those left after ``grace``
    seconds. A node that lost its quorum (the others stopped first) lingers ~5 s in its Raft
    shutdown, which is not worth waiting for when the data is thrown away anyway."""
    procs = {}
    for entry in _nodes(state).values():
        proc = _process(entry.get("pid"), entry.get("started"))
        if proc is not None:
            procs[proc.pid] = proc
        entry["pid"] = entry["started"] = None
    for proc in _strays(sd):
        procs.setdefault(proc.pid, proc)
    deadline = time.monotonic() + timeout
    for proc in procs.values():
        logger.info("stopping Kafka pid %s", proc.pid)
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
    kill_at = time.monotonic() + min(grace, timeout)
    while time.monotonic() < kill_at and not all(_gone(proc) for proc in procs.values()):
        time.sleep(0.05)
    try:
        for proc in procs.values():
            _terminate(proc, max(1.0, deadline - time.monotonic()), sig=signal.SIGKILL)
    except StackError as exc:
        raise KafkaClusterError(f"stopping Kafka from {sd}: {exc}") from exc
    for proc in procs.values():
        _reap(proc, max(1.0, deadline - time.monotonic()))


def _strays(sd: Path) -> list[psutil.Process]:
    """Live Kafka JVMs (brokers or storage tools) started with a node config under ``sd``."""
    marker = str(sd / "node-")
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(arg.startswith(marker) for arg in cmdline) and any(
            arg in (_KAFKA_MAIN, "kafka.tools.StorageTool") for arg in cmdline
        ):
            live = _process(proc.pid)
            if live is not None:
                found.append(live)
    return found
