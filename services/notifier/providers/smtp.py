"""The e-mail channel: one message over SMTP (aiosmtplib), its answer classed like any
provider's. SMTP has no delivery receipt: a message the server accepted counts as delivered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib

from services.notifier.providers.base import Failure, Outgoing, Receipt, SendResult
from shared.timeutil import utc_now

log = logging.getLogger(__name__)


def mask_address(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def message_of(message: Outgoing, sender: str, now: datetime) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = message.recipient
    mail["Subject"] = message.subject
    mail["Date"] = format_datetime(now)
    # The same logical message always has the same Message-ID, so a mailbox that sees a
    # retry after an unknown outcome can tell it is one message.
    mail["Message-ID"] = f"<{message.message_id}@orderstream>"
    mail.set_content(message.text, cte="8bit")  # readable in any mailbox log
    return mail


def classify_error(exc: Exception) -> tuple[Failure, str]:
    """An SMTP failure's class and code: 5xx for the recipient is a bad address, other 5xx
    are configuration or content, 421 and 45x are the server resting, a cut connection
    before DATA is transient, and a timeout leaves the outcome unknown."""
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return Failure.UNKNOWN, "timeout"
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [e.code for e in exc.recipients]
        return (Failure.BAD_RECIPIENT if codes and all(c >= 500 for c in codes)
                else Failure.TRANSIENT), f"smtp_{codes[0] if codes else 'rcpt'}"
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return Failure.CONFIG, f"smtp_{exc.code}"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        code = exc.code
        if code in (421, 450, 451, 452):
            return Failure.THROTTLED, f"smtp_{code}"
        if 400 <= code < 500:
            return Failure.TRANSIENT, f"smtp_{code}"
        if isinstance(exc, aiosmtplib.SMTPDataError):
            return Failure.CONTENT, f"smtp_{code}"
        return Failure.CONFIG, f"smtp_{code}"
    return Failure.TRANSIENT, "smtp_unavailable"


class SmtpEmail:
    """Sends over SMTP with aiosmtplib, one connection per message, bounded by ``timeout``."""

    name = "smtp"
    channel = "email"

    def __init__(self, host: str, port: int, sender: str, *, username: str | None = None,
                 password: str | None = None, start_tls: bool = False, timeout: float = 10.0,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.username, self.password, self.start_tls = username, password, start_tls
        self.timeout = timeout
        self.clock = clock

    async def send(self, message: Outgoing) -> SendResult:
        mail = message_of(message, self.sender, self.clock())
        try:
            async with asyncio.timeout(self.timeout):
                _refused, text = await aiosmtplib.send(
                    mail, hostname=self.host, port=self.port, username=self.username,
                    password=self.password, start_tls=self.start_tls, timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - every failure is classed, none raised
            failure, code = classify_error(exc)
            log.info("event=email_failed to=%s class=%s code=%s", mask_address(
                message.recipient), failure, code)
            return SendResult(self.name, False, code, str(exc)[:300], failure)
        return SendResult(self.name, True, "250", text[:200], delivered=True,
                          provider_message_id=f"<{message.message_id}@orderstream>")

    async def query(self, message: Outgoing, provider_message_id: str | None,
                    sent_at: datetime) -> Receipt | None:
        return None  # SMTP keeps no record to ask

    async def check(self) -> bool:
        """Whether the server answers and, with credentials, accepts the login."""
        client = aiosmtplib.SMTP(hostname=self.host, port=self.port, timeout=self.timeout,
                                 start_tls=self.start_tls)
        try:
            await client.connect()
            if self.username:
                await client.login(self.username, self.password or "")
            await client.quit()
        except Exception:  # noqa: BLE001 - unhealthy, whatever the reason
            return False
        return True

    async def close(self) -> None:
        return None
