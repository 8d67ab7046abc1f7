"""The ``orderstream`` command: run the system, manage the embedded stack, topics and docs."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import time
from datetime import date
from pathlib import Path
from types import FrameType

from services import kafka_cluster, stack
from services.stack import free_port
from services.supervisor import SERVICES, Child, Supervisor, SupervisorError, configured_port
from shared.kafka_admin import ensure_topics
from shared.settings import ConnectionSettings

log = logging.getLogger("orderstream")


def _stack_up(args: argparse.Namespace, conn: ConnectionSettings) -> stack.StackInfo:
    return stack.up(
        kafka_port=args.kafka_port, postgres_port=args.postgres_port,
        external_kafka=conn.external_kafka, external_database_url=conn.external_database_url,
    )


def cmd_stack(args: argparse.Namespace) -> int:
    conn = ConnectionSettings()
    if args.action == "up":
        info = _stack_up(args, conn)
        print(f"KAFKA_BOOTSTRAP_SERVERS={info.kafka_bootstrap_servers}")
        print(f"DATABASE_URL={info.database_url}")
    elif args.action == "down":
        stack.down()
        print("stack stopped")
    else:
        print(json.dumps(stack.status(), indent=2, default=str))
    return 0


def cmd_kafka(args: argparse.Namespace) -> int:
    """Real Apache Kafka in KRaft mode on loopback, for integration and fault tests."""
    if args.action == "up":
        started = time.monotonic()
        info = kafka_cluster.up(args.nodes)
        print(f"Apache Kafka {info.version}, {len(info.nodes)} node(s), ready in "
              f"{time.monotonic() - started:.1f}s")
        print(f"KAFKA_BOOTSTRAP_SERVERS={info.bootstrap_servers}")
    elif args.action == "down":
        kafka_cluster.down()
        print("kafka stopped")
    elif args.action == "status":
        print(json.dumps(kafka_cluster.status(), indent=2, default=str))
    elif args.action == "stop-node":
        kafka_cluster.stop_node(args.node, kill=args.kill)
        print(f"node {args.node} stopped")
    elif args.action == "start-node":
        kafka_cluster.start_node(args.node)
        print(f"node {args.node} running")
    elif args.action == "fetch":
        libs, seconds, size = kafka_cluster.fetch(quiet=False)
        print(f"{libs}: {size / 1e6:.1f} MB, fetched in {seconds:.1f}s")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Compare the stock table, its ledger and a WMS count; alert on every difference."""
    from services.inventory import report

    return report.reconcile_command(args.wms, args.out)


def cmd_health_score(args: argparse.Namespace) -> int:
    """Inventory health score per SKU and overall, from the ledger."""
    from services.inventory import report

    return report.health_command(args.days, args.at)


def cmd_archive(args: argparse.Namespace) -> int:
    """Move ingestion's month partitions older than N months to the archive tables."""
    from services.ingestion import store
    from shared.db import Database
    from shared.timeutil import utc_now

    if args.months < 1:
        print("orderstream: --months must be at least 1", file=sys.stderr)
        return 2
    now = utc_now()
    months = now.year * 12 + now.month - 1 - args.months
    cutoff = date(months // 12, months % 12 + 1, 1)

    async def run() -> list[str]:
        conn = ConnectionSettings()
        db = Database(conn.database_url, conn.schema("ingestion"), max_size=1)
        try:
            return await store.archive_before(await db.pool(), cutoff)
        finally:
            await db.close()

    moved = asyncio.run(run())
    print(f"archived before {cutoff}: " + (", ".join(moved) if moved else "nothing to move"))
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    created = asyncio.run(ensure_topics(ConnectionSettings()))
    print("created: " + (", ".join(created) if created else "nothing (all present)"))
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    from shared import schemadoc

    return schemadoc.main(["--out", args.out])


def cmd_templates(args: argparse.Namespace) -> int:
    """Load and lint the notifier's customer-message templates; one line per problem."""
    from services.notifier import templates

    try:
        catalogue = templates.load_catalogue(args.dir)
    except templates.CatalogueError as exc:
        for problem in exc.problems:
            print(problem)
        return 1
    print(catalogue.summary())
    return 0


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


#: secrets of the demo's simulated outside world (never used anywhere real)
DEMO_WMS_SECRET = "demo-wms-secret"
_DEMO_KUAIDI100 = {"customer": "demo-customer", "key": "demo-key", "salt": "demo-salt"}
_DEMO_SMS = {"key-id": "demo-sms-key", "secret": "demo-sms-secret", "sdk-app-id": "1400000001"}
_DEMO_WECHAT = {"app-id": "wxdemo0000000001", "app-secret": "demo-wechat-secret",
                "token": "demo-wechat-token"}
_HELPER_NOTES = {
    "carriers": "Kuaidi100 simulator (POST /sim/shipments)",
    "robot": "operator robot simulator",
    "mailbox": "(SMTP) alert and customer e-mail is printed to its log",
    "sms-aliyun": "Aliyun SMS simulator (GET /sim/messages)",
    "sms-tencent": "Tencent Cloud SMS simulator (GET /sim/messages)",
    "wechat": "WeChat template message simulator (GET /sim/messages)",
}


def _simulators(log_dir: Path) -> tuple[list[Child], dict[str, str]]:
    """The outside world the services talk to, simulated for the demo: a carrier tracking
    API (Kuaidi100 style), an operator robot, a mailbox, two SMS providers and WeChat (which
    push their receipts back to the notifier). Settings that are already in the environment
    win: point them at real systems to leave these unused."""
    carrier, robot, mailbox = free_port(), free_port(), free_port()
    aliyun, tencent, wechat = free_port(), free_port(), free_port()
    receipts = f"http://127.0.0.1:{configured_port('notifier')}/v1/receipts"
    py = sys.executable
    helpers = [
        Child("carriers", "carriers", carrier, log_dir / "carriers.log", ready_path="/sim/stats",
              argv=[py, "-m", "services.status.carrier_sim", "--port", str(carrier),
                    *(f"--{k}={v}" for k, v in _DEMO_KUAIDI100.items())]),
        Child("robot", "robot", robot, log_dir / "robot.log", ready_path=None,
              argv=[py, "-m", "services.status.robot_sim", "--port", str(robot),
                    "--key", "demo-robot"]),
        Child("mailbox", "mailbox", mailbox, log_dir / "mailbox.log", ready_path=None,
              argv=[py, "-m", "aiosmtpd", "-n", "-u", "-l", f"127.0.0.1:{mailbox}"]),
        *(Child(f"sms-{provider}", f"sms-{provider}", port, log_dir / f"sms-{provider}.log",
                ready_path="/sim/stats",
                argv=[py, "-m", "services.notifier.sms_sim", "--provider", provider,
                      "--port", str(port), "--callback-url", f"{receipts}/{provider}",
                      *(f"--{k}={v}" for k, v in _DEMO_SMS.items())])
          for provider, port in (("aliyun", aliyun), ("tencent", tencent))),
        Child("wechat", "wechat", wechat, log_dir / "wechat.log", ready_path="/sim/stats",
              argv=[py, "-m", "services.notifier.wechat_sim", "--port", str(wechat),
                    "--callback-url", f"{receipts}/wechat",
                    *(f"--{k}={v}" for k, v in _DEMO_WECHAT.items())]),
    ]
    env = {
        "ORDERSTREAM_STATUS_KUAIDI100_URL": f"http://127.0.0.1:{carrier}",
        "ORDERSTREAM_STATUS_KUAIDI100_CUSTOMER": _DEMO_KUAIDI100["customer"],
        "ORDERSTREAM_STATUS_KUAIDI100_KEY": _DEMO_KUAIDI100["key"],
        "ORDERSTREAM_STATUS_KUAIDI100_SALT": _DEMO_KUAIDI100["salt"],
        "ORDERSTREAM_STATUS_FULFILMENT_SECRETS": json.dumps({"wms": DEMO_WMS_SECRET}),
        "ORDERSTREAM_STATUS_NOTICE_WEBHOOK":
            f"http://127.0.0.1:{robot}/cgi-bin/webhook/send?key=demo-robot",
        "ORDERSTREAM_STATUS_NOTICE_EMAIL_TO": json.dumps(["ops@localhost"]),
        "ORDERSTREAM_STATUS_SMTP_HOST": "127.0.0.1",
        "ORDERSTREAM_STATUS_SMTP_PORT": str(mailbox),
        "ORDERSTREAM_NOTIFIER_SMTP_HOST": "127.0.0.1",
        "ORDERSTREAM_NOTIFIER_SMTP_PORT": str(mailbox),
        "ORDERSTREAM_NOTIFIER_ALIYUN_SMS_URL": f"http://127.0.0.1:{aliyun}",
        "ORDERSTREAM_NOTIFIER_ALIYUN_ACCESS_KEY_ID": _DEMO_SMS["key-id"],
        "ORDERSTREAM_NOTIFIER_ALIYUN_ACCESS_KEY_SECRET": _DEMO_SMS["secret"],
        "ORDERSTREAM_NOTIFIER_TENCENT_SMS_URL": f"http://127.0.0.1:{tencent}",
        "ORDERSTREAM_NOTIFIER_TENCENT_SECRET_ID": _DEMO_SMS["key-id"],
        "ORDERSTREAM_NOTIFIER_TENCENT_SECRET_KEY": _DEMO_SMS["secret"],
        "ORDERSTREAM_NOTIFIER_TENCENT_SDK_APP_ID": _DEMO_SMS["sdk-app-id"],
        "ORDERSTREAM_NOTIFIER_WECHAT_URL": f"http://127.0.0.1:{wechat}",
        "ORDERSTREAM_NOTIFIER_WECHAT_APP_ID": _DEMO_WECHAT["app-id"],
        "ORDERSTREAM_NOTIFIER_WECHAT_APP_SECRET": _DEMO_WECHAT["app-secret"],
        "ORDERSTREAM_NOTIFIER_WECHAT_TOKEN": _DEMO_WECHAT["token"],
    }
    return helpers, {k: v for k, v in env.items() if k not in os.environ}


def cmd_run(args: argparse.Namespace) -> int:
    """Start the stack (unless external), create topics, run the services until Ctrl-C."""
    started = time.monotonic()
    conn = ConnectionSettings()
    all_external = bool(conn.external_kafka and conn.external_database_url)
    info = _stack_up(args, conn)
    if info.broker_pid is not None and conn.data_dir.exists():
        # Table stores (rocksdb://) must not outlive the embedded broker's changelogs.
        shutil.rmtree(conn.data_dir)
    env = {"KAFKA_BOOTSTRAP_SERVERS": info.kafka_bootstrap_servers,
           "DATABASE_URL": info.database_url}
    conn = ConnectionSettings(kafka_bootstrap_servers=info.kafka_bootstrap_servers,
                              database_url=info.database_url)
    asyncio.run(ensure_topics(conn))
    log_dir = info.state_dir.parent / "logs"
    helpers: list[Child] = []
    if {"status", "notifier"} & set(args.services) and not args.no_simulators:
        helpers, sim_env = _simulators(log_dir)
        env.update(sim_env)
    supervisor = Supervisor(env, log_dir=log_dir, services=tuple(args.services),
                            helpers=helpers)
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    code = 0
    try:
        supervisor.start()
        supervisor.wait_ready()
        print(f"orderstream ready in {time.monotonic() - started:.1f}s")
        print(f"  kafka     {info.kafka_bootstrap_servers}")
        print(f"  postgres  {info.database_url}")
        for child in supervisor.children:
            what = (f"{child.url}/metrics" if child.argv is None
                    else f"{child.url}  {_HELPER_NOTES[child.name]}")
            print(f"  {child.name:<12}{what}  log {child.log_path}")
        print("Ctrl-C stops everything.", flush=True)
        while not (dead := supervisor.dead()):
            time.sleep(0.5)
        print(supervisor.died_message(dead), file=sys.stderr)
        code = 1
    except _Stop as stop:
        print(f"\n{stop}: stopping")
    except SupervisorError as exc:
        print(f"orderstream: {exc}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        supervisor.stop()
        if not all_external and not args.keep_stack:
            stack.down()
        print("stopped")
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orderstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def ports(p: argparse.ArgumentParser) -> None:
        p.add_argument("--kafka-port", type=int, default=9092, help="embedded broker port")
        p.add_argument("--postgres-port", type=int, default=5432, help="embedded PostgreSQL port")

    p = sub.add_parser("run", help="start the embedded stack and all services until Ctrl-C")
    ports(p)
    p.add_argument("--services", nargs="+", choices=SERVICES, default=list(SERVICES))
    p.add_argument("--keep-stack", action="store_true", help="leave broker and database running")
    p.add_argument("--no-simulators", action="store_true",
                   help="do not start the simulated carrier API, operator robot, mailbox, "
                        "SMS providers and WeChat")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("stack", help="the embedded broker and PostgreSQL")
    p.add_argument("action", choices=("up", "down", "status"))
    ports(p)
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("kafka", help="real Apache Kafka (KRaft) on loopback: 1 or 3 nodes")
    p.add_argument("action", choices=("up", "down", "status", "stop-node", "start-node", "fetch"))
    p.add_argument("--nodes", type=int, choices=(1, 3), default=1)
    p.add_argument("--node", type=int, default=1, help="node id for stop-node / start-node")
    p.add_argument("--kill", action="store_true", help="stop-node with SIGKILL instead of SIGTERM")
    p.set_defaults(func=cmd_kafka)

    p = sub.add_parser("archive", help="move orders older than N months out of the hot tables")
    p.add_argument("--months", type=int, default=6, help="keep this many months hot (>= 1)")
    p.set_defaults(func=cmd_archive)

    p = sub.add_parser("reconcile", help="compare the stock table, its ledger and a WMS count; "
                       "one ops.alerts alert per difference (exit 1 when any)")
    p.add_argument("--wms", help="WMS snapshot CSV with the header sku,on_hand")
    p.add_argument("--out", default="reconcile.csv", help="where to write the CSV report")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("health-score", help="inventory health score per SKU and overall")
    p.add_argument("--days", type=int, default=90, help="period for turnover and stock-outs")
    p.add_argument("--at", help="as of this ISO time with offset (default: now)")
    p.set_defaults(func=cmd_health_score)

    p = sub.add_parser("topics", help="create the catalogue's topics")
    p.add_argument("action", choices=("create",))
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("docs", help="write JSON Schema and AsyncAPI for every topic")
    p.add_argument("--out", default=str(Path("docs")))
    p.set_defaults(func=cmd_docs)

    p = sub.add_parser("templates", help="check the customer-message templates: syntax, "
                       "variables, coverage and provider rules (exit 1 when any problem)")
    p.add_argument("action", choices=("check",))
    p.add_argument("--dir", help="catalogue directory (default: the shipped one)")
    p.set_defaults(func=cmd_templates)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (stack.StackError, kafka_cluster.KafkaClusterError) as exc:
        print(f"orderstream: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
