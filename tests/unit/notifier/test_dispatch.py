"""What the notifier does after each provider answer: the class decides the action, retries
back off with jitter, breakers open and close, and the weighted split is stable."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notifier import dispatch
from services.notifier.providers.base import Failure, Receipt, SendResult

NOW = datetime(2026, 12, 12, 12, 0, tzinfo=UTC)
SETTINGS = dispatch.Settings(providers={"sms": {"aliyun": 1.0, "tencent": 1.0},
                                        "email": {"smtp": 1.0}},
                             receipt_timeout={"sms": 120.0, "email": 0.0})


def answer(failure: Failure | None = None, *, accepted: bool = False, delivered: bool = False,
           retry_after: float | None = None, provider: str = "aliyun") -> SendResult:
    return SendResult(provider, accepted or failure is None, "X", failure=failure,
                      delivered=delivered, retry_after=retry_after,
                      provider_message_id="biz-1" if accepted or failure is None else None)


def step(result: SendResult, *, attempts: int = 1, done: tuple[str, ...] = (),
         breakers: dict[str, dispatch.Breaker] | None = None) -> dispatch.Step:
    return dispatch.after_send("sms", "aliyun", result, attempts, done, "m-1", SETTINGS,
                               breakers or {}, NOW)


# --- the retry schedule -------------------------------------------------------------------


@given(st.text(min_size=1, max_size=40), st.integers(min_value=1, max_value=30))
def test_backoff_is_jittered_within_half_and_all_of_its_capped_ceiling(
        message_id: str, attempt: int) -> None:
    ceiling = min(SETTINGS.backoff_cap, SETTINGS.backoff_base * 2 ** (attempt - 1))
    wait = dispatch.backoff(message_id, attempt, SETTINGS)
    assert ceiling / 2 <= wait <= ceiling
    assert wait == dispatch.backoff(message_id, attempt, SETTINGS)  # a re-decision agrees


def test_backoff_spreads_a_crowd_of_retries() -> None:
    waits = {round(dispatch.backoff(f"m-{n}", 3, SETTINGS), 3) for n in range(200)}
    assert len(waits) > 150


# --- the class decides the action ----------------------------------------------------------


def test_accepted_waits_for_its_receipt_until_the_channels_timeout() -> None:
    got = step(answer(accepted=True))
    assert (got.state, got.due_at) == ("sent", NOW + timedelta(seconds=120))


def test_accepted_by_smtp_is_delivered_at_once() -> None:
    got = dispatch.after_send("email", "smtp", answer(accepted=True, delivered=True,
                                                      provider="smtp"),
                              1, (), "m-1", SETTINGS, {}, NOW)
    assert got.state == "delivered"


def test_transient_retries_the_same_provider_later() -> None:
    got = step(answer(Failure.TRANSIENT))
    assert got.state == "pending" and got.done == () and got.due_at is not None
    assert got.due_at > NOW and not got.failover


def test_transient_past_the_attempts_moves_to_the_other_provider_now() -> None:
    got = step(answer(Failure.TRANSIENT), attempts=SETTINGS.max_attempts)
    assert (got.state, got.due_at, got.done) == ("pending", NOW, ("aliyun",))


def test_throttled_moves_to_the_other_provider_now() -> None:
    got = step(answer(Failure.THROTTLED))
    assert (got.state, got.due_at, got.done, got.alert) == ("pending", NOW, ("aliyun",), None)


def test_quota_moves_on_and_alerts() -> None:
    got = step(answer(Failure.QUOTA))
    assert (got.state, got.done, got.alert) == ("pending", ("aliyun",), "channel_quota")


def test_a_bad_recipient_gives_up_the_channel_and_fails_over() -> None:
    got = step(answer(Failure.BAD_RECIPIENT))
    assert (got.state, got.failover) == ("failed", True)


@pytest.mark.parametrize(("failure", "alert"), [(Failure.CONFIG, "channel_config"),
                                                (Failure.CONTENT, "channel_content")])
def test_config_and_content_alert_and_try_the_other_provider(failure: Failure,
                                                            alert: str) -> None:
    got = step(answer(failure))
    assert (got.state, got.alert, got.done) == ("pending", alert, ("aliyun",))


def test_with_no_provider_left_the_channel_fails_over() -> None:
    got = step(answer(Failure.CONFIG), done=("tencent",))
    assert (got.state, got.failover) == ("failed", True)


def test_unknown_is_retried_after_asking_the_provider() -> None:
    got = step(answer(Failure.UNKNOWN))
    assert got.state == "pending" and got.unknown


def test_a_provider_that_only_rests_is_waited_for() -> None:
    resting = dispatch.Breaker(paused_until=NOW + timedelta(seconds=40))
    got = step(answer(Failure.THROTTLED), breakers={"tencent": resting})
    assert (got.state, got.due_at) == ("pending", NOW + timedelta(seconds=40))


def test_with_a_next_channel_a_failover_policy_does_not_wait_for_a_resting_provider() -> None:
    resting = dispatch.Breaker(paused_until=NOW + timedelta(seconds=40))
    got = dispatch.after_send("sms", "aliyun", answer(Failure.THROTTLED), 1, (), "m-1",
                              SETTINGS, {"tencent": resting}, NOW, next_channel_waits=True)
    assert (got.state, got.failover) == ("failed", True)


def test_receipts() -> None:
    ok = Receipt("aliyun", "biz-1", True, "DELIVERED", "", NOW)
    bad = Receipt("aliyun", "biz-1", False, "MK:0001", "", NOW)
    assert dispatch.after_receipt(ok, ()).state == "delivered"
    assert (dispatch.after_receipt(bad, ()).state, dispatch.after_receipt(bad, ()).failover
            ) == ("failed", True)


def test_failover_takes_the_next_channel_of_the_chain() -> None:
    assert dispatch.next_channel(("wechat", "sms", "email"), ["wechat"]) == "sms"
    assert dispatch.next_channel(("wechat", "sms"), ["wechat", "sms"]) is None


# --- breakers -----------------------------------------------------------------------------


def test_a_breaker_opens_after_consecutive_failures_and_lets_one_trial_through() -> None:
    breaker = dispatch.Breaker()
    for _ in range(SETTINGS.breaker_failures):
        assert breaker.allows(NOW)
        breaker.record(answer(Failure.TRANSIENT), NOW, SETTINGS)
    assert not breaker.allows(NOW) and breaker.state(NOW) == "open"
    later = NOW + timedelta(seconds=SETTINGS.breaker_cooldown)
    assert breaker.allows(later) and breaker.state(later) == "half_open"
    breaker.started(later)
    assert not breaker.allows(later)  # its one trial is out
    breaker.record(answer(accepted=True), later, SETTINGS)
    assert breaker.allows(later) and breaker.state(later) == "closed"


def test_a_failed_trial_opens_the_breaker_again() -> None:
    breaker = dispatch.Breaker(failures=5, open_until=NOW)
    breaker.started(NOW)
    breaker.record(answer(Failure.TRANSIENT), NOW, SETTINGS)
    assert not breaker.allows(NOW + timedelta(seconds=1))


def test_a_throttled_provider_rests_as_long_as_it_asked() -> None:
    breaker = dispatch.Breaker()
    breaker.record(answer(Failure.THROTTLED, retry_after=7), NOW, SETTINGS)
    assert not breaker.allows(NOW + timedelta(seconds=6))
    assert breaker.allows(NOW + timedelta(seconds=7))


def test_a_bad_recipient_says_nothing_about_the_provider() -> None:
    breaker = dispatch.Breaker()
    for _ in range(20):
        breaker.record(answer(Failure.BAD_RECIPIENT), NOW, SETTINGS)
    assert breaker.allows(NOW)


# --- the weighted split -------------------------------------------------------------------


def test_the_split_follows_the_weights_and_is_stable_per_message() -> None:
    settings = dispatch.Settings(providers={"sms": {"aliyun": 3.0, "tencent": 1.0}})
    picks = Counter(dispatch.choose("sms", f"m-{n}", (), settings, {}, NOW)
                    for n in range(8000))
    assert 0.72 < picks["aliyun"] / 8000 < 0.78
    assert all(dispatch.choose("sms", f"m-{n}", (), settings, {}, NOW)
               == dispatch.choose("sms", f"m-{n}", (), settings, {}, NOW) for n in range(50))


def test_the_split_skips_providers_done_or_open() -> None:
    opened = {"aliyun": dispatch.Breaker(open_until=NOW + timedelta(seconds=5))}
    assert dispatch.choose("sms", "m-1", (), SETTINGS, opened, NOW) == "tencent"
    assert dispatch.choose("sms", "m-1", ("tencent",), SETTINGS, opened, NOW) is None
    assert dispatch.choose("wechat", "m-1", (), SETTINGS, {}, NOW) is None
