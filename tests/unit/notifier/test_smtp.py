"""The e-mail channel's message and the class of each SMTP failure."""

from __future__ import annotations

from datetime import UTC, datetime

import aiosmtplib
import pytest

from services.notifier.providers.base import Failure, Outgoing
from services.notifier.providers.smtp import classify_error, mask_address, message_of


def test_the_mail_carries_the_message_id_of_the_logical_message() -> None:
    mail = message_of(Outgoing("m-1", "wang@example.com", subject="您的订单已确认",
                               text="小王，您好"), "shop@example.com",
                      datetime(2026, 12, 12, tzinfo=UTC))
    assert (mail["To"], mail["From"], mail["Message-ID"]) == (
        "wang@example.com", "shop@example.com", "<m-1@orderstream>")
    assert mail.get_content().strip() == "小王，您好"


@pytest.mark.parametrize(("error", "failure"), [
    (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(
        550, "no such user", "x@example.com")]), Failure.BAD_RECIPIENT),
    (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(
        450, "mailbox busy", "x@example.com")]), Failure.TRANSIENT),
    (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), Failure.CONFIG),
    (aiosmtplib.SMTPResponseException(421, "too many connections"), Failure.THROTTLED),
    (aiosmtplib.SMTPDataError(554, "message refused"), Failure.CONTENT),
    (aiosmtplib.SMTPSenderRefused(553, "sender refused", "shop@example.com"), Failure.CONFIG),
    (aiosmtplib.SMTPConnectError("refused"), Failure.TRANSIENT),
    (aiosmtplib.SMTPTimeoutError("timed out"), Failure.UNKNOWN),
    (TimeoutError(), Failure.UNKNOWN),
])
def test_each_smtp_failure_has_its_class(error: Exception, failure: Failure) -> None:
    assert classify_error(error)[0] == failure


def test_addresses_are_masked_in_logs() -> None:
    assert mask_address("wang@example.com") == "w***@example.com"
