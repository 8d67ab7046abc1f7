"""Operator notices over real HTTP and real SMTP on loopback: the WeCom robot simulator and
an aiosmtpd server stand in for WeCom and the mail relay. No broker, no database.

Rate windows are shortened (``rate_window`` / ``window_seconds``) so throttling shows in
well under a second instead of a minute; everything else runs as in production.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiosmtpd.controller import Controller

from services.status.notices import (
    MailSender,
    NoticeRejected,
    NoticeThrottled,
    NoticeUnavailable,
    OperatorNotices,
    StaleNotice,
    WeComRobot,
    digest_markdown,
)
from services.status.robot_sim import RobotSimulator

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 1, 20, 18, 0, tzinfo=UTC)
SENDER = "alerts@shop.example"
OPS = ["ops@shop.example", "lead@shop.example"]


def stale(count: int, *, status: str = "PAID") -> list[StaleNotice]:
    return [
        StaleNotice(order_id=f"订单-{i:04d}", channel="tmall", status=status,
                    since=NOW - timedelta(hours=25, minutes=i), deadline=NOW - timedelta(hours=1),
                    alert_count=1, tracking_number=None, carrier=None)
        for i in range(count)
    ]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
async def start_robot() -> AsyncIterator[Callable[..., Awaitable[RobotSimulator]]]:
    """Starts simulators on free ports; all are stopped after the test."""
    started: list[RobotSimulator] = []

    async def start(**options: Any) -> RobotSimulator:
        sim = RobotSimulator(**options)
        await sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        await sim.stop()


@dataclass
class Inbox:
    """aiosmtpd handler: keeps every message it accepts; answers MAIL FROM or RCPT TO with
    a given refusal on request."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # "MAIL"/"RCPT" -> SMTP reply

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        if "MAIL" in self.refuse:
            return self.refuse["MAIL"].format(address=address)
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if "RCPT" in self.refuse:
            return self.refuse["RCPT"].format(address=address)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


@dataclass
class MailServer:
    inbox: Inbox
    port: int

    def sender(self, **options: Any) -> MailSender:
        return MailSender("127.0.0.1", self.port, SENDER, OPS, timeout=2.0, **options)


@pytest.fixture
def smtp() -> Iterator[MailServer]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield MailServer(inbox, controller.port)
    finally:
        controller.stop()


def notices_for(robot: WeComRobot | None, mail: MailSender | None, **options: Any) \
        -> OperatorNotices:
    options = {"backoff": 0.05, "budget_seconds": 5.0, **options}
    return OperatorNotices(zone=SHANGHAI, robot=robot, mail=mail, **options)


# --- both channels -----------------------------------------------------------------------


async def test_a_digest_reaches_the_robot_and_the_mailbox(
        start_robot: Callable[..., Awaitable[RobotSimulator]], smtp: MailServer) -> None:
    # Given a robot and a mail server, and 80 orders stuck in PAID
    sim = await start_robot(key="k-1")
    robot = WeComRobot(sim.url or "", timeout=2.0)
    notices = notices_for(robot, smtp.sender())
    orders = stale(80)

    # When operators are notified
    result = await notices.notify(orders, NOW)
    await notices.close()

    # Then the robot received exactly the digest, and the mail lists every order
    expected = digest_markdown(orders, zone=SHANGHAI, now=NOW)
    assert [m["markdown"]["content"] for m in sim.received] == expected
    assert all(m["msgtype"] == "markdown" for m in sim.received)
    assert result.wecom.sent == len(expected) and result.wecom.failed == {}
    assert result.email.sent == 1 and result.email.failed == {}
    assert result.delivered
    [mail] = smtp.inbox.messages
    assert mail["Subject"] == "[orderstream] 80 stale orders: PAID 80"
    assert smtp.inbox.envelopes == [(SENDER, OPS)]
    body = mail.get_content()
    assert all(n.order_id in body for n in orders)
    assert "since 2026-01-20 01:00" in body  # 17:00 UTC the day before, shown in Shanghai


async def test_nothing_is_sent_for_no_notices_and_absent_channels_are_reported_as_such(
        start_robot: Callable[..., Awaitable[RobotSimulator]], smtp: MailServer) -> None:
    sim = await start_robot()
    both = notices_for(WeComRobot(sim.url or ""), smtp.sender())
    robot_only = notices_for(WeComRobot(sim.url or ""), None)

    empty = await both.notify([], NOW)
    only = await robot_only.notify(stale(1), NOW)
    await both.close()
    await robot_only.close()

    assert (empty.wecom.sent, empty.email.sent) == (0, 0)
    assert sim.stats["requests"] == 1 and smtp.inbox.messages == []
    assert only.wecom.sent == 1
    assert not only.email.configured and only.email.failed == {}


# --- throttling --------------------------------------------------------------------------


async def test_the_client_window_waits_so_the_robot_never_throttles(
        start_robot: Callable[..., Awaitable[RobotSimulator]]) -> None:
    # Given a robot allowing 3 messages per 0.6 s, and a digest of at least 5 messages
    sim = await start_robot(rate_per_minute=3, window_seconds=0.6)
    notices = notices_for(WeComRobot(sim.url or ""), None, rate_per_minute=3,
                          rate_window=0.6, limit_bytes=1024, max_listed=60)
    orders = stale(60)
    parts = len(digest_markdown(orders, zone=SHANGHAI, now=NOW, limit_bytes=1024,
                                max_listed=60))
    assert parts >= 5

    # When the digest is sent
    started = time.monotonic()
    result = await notices.notify(orders, NOW)
    elapsed = time.monotonic() - started
    await notices.close()

    # Then it waited for the window instead of hitting the robot's limit
    assert result.wecom.sent == parts and result.wecom.failed == {}
    assert sim.stats["throttled"] == 0 and sim.stats["accepted"] == parts
    assert result.wecom.waited_seconds > 0 and elapsed >= 0.6


async def test_a_robot_throttle_is_retried_with_backoff_until_the_window_frees(
        start_robot: Callable[..., Awaitable[RobotSimulator]]) -> None:
    # Given a robot whose window someone else has just filled (2 per 0.5 s)
    sim = await start_robot(rate_per_minute=2, window_seconds=0.5)
    other = WeComRobot(sim.url or "")
    await other.send_markdown("from another service")
    await other.send_markdown("from another service")
    with pytest.raises(NoticeThrottled):
        await other.send_markdown("one too many")
    await other.close()

    # When we notify, unaware of the other sender (our own window is empty)
    notices = notices_for(WeComRobot(sim.url or ""), None, backoff=0.1, max_attempts=6)
    result = await notices.notify(stale(3), NOW)
    await notices.close()

    # Then the 45009 answers were retried and the digest went out
    assert result.wecom.sent == 1 and result.wecom.failed == {}
    assert result.wecom.retries >= 1 and sim.stats["throttled"] >= 2
    assert sim.received[-1]["markdown"]["content"].startswith("## Stale orders: 3")


async def test_messages_beyond_the_window_are_deferred_not_waited_for_past_the_budget(
        start_robot: Callable[..., Awaitable[RobotSimulator]]) -> None:
    # Given the robot's real 20-per-minute budget, here 2 per minute, and a 1 s time budget
    sim = await start_robot(rate_per_minute=2)
    notices = notices_for(WeComRobot(sim.url or ""), None, rate_per_minute=2,
                          budget_seconds=1.0, limit_bytes=1024, max_listed=40)
    orders = stale(40)
    parts = len(digest_markdown(orders, zone=SHANGHAI, now=NOW, limit_bytes=1024,
                                max_listed=40))

    # When a digest of more than 2 messages is sent, then another one right after
    started = time.monotonic()
    first = await notices.notify(orders, NOW)
    second = await notices.notify(stale(1), NOW)
    elapsed = time.monotonic() - started
    await notices.close()

    # Then 2 went out, the rest were deferred at once, and the window holds across calls
    assert first.wecom.sent == 2 and first.wecom.failed == {"deferred": parts - 2}
    assert second.wecom.sent == 0 and second.wecom.failed == {"deferred": 1}
    assert sim.stats["throttled"] == 0 and sim.stats["requests"] == 2
    assert elapsed < 1.0 and not first.delivered


# --- failures: one channel never stops the other ------------------------------------------


async def test_a_bad_key_is_rejected_and_reported_and_the_mail_still_goes_out(
        start_robot: Callable[..., Awaitable[RobotSimulator]], smtp: MailServer) -> None:
    sim = await start_robot(key="right-key")
    wrong = (sim.url or "").replace("key=right-key", "key=wrong-key")
    notices = notices_for(WeComRobot(wrong), smtp.sender(), limit_bytes=1024, max_listed=40)
    parts = len(digest_markdown(stale(40), zone=SHANGHAI, now=NOW, limit_bytes=1024,
                                max_listed=40))

    result = await notices.notify(stale(40), NOW)
    await notices.close()

    # The key will not heal: the first 93000 stops the robot, each message is reported
    assert result.wecom.sent == 0 and result.wecom.failed == {"rejected_93000": parts}
    assert result.wecom.retries == 0 and sim.stats["invalid_key"] == 1
    assert result.email.sent == 1 and len(smtp.inbox.messages) == 1


async def test_a_mail_server_that_is_down_is_reported_and_the_robot_still_sends(
        start_robot: Callable[..., Awaitable[RobotSimulator]]) -> None:
    sim = await start_robot()
    nobody = MailSender("127.0.0.1", free_port(), SENDER, OPS, timeout=1.0)
    notices = notices_for(WeComRobot(sim.url or ""), nobody, max_attempts=3)

    result = await notices.notify(stale(5), NOW)
    await notices.close()

    assert result.email.sent == 0 and result.email.failed == {"unavailable": 1}
    assert result.email.retries == 2
    assert result.wecom.sent == 1 and len(sim.received) == 1


@pytest.mark.parametrize(("command", "reply", "failed", "retries"), [
    ("RCPT", "550 5.1.1 <{address}>: no such mailbox", {"rejected_550": 1}, 0),
    ("MAIL", "553 5.7.1 <{address}>: sender address rejected", {"rejected_553": 1}, 0),
    ("RCPT", "450 4.2.0 <{address}>: greylisted, try again", {"unavailable": 1}, 2),
])
async def test_mail_refusals_are_rejections_unless_temporary_and_never_log_addresses(
        smtp: MailServer, caplog: pytest.LogCaptureFixture, command: str, reply: str,
        failed: dict[str, int], retries: int) -> None:
    smtp.inbox.refuse[command] = reply
    notices = notices_for(None, smtp.sender(), max_attempts=3)

    with caplog.at_level("INFO", logger="services.status.notices"):
        result = await notices.notify(stale(2), NOW)

    assert result.email.failed == failed and result.email.retries == retries
    assert not result.wecom.configured and smtp.inbox.messages == []
    assert "event=mail_attempt_failed" in caplog.text
    assert SENDER not in caplog.text and all(address not in caplog.text for address in OPS)


async def test_a_robot_that_answers_5xx_is_retried_then_reported_unavailable(
        start_robot: Callable[..., Awaitable[RobotSimulator]], smtp: MailServer) -> None:
    sim = await start_robot(error_rate=1.0)
    notices = notices_for(WeComRobot(sim.url or ""), smtp.sender(), max_attempts=3)

    result = await notices.notify(stale(3), NOW)
    await notices.close()

    assert result.wecom.failed == {"unavailable": 1} and result.wecom.retries == 2
    assert sim.stats["error_5xx"] == 3
    assert result.email.sent == 1


async def test_a_hanging_robot_costs_at_most_the_time_budget(
        start_robot: Callable[..., Awaitable[RobotSimulator]], smtp: MailServer) -> None:
    # Given a robot that never answers and a client timeout longer than the budget
    sim = await start_robot(timeout_rate=1.0, hang_seconds=30.0)
    notices = notices_for(WeComRobot(sim.url or "", timeout=10.0), smtp.sender(),
                          budget_seconds=0.8)

    started = time.monotonic()
    result = await notices.notify(stale(3), NOW)
    elapsed = time.monotonic() - started
    await notices.close()

    # Then the in-flight request is abandoned at the budget; the mail is unaffected
    assert result.wecom.failed == {"unavailable": 1} and result.wecom.sent == 0
    assert 0.7 < elapsed < 3.0
    assert result.email.sent == 1 and sim.stats["hung"] == 1


async def test_seeded_faults_are_reproducible_and_retries_get_the_digest_through(
        start_robot: Callable[..., Awaitable[RobotSimulator]]) -> None:
    runs = []
    for _ in range(2):
        sim = await start_robot(seed=7, error_rate=0.5)
        notices = notices_for(WeComRobot(sim.url or ""), None, backoff=0.01, max_attempts=8,
                              limit_bytes=1024, max_listed=30)
        result = await notices.notify(stale(30), NOW)
        await notices.close()
        runs.append((result.wecom.sent, result.wecom.retries, dict(sim.stats)))

    assert runs[0] == runs[1]
    sent, retries, stats = runs[0]
    assert retries > 0 and stats["error_5xx"] == retries and stats["accepted"] == sent > 1
    assert stats["requests"] == sent + retries


async def test_an_oversized_message_is_rejected_alone_and_the_next_one_still_goes(
        start_robot: Callable[..., Awaitable[RobotSimulator]]) -> None:
    # A misconfigured byte limit (8 KiB) makes the first part too long for WeCom (4096)
    sim = await start_robot()
    notices = notices_for(WeComRobot(sim.url or ""), None, limit_bytes=8192, max_listed=150)
    parts = digest_markdown(stale(150), zone=SHANGHAI, now=NOW, limit_bytes=8192,
                            max_listed=150)
    too_long = sum(len(p.encode()) > 4096 for p in parts)
    assert 0 < too_long < len(parts)

    result = await notices.notify(stale(150), NOW)
    await notices.close()

    assert result.wecom.failed == {"rejected_40058": too_long}
    assert result.wecom.sent == len(parts) - too_long == len(sim.received)


async def test_on_call_people_are_mentioned_in_a_text_message_after_the_digest(
        start_robot: Callable[..., Awaitable[RobotSimulator]]) -> None:
    sim = await start_robot()
    notices = notices_for(WeComRobot(sim.url or ""), None, mention_mobiles=["13800001111"])

    result = await notices.notify(stale(2), NOW)
    await notices.close()

    assert result.wecom.sent == 2
    assert sim.received[-1] == {"msgtype": "text", "text": {
        "content": "2 stale orders: see the digest above.",
        "mentioned_mobile_list": ["13800001111"]}}


# --- the robot client against the simulator's answers --------------------------------------


async def test_the_robot_client_maps_each_wecom_answer_to_an_error(
        start_robot: Callable[..., Awaitable[RobotSimulator]]) -> None:
    sim = await start_robot(rate_per_minute=1)
    url = sim.url or ""
    async with aiohttp.ClientSession() as session:  # one session shared by two robots
        robot = WeComRobot(url, session=session)
        with pytest.raises(NoticeRejected) as too_long:
            await robot.send_markdown("告" * 1366)  # 4098 bytes
        with pytest.raises(NoticeRejected) as empty:
            await robot.send_markdown("")
        await robot.send_markdown("告" * 1365)  # 4095 bytes: fits
        with pytest.raises(NoticeThrottled) as throttled:
            await robot.send_markdown("again")
        with pytest.raises(NoticeRejected) as wrong_path:
            await WeComRobot(url.replace("/send?", "/sned?"), session=session) \
                .send_markdown("x")
        await robot.close()  # leaves a session it was handed open
        assert not session.closed
    unreachable = WeComRobot(f"http://127.0.0.1:{free_port()}/cgi-bin/webhook/send?key=k",
                             timeout=1.0)
    with pytest.raises(NoticeUnavailable) as refused:
        await unreachable.send_markdown("x")
    await unreachable.close()

    assert too_long.value.errcode == 40058 and "exceed max length 4096" in too_long.value.errmsg
    assert empty.value.errcode == 44004
    assert throttled.value.retry_after is None
    assert wrong_path.value.errcode is None and "404" in wrong_path.value.errmsg
    assert "key=" not in str(wrong_path.value) and "key=" not in str(refused.value)


async def test_the_simulator_runs_from_the_command_line_and_stops_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.status.robot_sim", "--port", "0", "--key", "cli-key",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        url = (await asyncio.wait_for(process.stdout.readline(), 15)).decode().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith(
            "/cgi-bin/webhook/send?key=cli-key")
        async with aiohttp.ClientSession() as session, session.post(
                url, json={"msgtype": "markdown", "markdown": {"content": "hi"}}) as response:
            assert await response.json() == {"errcode": 0, "errmsg": "ok"}
        process.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(process.communicate(), 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0
    assert json.loads(out.decode().strip().splitlines()[-1])["accepted"] == 1
