"""Stale-order notices for operators: a WeCom group-robot digest and an e-mail digest.

The digests are pure (notices, zone, now in; text out), so they are tested without I/O.
The senders turn every delivery failure into one of three errors — the robot or mail server
said "slow down" (:class:`NoticeThrottled`), "never" (:class:`NoticeRejected`) or could not
be reached (:class:`NoticeUnavailable`) — and :class:`OperatorNotices` decides per error
whether to wait, retry or give up, within a bounded time, and reports what happened instead
of raising: an alert about stuck orders must never take the status service down with it.

WeCom facts this relies on (group-robot documentation, developer.work.weixin.qq.com
document/path/91770): ``POST .../cgi-bin/webhook/send?key=KEY`` with ``{"msgtype":
"markdown", "markdown": {"content": ...}}``; answers HTTP 200 ``{"errcode": 0, "errmsg":
"ok"}`` on success and HTTP 200 with a non-zero ``errcode`` on business errors (93000
invalid webhook url, 45009 api freq out of limit, 40058 invalid/over-long content, 44004
empty content, 40008 invalid message type); markdown content at most 4096 UTF-8 bytes;
at most 20 messages per minute per robot; ``mentioned_mobile_list`` only works in ``text``.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import re
import smtplib
import ssl
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from itertools import groupby
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from shared.events import OrderStatus

log = logging.getLogger(__name__)

WECOM_MARKDOWN_LIMIT = 4096  # UTF-8 bytes of markdown.content
MIN_LIMIT_BYTES = 1024  # room for the header and one clipped order line
WECOM_RATE_PER_MINUTE = 20

# Free-text fields are clipped (UTF-8 bytes) so one order line is always far below any limit.
_CAPS = {"order_id": 64, "channel": 24, "status": 32, "carrier": 24, "tracking": 40}
_STATUS_ORDER = {status.value: rank for rank, status in enumerate(OrderStatus)}


# --- the notice and its digests (pure) ---------------------------------------------------


@dataclass(frozen=True)
class StaleNotice:
    """One order stuck in ``status`` since ``since``, past its ``deadline``."""

    order_id: str
    channel: str
    status: str
    since: datetime  # aware UTC: when the order entered ``status``
    deadline: datetime  # aware UTC: when it should have left it
    alert_count: int
    tracking_number: str | None = None
    carrier: str | None = None

    def __post_init__(self) -> None:
        for name in ("since", "deadline"):
            value: datetime = getattr(self, name)
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(f"StaleNotice.{name} must be tz-aware (UTC)")


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be tz-aware")
    return now


def _text(value: str, cap: int | None = None) -> str:
    """One line of safe text: no line breaks, no backticks or tags that would break the
    markdown around it; clipped to ``cap`` UTF-8 bytes with an ellipsis."""
    clean = " ".join(value.replace("`", "'").replace("<", "‹").replace(">", "›").split())
    if cap is not None and len(clean.encode("utf-8")) > cap:
        cut = clean.encode("utf-8")[: cap - len("…".encode())]
        clean = cut.decode("utf-8", errors="ignore") + "…"
    return clean


def format_stuck(delta: timedelta) -> str:
    """How long an order has been stuck, coarse enough to read at a glance: ``3 h 12 min``,
    ``2 d 5 h``, ``45 min`` (never negative: a clock skew reads as ``0 min``)."""
    minutes = max(0, int(delta.total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {mins} min"
    return f"{mins} min"


def _zone_label(zone: ZoneInfo, now: datetime) -> str:
    offset = now.astimezone(zone).strftime("%z")  # +0800
    return f"{zone.key} (UTC{offset[:3]}:{offset[3:]})"


def _groups(notices: Sequence[StaleNotice]) -> list[tuple[str, list[StaleNotice]]]:
    """Notices by status in lifecycle order (unknown statuses after, by name); inside a
    status the longest-stuck first, so a clipped list still shows the worst orders."""
    def status_key(n: StaleNotice) -> tuple[int, str]:
        return _STATUS_ORDER.get(n.status, len(_STATUS_ORDER)), n.status

    ordered = sorted(notices, key=lambda n: (status_key(n), n.since, n.order_id))
    return [(status, list(group)) for (_, status), group in groupby(ordered, key=status_key)]


def _shares(sizes: list[int], budget: int) -> list[int]:
    """Split ``budget`` listed lines between groups fairly: small groups are listed in full
    and what they leave goes to the large ones (water-filling)."""
    shares = [0] * len(sizes)
    left, groups_left = budget, len(sizes)
    for index in sorted(range(len(sizes)), key=lambda i: sizes[i]):
        shares[index] = min(sizes[index], left // groups_left)
        left -= shares[index]
        groups_left -= 1
    return shares


def _markdown_line(n: StaleNotice, zone: ZoneInfo, now: datetime) -> str:
    parts = [
        f"- `{_text(n.order_id, _CAPS['order_id'])}` {_text(n.channel, _CAPS['channel'])}",
        f"stuck {format_stuck(now - n.since)}",
        f"since {n.since.astimezone(zone):%m-%d %H:%M}",
        f"due {n.deadline.astimezone(zone):%m-%d %H:%M}",
    ]
    if n.alert_count > 1:
        parts.append(f"alert #{n.alert_count}")
    shipping = " ".join(
        _text(v, cap) for v, cap in ((n.carrier, _CAPS["carrier"]),
                                     (n.tracking_number, _CAPS["tracking"])) if v
    )
    if shipping:
        parts.append(shipping)
    return " · ".join(parts)


def _orders(count: int) -> str:
    return f"{count:,} order" if count == 1 else f"{count:,} orders"


def digest_markdown(
    notices: Sequence[StaleNotice],
    *,
    zone: ZoneInfo,
    now: datetime,
    limit_bytes: int = WECOM_MARKDOWN_LIMIT,
    max_listed: int = 60,
) -> list[str]:
    """WeCom markdown messages for ``notices``: as few as fit, each at most ``limit_bytes``
    UTF-8 bytes, never cutting a line.

    Orders are grouped by status (heading with the count), one line each with the time
    stuck and the times in ``zone``. At most ``max_listed`` order lines are listed in all,
    shared fairly between statuses; the rest of a status is counted in a line ``… and 1,234
    more PAID``, so an alert storm stays within a few messages (and the robot's 20 a
    minute). Every message repeats the title and the zone, so each reads on its own.
    """
    now = _aware(now)
    if limit_bytes < MIN_LIMIT_BYTES:
        raise ValueError(f"limit_bytes must be at least {MIN_LIMIT_BYTES}")
    if not notices:
        return []
    groups = _groups(notices)
    shares = _shares([len(g) for _, g in groups], max(0, max_listed))

    # Sections as (heading, lines); the heading is repeated, marked, where a section
    # continues in the next message.
    sections: list[tuple[str, list[str]]] = []
    for (status, group), share in zip(groups, shares, strict=True):
        name = _text(status, _CAPS["status"])
        lines = [_markdown_line(n, zone, now) for n in group[:share]]
        if len(group) > share:
            lines.append(f"> … and {len(group) - share:,} more {name}")
        sections.append((f"**{name}** · {_orders(len(group))}", lines))

    total = len(notices)
    summary = _text(" · ".join(f"{_text(s, _CAPS['status'])} {len(g):,}" for s, g in groups),
                    400)
    context = f"> Times in {_zone_label(zone, now)} · as of {now.astimezone(zone):%Y-%m-%d %H:%M}"

    def header(part: int, parts: int) -> list[str]:
        label = f" ({part}/{parts})" if parts > 1 else ""
        lines = [f"## Stale orders: {total:,}{label}", context]
        return [*lines, f"> {summary}"] if part == 1 else lines

    def size(lines: list[str]) -> int:
        return sum(len(line.encode("utf-8")) + 1 for line in lines)  # each with its "\n"

    # Reserve room for the longest header any part can have: the part count is not known
    # before packing, but it is at most one part per body line.
    most = sum(len(lines) for _, lines in sections) + 1
    budgets = (limit_bytes - size(header(1, most)), limit_bytes - size(header(2, most)))

    bodies: list[list[str]] = [[]]
    for heading, lines in sections:
        index = 0
        while index < len(lines):
            body = bodies[-1]
            title = heading if index == 0 else f"{heading} (cont.)"
            opening = ([""] if body else []) + [title]  # a blank line between sections
            budget = budgets[0 if len(bodies) == 1 else 1]
            if size(body) + size(opening) + size(lines[index:index + 1]) > budget:
                if not body:  # cannot happen with clipped fields and MIN_LIMIT_BYTES
                    raise ValueError("a section does not fit in an empty message")
                bodies.append([])  # never leave a heading alone at the end of a message
                continue
            body.extend(opening)
            while index < len(lines) and size(body) + size([lines[index]]) <= budget:
                body.append(lines[index])
                index += 1
            if index < len(lines):
                bodies.append([])
    bodies = [b for b in bodies if b]
    return ["\n".join(header(i, len(bodies)) + body) for i, body in enumerate(bodies, 1)]


def digest_email(
    notices: Sequence[StaleNotice],
    *,
    zone: ZoneInfo,
    now: datetime,
    sender: str,
    recipients: Sequence[str],
    subject_prefix: str = "[orderstream] ",
) -> EmailMessage:
    """One plain-text e-mail listing every order (a mail has no size limit worth fearing),
    grouped by status, times in ``zone``. The subject carries the total and the statuses so
    it can be triaged from the inbox; ``subject_prefix`` may be e.g. ``"[订单告警] "``."""
    now = _aware(now)
    groups = _groups(notices)
    counts = [f"{_text(status)} {len(group):,}" for status, group in groups]
    subject_counts = ", ".join(counts[:4]) + (", …" if len(counts) > 4 else "")
    total = len(notices)
    noun = "order" if total == 1 else "orders"

    lines = [
        f"{total:,} stale {noun} as of {now.astimezone(zone):%Y-%m-%d %H:%M}.",
        f"Times in {_zone_label(zone, now)}.",
    ]
    for status, group in groups:
        lines += ["", f"{_text(status)} — {_orders(len(group))}"]
        for n in group:
            row = [
                f"  {_text(n.order_id)}", _text(n.channel),
                f"stuck {format_stuck(now - n.since)}",
                f"since {n.since.astimezone(zone):%Y-%m-%d %H:%M}",
                f"due {n.deadline.astimezone(zone):%Y-%m-%d %H:%M}",
                f"alerts {n.alert_count}",
            ]
            if n.carrier:
                row.append(f"carrier {_text(n.carrier)}")
            if n.tracking_number:
                row.append(f"tracking {_text(n.tracking_number)}")
            lines.append("  ".join(row))

    message = EmailMessage()
    message["Subject"] = f"{subject_prefix}{total:,} stale {noun}: {subject_counts}"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = email.utils.format_datetime(now)
    message["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2] or "localhost")
    message.set_content("\n".join(lines) + "\n")
    return message


# --- delivery errors ---------------------------------------------------------------------


class NoticeError(Exception):
    """A notice was not delivered. Messages never contain the webhook key or addresses."""


class NoticeThrottled(NoticeError):
    """The receiver asked us to slow down (WeCom 45009, HTTP 429); try again later."""

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__(f"throttled (retry after {retry_after} s)")
        self.retry_after = retry_after  # None: the receiver did not say


class NoticeRejected(NoticeError):
    """The receiver refused this notice for good (bad key, bad content, unknown recipient):
    sending the same again will fail again."""

    def __init__(self, errcode: int | None, errmsg: str) -> None:
        super().__init__(f"rejected errcode={errcode} errmsg={errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class NoticeUnavailable(NoticeError):
    """The receiver could not be reached or failed (timeout, refused connection, 5xx)."""


# --- WeCom group robot -------------------------------------------------------------------

_ROBOT_BUSY = -1  # WeCom "system busy": transient, retried like a 5xx
_ROBOT_THROTTLED = 45009


class WeComRobot:
    """Client of one WeCom group-robot webhook. Every call has a timeout; the session is
    created on first use (inside the running loop), unless one is handed in to share."""

    def __init__(
        self, webhook_url: str, *, timeout: float = 5.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._url = webhook_url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._own_session = session is None

    async def send_markdown(self, content: str) -> None:
        """Post one markdown message (at most 4096 UTF-8 bytes, checked by the robot)."""
        await self._post({"msgtype": "markdown", "markdown": {"content": content}})

    async def send_text(self, content: str, *, mentioned_mobile_list: Sequence[str] = ()) -> None:
        """Post one text message; text is the only type in which the robot can @ people by
        mobile number (``"@all"`` for everyone)."""
        text: dict[str, Any] = {"content": content}
        if mentioned_mobile_list:
            text["mentioned_mobile_list"] = list(mentioned_mobile_list)
        await self._post({"msgtype": "text", "text": text})

    async def _post(self, payload: dict[str, Any]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(self._url, json=payload,
                                          timeout=self._timeout) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                raw = await response.read()
        except TimeoutError as exc:
            raise NoticeUnavailable("robot timed out") from exc
        except aiohttp.ClientError as exc:  # connection refused/reset, bad payload
            raise NoticeUnavailable(f"robot unreachable: {type(exc).__name__}") from exc
        if status == 429:
            raise NoticeThrottled(_seconds(retry_after))
        if status >= 500:
            raise NoticeUnavailable(f"robot answered HTTP {status}")
        if status != 200:
            raise NoticeRejected(None, f"HTTP {status}")
        try:
            answer = json.loads(raw)
            errcode = int(answer["errcode"])
        except (ValueError, TypeError, KeyError) as exc:
            raise NoticeUnavailable("robot answer is not WeCom JSON") from exc
        errmsg = str(answer.get("errmsg", ""))
        if errcode == 0:
            return
        if errcode == _ROBOT_THROTTLED:
            raise NoticeThrottled(None)
        if errcode == _ROBOT_BUSY:
            raise NoticeUnavailable(f"robot busy: {errmsg}")
        raise NoticeRejected(errcode, errmsg)

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date Retry-After: treat as unknown


# --- e-mail --------------------------------------------------------------------------------


class MailSender:
    """Sends one message over SMTP with the standard library, in a worker thread so the
    event loop never blocks on a slow mail server."""

    def __init__(
        self, host: str, port: int, sender: str, recipients: Sequence[str], *,
        username: str | None = None, password: str | None = None,
        starttls: bool = False, timeout: float = 10.0,
    ) -> None:
        self.host, self.port = host, port
        self.sender = sender
        self.recipients = tuple(recipients)
        self._username, self._password = username, password
        self._starttls = starttls
        self._timeout = timeout

    async def send(self, message: EmailMessage) -> None:
        # smtplib's timeout is per socket operation; bound the whole exchange as well.
        try:
            await asyncio.wait_for(asyncio.to_thread(self._send_blocking, message),
                                   self._timeout * 3)
        except TimeoutError as exc:
            raise NoticeUnavailable("mail server timed out") from exc

    def _send_blocking(self, message: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self._timeout) as smtp:
                if self._starttls:  # with certificate and host name checks
                    smtp.starttls(context=ssl.create_default_context())
                if self._username is not None:
                    smtp.login(self._username, self._password or "")
                refused = smtp.send_message(message, from_addr=self.sender,
                                            to_addrs=list(self.recipients))
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if codes and all(400 <= code < 500 for code in codes):  # greylisting, full box
                raise NoticeUnavailable(f"recipients deferred: {min(codes)}") from exc
            raise NoticeRejected(max(codes, default=None), "all recipients refused") from exc
        except smtplib.SMTPResponseException as exc:  # sender refused, data, auth, ...
            if 400 <= exc.smtp_code < 500:
                raise NoticeUnavailable(f"mail server deferred: {exc.smtp_code}") from exc
            raise NoticeRejected(exc.smtp_code, _masked(exc.smtp_error)) from exc
        except smtplib.SMTPNotSupportedError as exc:  # e.g. STARTTLS not offered
            raise NoticeRejected(None, str(exc)) from exc
        except (smtplib.SMTPException, OSError) as exc:  # refused, reset, timeout, DNS
            raise NoticeUnavailable(f"mail server unreachable: {type(exc).__name__}") from exc
        if refused:
            log.warning("event=mail_recipients_refused refused=%d of=%d",
                        len(refused), len(self.recipients))


def _masked(reply: bytes | str) -> str:
    """An SMTP reply for logs and reports, with e-mail addresses masked (``o***@shop.cn``):
    servers like to quote the refused address back."""
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    return _EMAIL.sub(lambda m: f"{m.group(1)[:1]}***@{m.group(2)}", text)


_EMAIL = re.compile(r"([\w.+-]+)@([\w-]+(?:\.[\w-]+)+)")


# --- both channels, with limits, retries and a report --------------------------------------


@dataclass(frozen=True)
class ChannelOutcome:
    """What one channel did with one digest. ``failed`` maps a reason to the number of
    messages it kept from being delivered: ``throttled``, ``deferred`` (the rate limit would
    have made us wait past the time budget), ``unavailable``, ``rejected_<errcode>`` /
    ``rejected`` (no code), ``error`` (a bug, logged with its traceback)."""

    configured: bool
    sent: int = 0
    failed: Mapping[str, int] = field(default_factory=dict)
    retries: int = 0
    waited_seconds: float = 0.0  # time spent waiting for the rate limit and backoff

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())


@dataclass(frozen=True)
class NoticeResult:
    wecom: ChannelOutcome
    email: ChannelOutcome

    @property
    def delivered(self) -> bool:
        """Every configured channel delivered every message."""
        return not (self.wecom.failed_total or self.email.failed_total)


_NOT_CONFIGURED = ChannelOutcome(configured=False)


class _Window:
    """Client-side rolling-window limit: at most ``rate`` sends per ``window`` seconds.

    Sends are stamped when their answer arrives — never earlier than the robot saw them —
    so waiting for the oldest stamp to leave the window also frees the robot's window."""

    def __init__(self, rate: int, window: float) -> None:
        self.rate, self.window = max(1, rate), window
        self._stamps: deque[float] = deque()

    def wait(self) -> float:
        now = time.monotonic()
        while self._stamps and self._stamps[0] <= now - self.window:
            self._stamps.popleft()
        if len(self._stamps) < self.rate:
            return 0.0
        return self._stamps[0] + self.window - now

    def stamp(self) -> None:
        self._stamps.append(time.monotonic())


class _Attempts:
    """Mutable tally of one channel's delivery, frozen into a ChannelOutcome at the end;
    kept outside the delivery coroutine so a timeout or a bug still leaves a count."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline  # time.monotonic() by which the channel must be done
        self.pending = 0  # messages not yet sent or failed
        self.on_timeout = "unavailable"  # what running out of budget means right now
        self.sent = 0
        self.failed: Counter[str] = Counter()
        self.retries = 0
        self.waited = 0.0

    def delivered(self) -> None:
        self.sent += 1
        self.pending -= 1

    def fail(self, reason: str) -> None:
        self.failed[reason] += 1
        self.pending -= 1

    def fail_rest(self, reason: str) -> None:
        if self.pending > 0:
            self.failed[reason] += self.pending
        elif not (self.sent or self.failed):  # failed before the messages were counted
            self.failed[reason] += 1
        self.pending = 0

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.waited += seconds

    def outcome(self) -> ChannelOutcome:
        return ChannelOutcome(True, self.sent, dict(self.failed), self.retries,
                              round(self.waited, 3))


def _reason(exc: NoticeError) -> str:
    if isinstance(exc, NoticeThrottled):
        return "throttled"
    if isinstance(exc, NoticeRejected):
        return f"rejected_{exc.errcode}" if exc.errcode is not None else "rejected"
    return "unavailable"


# Rejections that concern one message's content; any other rejection (bad key, wrong URL)
# will refuse the following messages as well, so they are not even tried.
_CONTENT_ERRCODES = frozenset({"40008", "40058", "44004"})


class OperatorNotices:
    """Sends a stale-order digest to the WeCom robot and by e-mail, whichever is configured.

    The channels run concurrently and independently: one failing, waiting or hanging never
    delays or stops the other. Robot messages respect a client-side rolling window
    (``rate_per_minute`` per ``rate_window`` seconds, WeCom's 20 per 60 s by default, kept
    across calls) and are retried on "unavailable"/"throttled" with exponential backoff;
    each channel gets ``budget_seconds`` in all, in-flight requests included. What could
    not be sent in time is reported (``deferred``/``throttled``), not queued: the next scan
    re-raises the orders still stuck, and a fresh digest beats a stale one. ``notify`` never
    raises for delivery failures.
    """

    def __init__(
        self,
        *,
        zone: ZoneInfo,
        robot: WeComRobot | None = None,
        mail: MailSender | None = None,
        rate_per_minute: int = WECOM_RATE_PER_MINUTE,
        rate_window: float = 60.0,
        max_attempts: int = 4,
        backoff: float = 1.0,
        budget_seconds: float = 30.0,
        limit_bytes: int = WECOM_MARKDOWN_LIMIT,
        max_listed: int = 60,
        mention_mobiles: Sequence[str] = (),
    ) -> None:
        if limit_bytes < MIN_LIMIT_BYTES:  # fail at wiring time, not at the first alert
            raise ValueError(f"limit_bytes must be at least {MIN_LIMIT_BYTES}")
        self.zone = zone
        self.robot, self.mail = robot, mail
        self._window = _Window(rate_per_minute, rate_window)
        self._robot_lock = asyncio.Lock()  # concurrent calls share the robot's window
        self._max_attempts = max(1, max_attempts)
        self._backoff = backoff
        self._budget = budget_seconds
        self._limit_bytes, self._max_listed = limit_bytes, max_listed
        self._mention = tuple(mention_mobiles)

    async def notify(self, notices: Sequence[StaleNotice], now: datetime) -> NoticeResult:
        """Deliver the digest of ``notices`` (as of ``now``) on every configured channel."""
        now = _aware(now)
        wecom, mail = await asyncio.gather(
            self._guarded("wecom", self._to_robot if self.robot else None, notices, now),
            self._guarded("email", self._to_mail if self.mail else None, notices, now),
        )
        return NoticeResult(wecom, mail)

    async def _guarded(
        self, channel: str,
        deliver: Callable[[Sequence[StaleNotice], datetime, _Attempts], Awaitable[None]] | None,
        notices: Sequence[StaleNotice], now: datetime,
    ) -> ChannelOutcome:
        """Run one channel within its time budget. A bug in it is logged with its traceback
        and reported as ``error``, never raised into the caller or the other channel."""
        if deliver is None:
            return _NOT_CONFIGURED
        if not notices:
            return ChannelOutcome(True)
        tally = _Attempts(deadline=time.monotonic() + self._budget)
        try:
            async with asyncio.timeout(self._budget):
                await deliver(notices, now, tally)
        except TimeoutError:
            tally.fail_rest(tally.on_timeout)
        except Exception:
            log.exception("event=stale_notice_error channel=%s", channel)
            tally.fail_rest("error")
        outcome = tally.outcome()
        log.info("event=stale_notice_delivery channel=%s orders=%d sent=%d failed=%s "
                 "retries=%d waited_s=%.1f", channel, len(notices), outcome.sent,
                 ",".join(f"{k}:{v}" for k, v in sorted(outcome.failed.items())) or "0",
                 outcome.retries, outcome.waited_seconds)
        return outcome

    async def _to_robot(self, notices: Sequence[StaleNotice], now: datetime,
                        tally: _Attempts) -> None:
        assert self.robot is not None
        messages: list[tuple[str, str]] = [
            ("markdown", m) for m in digest_markdown(
                notices, zone=self.zone, now=now, limit_bytes=self._limit_bytes,
                max_listed=self._max_listed)
        ]
        if self._mention:  # markdown cannot @ by mobile number; a short text can
            messages.append(("text", f"{len(notices):,} stale orders: see the digest above."))
        tally.pending = len(messages)
        tally.on_timeout = "deferred"  # still waiting for an earlier digest to finish
        async with self._robot_lock:
            tally.on_timeout = "unavailable"  # a request without an answer in time
            for kind, content in messages:
                reason = await self._robot_one(kind, content, tally)
                if reason is None:
                    tally.delivered()
                elif reason.removeprefix("rejected_") in _CONTENT_ERRCODES:
                    tally.fail(reason)  # only this message was bad; the next may pass
                else:
                    tally.fail_rest(reason)  # the rest would meet the same fate
                    return

    async def _robot_one(self, kind: str, content: str, tally: _Attempts) -> str | None:
        """Send one message; None when delivered, else the reason it was not."""
        assert self.robot is not None
        attempt = 0
        while True:
            wait = self._window.wait()
            if wait > 0:
                if time.monotonic() + wait > tally.deadline:
                    return "deferred"
                log.info("event=wecom_rate_wait seconds=%.2f", wait)
                await tally.sleep(wait)
            try:
                try:
                    if kind == "text":
                        await self.robot.send_text(content, mentioned_mobile_list=self._mention)
                    else:
                        await self.robot.send_markdown(content)
                finally:
                    self._window.stamp()  # every attempt counts against the window
                return None
            except NoticeRejected as exc:
                log.warning("event=wecom_rejected errcode=%s errmsg=%s", exc.errcode,
                            exc.errmsg[:120])
                return _reason(exc)
            except (NoticeThrottled, NoticeUnavailable) as exc:
                attempt += 1
                delay = self._backoff * 2 ** (attempt - 1)
                if isinstance(exc, NoticeThrottled) and exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                log.warning("event=wecom_attempt_failed reason=%s attempt=%d error=%s",
                            _reason(exc), attempt, exc)
                if attempt >= self._max_attempts or time.monotonic() + delay > tally.deadline:
                    return _reason(exc)
                tally.retries += 1
                await tally.sleep(delay)

    async def _to_mail(self, notices: Sequence[StaleNotice], now: datetime,
                       tally: _Attempts) -> None:
        assert self.mail is not None
        message = digest_email(notices, zone=self.zone, now=now, sender=self.mail.sender,
                               recipients=self.mail.recipients)
        tally.pending = 1
        attempt = 0
        while True:
            try:
                await self.mail.send(message)
                tally.delivered()
                return
            except NoticeError as exc:
                attempt += 1
                delay = self._backoff * 2 ** (attempt - 1)
                log.warning("event=mail_attempt_failed reason=%s attempt=%d error=%s",
                            _reason(exc), attempt, exc)
                if (isinstance(exc, NoticeRejected) or attempt >= self._max_attempts
                        or time.monotonic() + delay > tally.deadline):
                    tally.fail(_reason(exc))
                    return
                tally.retries += 1
                await tally.sleep(delay)

    async def close(self) -> None:
        if self.robot is not None:
            await self.robot.close()
