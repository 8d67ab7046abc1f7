"""What the notifier does after each provider answer, receipt or silence. Pure: the provider
pick, the retry schedule, the circuit breakers, and the next step of a delivery.

A delivery is one logical message on one channel: ``pending`` (due to be sent, or retried),
``sent`` (a provider took it; a receipt is awaited until ``due_at``), ``delivered`` or
``failed``. Each provider answer is classed (``providers.base.Failure``) and the class, not
the raw code, decides:

=============  ============================================================================
class          action
=============  ============================================================================
transient      retry the same provider with backoff, up to ``max_attempts``; then the next
throttled      pause the provider (its Retry-After, or ``throttle_pause``), go on with another
quota          pause the provider for ``quota_pause`` and alert; go on with another
bad_recipient  give up on this channel: the next channel of a failover policy takes over
config         alert; go on with another provider
content        alert (the template lint should have caught it); go on with another provider
unknown        no answer: the message may have gone. Providers do no dedupe, so the next
               try first asks the provider (send-detail query) before sending again
=============  ============================================================================

A channel with no provider left fails, and a failover policy moves to its next channel, as
it does on a negative receipt or when no receipt came within the channel's timeout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.notifier.providers.base import Failure, Receipt, SendResult

#: classes that count against a provider's circuit breaker (the provider, not the message)
_BREAKER_FAILURES = frozenset({Failure.TRANSIENT, Failure.THROTTLED, Failure.UNKNOWN,
                               Failure.QUOTA})
#: classes after which this provider is not tried again for the message
_PROVIDER_DONE = frozenset({Failure.QUOTA, Failure.CONFIG, Failure.CONTENT,
                            Failure.THROTTLED})
_ALERTED = {Failure.QUOTA: "channel_quota", Failure.CONFIG: "channel_config",
            Failure.CONTENT: "channel_content"}


@dataclass(frozen=True)
class Settings:
    #: providers of each channel with their share of the traffic (weighted split)
    providers: Mapping[str, Mapping[str, float]]
    max_attempts: int = 4                  # tries on one provider for one message
    backoff_base: float = 2.0              # seconds before the first retry
    backoff_cap: float = 300.0
    throttle_pause: float = 30.0           # a throttled provider rests this long, by default
    quota_pause: float = 3600.0            # a provider out of quota or balance rests longer
    receipt_timeout: Mapping[str, float] = field(
        default_factory=lambda: {"sms": 120.0, "wechat": 120.0, "email": 0.0})
    breaker_failures: int = 5              # consecutive failures that open a breaker
    breaker_cooldown: float = 30.0         # open this long, then one trial call


# --- the retry schedule ------------------------------------------------------------------


def backoff(message_id: str, attempt: int, settings: Settings) -> float:
    """Seconds before try ``attempt + 1``: exponential, capped, with full jitter drawn from
    the message and attempt, so a re-decision waits the same and a crowd of retries after an
    outage spreads out instead of coming back at once."""
    ceiling = min(settings.backoff_cap, settings.backoff_base * 2 ** max(0, attempt - 1))
    digest = hashlib.sha256(f"{message_id}|{attempt}".encode()).digest()
    fraction = int.from_bytes(digest[:4], "big") / 2**32
    return ceiling / 2 + fraction * ceiling / 2  # between half the ceiling and all of it


# --- provider health ---------------------------------------------------------------------


@dataclass
class Breaker:
    """A provider's circuit breaker and pause: closed (calls go), open (none go until
    ``open_until``; then one trial call goes, half-open), and a pause a provider asked for
    (throttling, quota) that holds whatever the counts."""

    failures: int = 0
    open_until: datetime | None = None
    paused_until: datetime | None = None
    trial: bool = False

    def allows(self, now: datetime) -> bool:
        if self.paused_until is not None and now < self.paused_until:
            return False
        if self.open_until is not None and now < self.open_until:
            return False
        if self.open_until is not None and self.trial:
            return False  # half-open: its one trial call is out
        return True

    def started(self, now: datetime) -> None:
        if self.open_until is not None and now >= self.open_until:
            self.trial = True

    def record(self, result: SendResult, now: datetime, settings: Settings) -> None:
        if result.accepted or result.failure not in _BREAKER_FAILURES:
            self.failures, self.open_until, self.trial = 0, None, False
        else:
            self.failures += 1
            self.trial = False
            if self.failures >= settings.breaker_failures or self.open_until is not None:
                self.open_until = now + timedelta(seconds=settings.breaker_cooldown)
        pause = pause_for(result, settings)
        if pause is not None:
            until = now + timedelta(seconds=pause)
            self.paused_until = max(until, self.paused_until or until)

    def state(self, now: datetime) -> str:
        if self.paused_until is not None and now < self.paused_until:
            return "paused"
        if self.open_until is None:
            return "closed"
        return "open" if now < self.open_until else "half_open"


def pause_for(result: SendResult, settings: Settings) -> float | None:
    if result.failure == Failure.THROTTLED:
        return result.retry_after or settings.throttle_pause
    if result.failure == Failure.QUOTA:
        return result.retry_after or settings.quota_pause
    return None


def choose(channel: str, message_id: str, done: Sequence[str], settings: Settings,
           breakers: Mapping[str, Breaker], now: datetime) -> str | None:
    """The provider for the next try on ``channel``: by weight among those whose breaker
    allows a call and that are not done with this message; the pick is drawn from the
    message id, so the split is stable and a re-decision picks the same."""
    weights = [(name, w) for name, w in settings.providers.get(channel, {}).items()
               if w > 0 and name not in done
               and (name not in breakers or breakers[name].allows(now))]
    if not weights:
        return None
    total = sum(w for _, w in weights)
    point = int.from_bytes(hashlib.sha256(message_id.encode()).digest()[:4], "big") / 2**32
    point *= total
    for name, w in weights:
        if point < w:
            return name
        point -= w
    return weights[-1][0]


def resting(channel: str, done: Sequence[str], settings: Settings,
            breakers: Mapping[str, Breaker], now: datetime) -> datetime | None:
    """When the first provider of ``channel`` that is only resting (paused or open, not done
    with the message) can be tried again; None when none is."""
    times = []
    for name, weight in settings.providers.get(channel, {}).items():
        breaker = breakers.get(name)
        if weight <= 0 or name in done or breaker is None or breaker.allows(now):
            continue
        times.extend(t for t in (breaker.paused_until, breaker.open_until)
                     if t is not None and t > now)
    return min(times) if times else None


# --- the next step of a delivery ---------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """A delivery's next state after an answer, a receipt or a timeout."""

    state: str                       # pending | sent | delivered | failed
    due_at: datetime | None          # pending: next try; sent: receipt deadline
    done: tuple[str, ...]            # providers finished with this message
    reason: str                      # "" or the class / receipt code that led here
    failover: bool = False           # the channel gave up: a failover policy moves on
    alert: str | None = None         # an operator alert kind to raise
    unknown: bool = False            # the last try's fate is unknown: query before resending


def after_send(channel: str, provider: str, result: SendResult, attempts: int,
               done: Sequence[str], message_id: str, settings: Settings,
               breakers: Mapping[str, Breaker], now: datetime, *,
               next_channel_waits: bool = False) -> Step:
    """The step after try number ``attempts`` (1-based) of ``message_id`` on ``provider``.
    ``breakers`` already hold this answer (see :meth:`Breaker.record`).
    ``next_channel_waits``: a failover policy has another channel for the message, which
    takes over at once when no provider of this one can send now, instead of waiting for a
    resting provider."""
    done = tuple(done)
    if result.accepted:
        if result.delivered:
            return Step("delivered", None, done, "")
        wait = settings.receipt_timeout.get(channel, 0.0)
        if wait <= 0:
            return Step("delivered", None, done, "")
        return Step("sent", now + timedelta(seconds=wait), done, "")
    failure = result.failure or Failure.TRANSIENT
    reason = failure.value
    alert = _ALERTED.get(failure)
    if failure == Failure.BAD_RECIPIENT:
        return Step("failed", None, (*done, provider), reason, failover=True)
    if failure in (Failure.TRANSIENT, Failure.UNKNOWN) and attempts < settings.max_attempts:
        retry = now + timedelta(seconds=backoff(message_id, attempts, settings))
        return Step("pending", retry, done, reason, unknown=failure == Failure.UNKNOWN)
    if failure in _PROVIDER_DONE or attempts >= settings.max_attempts:
        done = (*done, provider)
    other = choose(channel, message_id, done, settings, breakers, now)
    if other is not None:
        return Step("pending", now, done, reason, alert=alert,
                    unknown=failure == Failure.UNKNOWN)
    later = None if next_channel_waits else resting(channel, done, settings, breakers, now)
    if later is not None and attempts < settings.max_attempts * 3:
        return Step("pending", later, done, reason, alert=alert,
                    unknown=failure == Failure.UNKNOWN)
    return Step("failed", None, done, reason, failover=True, alert=alert)


def after_receipt(receipt: Receipt, done: Sequence[str]) -> Step:
    if receipt.delivered:
        return Step("delivered", None, tuple(done), "")
    return Step("failed", None, tuple(done), f"receipt:{receipt.code}"[:64], failover=True)


def next_channel(chain: Sequence[str], existing: Sequence[str]) -> str | None:
    """The failover policy's next channel: the first of the chain not tried yet."""
    return next((c for c in chain if c not in existing), None)
