"""What every customer-message provider adapter speaks: a message to send, what came of the
send, a delivery receipt, and the class of each provider answer, which decides what the
notifier does next (``services/notifier/domain.py``). Pure: no HTTP here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class Failure(StrEnum):
    """The class of a provider answer that is not an acceptance. Every provider code maps to
    exactly one; the class, never the raw code, decides the action."""

    TRANSIENT = "transient"            # the provider failed this time: retry it later
    THROTTLED = "throttled"            # rate or flow control: back off, and fail over
    QUOTA = "quota"                    # quota or balance used up: fail over, and alert
    BAD_RECIPIENT = "bad_recipient"    # this recipient cannot get it here: no retry here
    CONFIG = "config"                  # signature, template, credentials: alert
    CONTENT = "content"                # refused for its content (the lint missed it): alert
    UNKNOWN = "unknown"                # no answer (timeout, cut connection): may have gone


@dataclass(frozen=True)
class Outgoing:
    """One message to one recipient on one provider.

    ``message_id`` is the notifier's idempotency key for (order, status, channel); each
    provider carries it where the provider echoes it back or dedupes on it: Aliyun
    ``OutId``, Tencent ``SessionContext``, WeChat ``client_msg_id``, the e-mail
    ``Message-ID``.
    """

    message_id: str
    recipient: str                        # phone (+86...), WeChat openid, or e-mail address
    template: str = ""                    # the provider's template code or id
    params: Mapping[str, str] = field(default_factory=dict)  # template parameters / fields
    subject: str = ""                     # e-mail subject
    text: str = ""                        # the whole rendered text (e-mail body, SMS text)
    url: str | None = None                # WeChat: where the message opens


@dataclass(frozen=True)
class SendResult:
    """What a provider said to one send. ``accepted`` means it took the message (a receipt
    may still say it was not delivered); otherwise ``failure`` says why, in class."""

    provider: str
    accepted: bool
    code: str                             # the provider's own code: "OK", "45009", "http_503"
    detail: str = ""
    failure: Failure | None = None
    provider_message_id: str | None = None  # Aliyun BizId, Tencent SerialNo, WeChat msgid
    retry_after: float | None = None      # seconds, when the provider said
    delivered: bool = False               # final at acceptance (no receipt will come: SMTP)


@dataclass(frozen=True)
class Receipt:
    """A provider's word on whether a message reached its recipient."""

    provider: str
    provider_message_id: str
    delivered: bool
    code: str                             # "DELIVERED", "DELIVRD", "success", "failed:user block"
    detail: str
    at: datetime                          # UTC, tz-aware
    message_id: str | None = None         # ours, where the receipt carries it
    recipient: str | None = None
    #: False when a query found the message with the provider but no result yet: it went,
    #: so it must not be sent again
    final: bool = True


class Provider(Protocol):
    """A client for one provider. ``send`` never raises for a provider's answer or for a
    network failure: it returns a :class:`SendResult` whose ``failure`` classifies it, and it
    is bounded by the client's timeout (a timeout is ``Failure.UNKNOWN``)."""

    name: str       # "aliyun", "tencent", "wechat", "smtp"
    channel: str    # "sms", "wechat", "email"

    async def send(self, message: Outgoing) -> SendResult: ...

    async def query(self, message: Outgoing, provider_message_id: str | None,
                    sent_at: datetime) -> Receipt | None:
        """What the provider knows of an earlier send (SMS send-detail queries): a receipt
        (``final=False`` when it has the message but no result yet), or None when it shows
        no record of it. Raises when the provider gives no usable answer: that says nothing
        about the message."""

    async def close(self) -> None: ...


def classify(table: Mapping[str, Failure], code: str, default: Failure) -> Failure:
    """The class of provider code ``code`` in ``table``, matching a code or a dotted prefix
    (``LimitExceeded.PhoneNumberDailyLimit`` matches ``LimitExceeded``); else ``default``."""
    while True:
        if code in table:
            return table[code]
        if "." not in code:
            return default
        code = code.rsplit(".", 1)[0]
