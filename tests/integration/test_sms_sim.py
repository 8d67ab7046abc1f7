"""The Aliyun and Tencent SMS clients against the simulator over real loopback HTTP, and the
simulator's receipt pushes into a small receiver: sends are accepted and their receipts
arrive, every fault surfaces as the right class of failure, a hung send is UNKNOWN and the
query then tells whether it went, lost receipts are found by querying, the same seed gives
the same faults, and Aliyun's push retries stop after their schedule.

Needs neither Kafka nor PostgreSQL. Faults are seeded, so every run draws the same fates.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from services.notifier.providers import aliyun_sms, tencent_sms
from services.notifier.providers.base import Failure, Outgoing, Provider, Receipt
from services.notifier.sms_sim import SmsSimulator
from shared.timeutil import utc_now

F = Failure
KEY_ID, SECRET, APP, SIGN = "AKID-test", "secret-test", "1400009999", "订单通知"
TEMPLATES = {"aliyun": ("SMS_480100001", {"order_id": "JD100", "status": "已发货"}),
             "tencent": ("1880001", {"order_id": "JD100", "status": "已发货"})}
MODULES = {"aliyun": aliyun_sms, "tencent": tencent_sms}
PROVIDERS = ("aliyun", "tencent")
REPO_ROOT = Path(__file__).resolve().parents[2]


async def eventually(check: Callable[[], Awaitable[Any] | Any], *, timeout: float = 10.0,
                     what: str = "condition") -> Any:
    """Poll ``check`` until it holds and return its value; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"deadline passed waiting for {what} (last: {result!r})")
        await asyncio.sleep(0.02)


@dataclass
class Receiver:
    """Our receipt endpoint: keeps every push; can refuse the first ones, or all."""

    provider: str = "aliyun"
    url: str = ""
    pushes: list[list[Receipt]] = field(default_factory=list)
    requests: int = 0
    refuse_first: int = 0
    answer: Any = None          # replaces the provider's expected answer when set

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.requests <= self.refuse_first:
            return web.json_response({"error": "try later"}, status=500)
        module = MODULES[self.provider]
        self.pushes.append(module.parse_receipts(await request.read()))
        return web.json_response(self.answer if self.answer is not None
                                 else module.RECEIPT_ANSWER)

    @property
    def receipts(self) -> list[Receipt]:
        return [r for push in self.pushes for r in push]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/v1/receipts/sms", recv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    recv.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/receipts/sms"
    yield recv
    await runner.cleanup()


SimFactory = Callable[..., Awaitable[SmsSimulator]]


@pytest.fixture
async def make_sim() -> AsyncIterator[SimFactory]:
    started: list[SmsSimulator] = []

    async def make(provider: str, **options: Any) -> SmsSimulator:
        code, params = TEMPLATES[provider]
        options.setdefault("templates", {code: tuple(params)})
        sim = SmsSimulator(provider, key_id=KEY_ID, secret=SECRET, sdk_app_id=APP,
                           sign_names=(SIGN,), seed=options.pop("seed", 7),
                           receipt_delay=options.pop("receipt_delay", 0.05), **options)
        await sim.start("127.0.0.1", 0)
        started.append(sim)
        return sim

    yield make
    for sim in started:
        await sim.stop()


ClientFactory = Callable[..., Provider]


@pytest.fixture
async def client_for() -> AsyncIterator[ClientFactory]:
    clients: list[Provider] = []

    def make(sim: SmsSimulator | str, provider: str | None = None, *, secret: str = SECRET,
             timeout: float = 5.0, sign_name: str = SIGN) -> Provider:
        url = sim if isinstance(sim, str) else sim.base_url
        kind = provider or (sim.provider if isinstance(sim, SmsSimulator) else "aliyun")
        client: Provider
        if kind == "aliyun":
            client = aliyun_sms.AliyunSms(url, KEY_ID, secret, sign_name, timeout=timeout)
        else:
            client = tencent_sms.TencentSms(url, KEY_ID, secret, APP, sign_name,
                                            timeout=timeout)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


_ids = iter(range(1, 10**9))


def message(provider: str, **changes: Any) -> Outgoing:
    code, params = TEMPLATES[provider]
    base = {"message_id": f"msg-{next(_ids):06d}", "recipient": "+8613812345678",
            "template": code, "params": params}
    return Outgoing(**(base | changes))


async def control(sim: SmsSimulator, method: str, path: str, body: Any = None
                  ) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, sim.base_url + path, json=body) as resp:
            return resp.status, await resp.json()


# --- sends and receipts ------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_send_is_accepted_and_its_receipt_is_pushed(
        provider: str, make_sim: SimFactory, client_for: ClientFactory,
        receiver: Receiver) -> None:
    # Given a simulator that pushes receipts to our endpoint
    receiver.provider = provider
    sim = await make_sim(provider, callback_url=receiver.url)
    client = client_for(sim)
    sent = message(provider)

    # When we send one message
    result = await client.send(sent)

    # Then it is accepted with the provider's id, recorded, and its receipt arrives
    assert result.accepted and result.failure is None and result.provider == provider
    assert result.provider_message_id
    receipts = await eventually(lambda: receiver.receipts, what="the receipt")
    assert len(receipts) == 1
    receipt = receipts[0]
    assert (receipt.provider_message_id, receipt.delivered) == (result.provider_message_id,
                                                                True)
    assert receipt.recipient == "+8613812345678"
    if provider == "aliyun":      # SmsReport echoes OutId; Tencent's callback does not
        assert receipt.message_id == sent.message_id
    status, records = await control(sim, "GET", "/sim/messages")
    assert status == 200 and len(records) == 1
    record = records[0]
    assert (record["our_id"], record["message_id"], record["phone"]) == (
        sent.message_id, result.provider_message_id, "+8613812345678")
    assert record["template"] == sent.template and record["fate"] == "delivered"
    expected_params = (dict(sent.params) if provider == "aliyun"
                       else list(sent.params.values()))
    assert record["params"] == expected_params
    await eventually(lambda: sim.pending == 0 and record_push(sim) == "pushed",
                     what="the push acknowledged")
    assert sim.stats["accepted"] == 1 and sim.stats["receipts_pushed"] == 1


def record_push(sim: SmsSimulator) -> str:
    return sim.messages[0].push if sim.messages else ""


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_bad_secret_is_refused_as_a_config_failure(
        provider: str, make_sim: SimFactory, client_for: ClientFactory) -> None:
    sim = await make_sim(provider)
    result = await client_for(sim, secret="not-the-secret").send(message(provider))
    assert not result.accepted and result.failure == F.CONFIG
    assert result.code == ("SignatureDoesNotMatch" if provider == "aliyun"
                           else "AuthFailure.SignatureFailure")
    assert sim.stats["signature_failures"] == 1 and not sim.messages


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_unreachable_provider_is_transient(provider: str,
                                                    client_for: ClientFactory) -> None:
    # A port nothing listens on: the request never left, so a retry is safe.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    result = await client_for(f"http://127.0.0.1:{port}", provider).send(message(provider))
    assert (result.code, result.failure) == ("connect_error", F.TRANSIENT)


# --- faults ------------------------------------------------------------------------------


FAULTS = [
    ("throttled", {"throttle_rate": 1.0}, F.THROTTLED,
     {"aliyun": "isv.BUSINESS_LIMIT_CONTROL",
      "tencent": "LimitExceeded.PhoneNumberThirtySecondLimit"}),
    ("throttled_http", {"throttle_rate": 1.0, "throttle_http": True}, F.THROTTLED,
     {"aliyun": "http_429", "tencent": "http_429"}),
    ("no_balance", {"balance": 0}, F.QUOTA,
     {"aliyun": "isv.AMOUNT_NOT_ENOUGH",
      "tencent": "FailedOperation.InsufficientBalanceInSmsPackage"}),
    ("outage", {"outage": True}, F.TRANSIENT, {"aliyun": "http_503", "tencent": "http_503"}),
]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("name", "faults", "failure", "codes"), FAULTS,
                         ids=[f[0] for f in FAULTS])
async def test_each_fault_gives_its_failure(
        provider: str, name: str, faults: dict[str, Any], failure: Failure,
        codes: dict[str, str], make_sim: SimFactory, client_for: ClientFactory) -> None:
    sim = await make_sim(provider, **faults)
    result = await client_for(sim).send(message(provider))
    assert not result.accepted
    assert (result.code, result.failure) == (codes[provider], failure)
    if name == "throttled_http":
        assert result.retry_after == 1.0
    assert not sim.messages


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_balance_runs_out_after_the_messages_it_paid_for(
        provider: str, make_sim: SimFactory, client_for: ClientFactory) -> None:
    sim = await make_sim(provider, balance=2)
    client = client_for(sim)
    results = [await client.send(message(provider)) for _ in range(3)]
    assert [r.accepted for r in results] == [True, True, False]
    assert results[2].failure == F.QUOTA
    status, faults = await control(sim, "GET", "/sim/faults")
    assert status == 200 and faults["balance"] == 0


REFUSALS = [
    ("unknown_template", {"template": "NOPE"}, F.CONFIG,
     {"aliyun": "isv.SMS_TEMPLATE_ILLEGAL",
      "tencent": "FailedOperation.TemplateIncorrectOrUnapproved"}),
    ("bad_number", {"recipient": "+86123"}, F.BAD_RECIPIENT,
     {"aliyun": "isv.MOBILE_NUMBER_ILLEGAL",
      "tencent": "InvalidParameterValue.IncorrectPhoneNumber"}),
    ("banned_word", {"params": {"order_id": "JD100", "status": "限时抢购"}}, F.CONTENT,
     {"aliyun": "isv.BLACK_KEY_CONTROL_LIMIT",
      "tencent": "FailedOperation.ContainSensitiveWord"}),
    ("url", {"params": {"order_id": "JD100", "status": "见 https://x.cn"}}, F.CONTENT,
     {"aliyun": "isv.PARAM_NOT_SUPPORT_URL",
      "tencent": "InvalidParameterValue.ProhibitedUseUrlInTemplateParameter"}),
    ("missing_variable", {"params": {"order_id": "JD100"}}, F.CONFIG,
     {"aliyun": "isv.TEMPLATE_MISSING_PARAMETERS",
      "tencent": "FailedOperation.TemplateParamSetNotMatchApprovedTemplate"}),
]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("name", "changes", "failure", "codes"), REFUSALS,
                         ids=[r[0] for r in REFUSALS])
async def test_the_provider_validates_like_the_real_one(
        provider: str, name: str, changes: dict[str, Any], failure: Failure,
        codes: dict[str, str], make_sim: SimFactory, client_for: ClientFactory) -> None:
    sim = await make_sim(provider, keywords=("限时抢购",))
    result = await client_for(sim).send(message(provider, **changes))
    assert (result.code, result.failure) == (codes[provider], failure)
    assert not sim.messages


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_unapproved_sign_name_is_config(
        provider: str, make_sim: SimFactory, client_for: ClientFactory) -> None:
    sim = await make_sim(provider)
    result = await client_for(sim, sign_name="别家签名").send(message(provider))
    assert result.failure == F.CONFIG and result.code in (
        "isv.SMS_SIGNATURE_ILLEGAL", "FailedOperation.SignatureIncorrectOrUnapproved")


async def test_tencent_refuses_a_blacklisted_number(make_sim: SimFactory,
                                                    client_for: ClientFactory) -> None:
    sim = await make_sim("tencent", blacklist=("+8613900000000",))
    result = await client_for(sim).send(message("tencent", recipient="+8613900000000"))
    assert (result.code, result.failure) == ("FailedOperation.PhoneNumberInBlacklist",
                                             F.BAD_RECIPIENT)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_latency_delays_the_answer_but_within_the_timeout_it_is_accepted(
        provider: str, make_sim: SimFactory, client_for: ClientFactory) -> None:
    sim = await make_sim(provider, latency=0.3)
    started = time.monotonic()
    assert (await client_for(sim, timeout=3).send(message(provider))).accepted
    assert time.monotonic() - started >= 0.3


# --- hung sends and queries --------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("went", [True, False], ids=["went", "never_went"])
async def test_a_hung_send_is_unknown_within_the_timeout_and_the_query_tells_if_it_went(
        provider: str, went: bool, make_sim: SimFactory, client_for: ClientFactory) -> None:
    # Given a provider that never answers a send (and did or did not send it)
    sim = await make_sim(provider, hang_rate=1.0, hang_sent_share=1.0 if went else 0.0)
    client = client_for(sim, timeout=0.4)
    sent, sent_at = message(provider), utc_now()

    # When we send
    started = time.monotonic()
    result = await client.send(sent)

    # Then it is UNKNOWN, within the client's timeout
    assert (result.code, result.failure) == ("timeout", F.UNKNOWN)
    assert time.monotonic() - started < 2.0
    assert sim.stats["hung"] == 1

    # And the query (which never hangs) tells whether it went, without its provider id
    if went:
        receipt = await eventually(lambda: client.query(sent, None, sent_at),
                                   what="the query's receipt")
        assert receipt.delivered and receipt.message_id == sent.message_id
        assert [m.our_id for m in sim.messages] == [sent.message_id]
    else:
        assert await client.query(sent, None, sent_at) is None
        assert not sim.messages


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_lost_receipt_is_found_by_query(
        provider: str, make_sim: SimFactory, client_for: ClientFactory,
        receiver: Receiver) -> None:
    receiver.provider = provider
    sim = await make_sim(provider, callback_url=receiver.url, lose_receipt_rate=1.0)
    client = client_for(sim)
    sent, sent_at = message(provider), utc_now()
    result = await client.send(sent)
    assert result.accepted

    # The report fell due, and no push went out for it
    await eventually(lambda: sim.stats["receipts_lost"] == 1 and sim.pending == 0,
                     what="the report to fall due")
    assert receiver.requests == 0 and sim.messages[0].push == "lost"

    receipt = await client.query(sent, result.provider_message_id, sent_at)
    assert receipt is not None and receipt.delivered
    assert receipt.provider_message_id == result.provider_message_id


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_failed_receipt_says_so_in_the_push_and_the_query(
        provider: str, make_sim: SimFactory, client_for: ClientFactory,
        receiver: Receiver) -> None:
    receiver.provider = provider
    sim = await make_sim(provider, callback_url=receiver.url, fail_receipt_rate=1.0)
    client = client_for(sim)
    sent, sent_at = message(provider), utc_now()
    result = await client.send(sent)
    pushed = (await eventually(lambda: receiver.receipts, what="the receipt"))[0]
    assert not pushed.delivered
    assert pushed.code == ("MK:0001" if provider == "aliyun" else "UNDELIV")
    queried = await client.query(sent, result.provider_message_id, sent_at)
    assert queried is not None and not queried.delivered


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_before_the_report_the_query_has_no_final_receipt(
        provider: str, make_sim: SimFactory, client_for: ClientFactory) -> None:
    """Aliyun lists a sent message as waiting (SendStatus 1): it went, and must not be sent
    again. Tencent's pull lists only reports, so it shows nothing yet."""
    sim = await make_sim(provider, receipt_delay=30)
    client = client_for(sim)
    sent, sent_at = message(provider), utc_now()
    result = await client.send(sent)
    assert result.accepted and len(sim.messages) == 1
    queried = await client.query(sent, result.provider_message_id, sent_at)
    if provider == "aliyun":
        assert queried is not None and not queried.final and not queried.delivered
    else:
        assert queried is None


async def test_the_aliyun_query_pages_through_a_busy_numbers_day(
        make_sim: SimFactory, client_for: ClientFactory) -> None:
    sim = await make_sim("aliyun")
    client = client_for(sim)
    first, sent_at = message("aliyun"), utc_now()
    assert (await client.send(first)).accepted
    for _ in range(60):   # newer messages push the first off the first page of 50
        assert (await client.send(message("aliyun"))).accepted
    await eventually(lambda: all(m.final(utc_now()) for m in sim.messages), what="reports")
    receipt = await client.query(first, None, sent_at)
    assert receipt is not None and receipt.message_id == first.message_id


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_query_the_provider_refuses_raises_rather_than_saying_never_sent(
        provider: str, make_sim: SimFactory, client_for: ClientFactory) -> None:
    sim = await make_sim(provider, outage=True)
    module = MODULES[provider]
    with pytest.raises(module.QueryFailed) as caught:
        await client_for(sim).query(message(provider), None, utc_now())
    assert caught.value.failure == F.TRANSIENT
    with pytest.raises(module.QueryFailed) as caught:
        await client_for(sim, secret="wrong").query(message(provider), None,
                                                    utc_now() - timedelta(hours=1))
    assert isinstance(caught.value, ConnectionError)


# --- determinism, batching, push retries -------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_same_seed_gives_the_same_faults(
        provider: str, make_sim: SimFactory, client_for: ClientFactory) -> None:
    async def run(seed: int) -> tuple[list[str], list[str]]:
        sim = await make_sim(provider, seed=seed, throttle_rate=0.4, fail_receipt_rate=0.5)
        client = client_for(sim)
        codes = [(await client.send(message(provider))).code for _ in range(24)]
        return codes, [m.as_json()["fate"] for m in sim.messages]

    first = await run(11)
    assert first == await run(11)
    assert first != await run(12)
    codes, fates = first
    assert {"OK", "Ok"} & set(codes) and len(set(codes)) == 2 and len(set(fates)) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_receipts_are_pushed_in_batches(
        provider: str, make_sim: SimFactory, client_for: ClientFactory,
        receiver: Receiver) -> None:
    receiver.provider = provider
    sim = await make_sim(provider, callback_url=receiver.url, push_batch=5,
                         push_interval=1.0, receipt_delay=0.3)
    client = client_for(sim)
    results = await asyncio.gather(*(client.send(message(provider)) for _ in range(12)))
    assert all(r.accepted for r in results)
    await eventually(lambda: len(receiver.receipts) == 12 and sim.pending == 0,
                     what="every receipt pushed")
    sizes = [len(push) for push in receiver.pushes]
    assert max(sizes) <= 5 < sum(sizes) == 12 and len(sizes) < 12   # batched, capped at 5
    assert {r.provider_message_id for r in receiver.receipts} == {
        r.provider_message_id for r in results}


async def test_aliyuns_push_retries_stop_after_its_schedule(
        make_sim: SimFactory, client_for: ClientFactory, receiver: Receiver) -> None:
    # Given a receiver that always fails, and Aliyun's three retries in milliseconds
    receiver.refuse_first = 10**6
    sim = await make_sim("aliyun", callback_url=receiver.url,
                         push_retry_schedule=(0.05, 0.1, 0.15))
    sent, sent_at = message("aliyun"), utc_now()
    client = client_for(sim)
    assert (await client.send(sent)).accepted

    # When the first push and every retry fail
    await eventually(lambda: sim.stats["pushes_abandoned"] == 1 and sim.pending == 0,
                     what="the push abandoned")

    # Then Aliyun tried 1 + 3 times and gave up; the query still knows the receipt
    assert receiver.requests == 4 and sim.stats["push_failures"] == 4
    assert (sim.messages[0].push, sim.messages[0].push_attempts) == ("abandoned", 4)
    assert (await client.query(sent, None, sent_at)) is not None


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_refused_push_is_retried_until_acknowledged(
        provider: str, make_sim: SimFactory, client_for: ClientFactory,
        receiver: Receiver) -> None:
    receiver.provider, receiver.refuse_first = provider, 2
    sim = await make_sim(provider, callback_url=receiver.url,
                         push_retry_schedule=(0.05, 0.05, 0.05))
    assert (await client_for(sim).send(message(provider))).accepted
    await eventually(lambda: sim.stats["pushes_sent"] == 1 and sim.pending == 0,
                     what="the push acknowledged")
    assert receiver.requests == 3 and sim.messages[0].push == "pushed"


@pytest.mark.parametrize(("provider", "answer"), [
    ("aliyun", {"code": "0", "msg": "接收成功"}),     # Aliyun wants a numeric code
    ("tencent", {"result": 1, "errmsg": "busy"}),
])
async def test_a_push_answered_wrongly_counts_as_failed(
        provider: str, answer: dict[str, Any], make_sim: SimFactory,
        client_for: ClientFactory, receiver: Receiver) -> None:
    receiver.provider, receiver.answer = provider, answer
    sim = await make_sim(provider, callback_url=receiver.url,
                         push_retry_schedule=(0.05,))
    assert (await client_for(sim).send(message(provider))).accepted
    await eventually(lambda: sim.stats["pushes_abandoned"] == 1 and sim.pending == 0,
                     what="the push abandoned")
    assert receiver.requests == 2


# --- control API and process -------------------------------------------------------------


async def test_faults_change_at_run_time_and_bad_ones_are_refused(
        make_sim: SimFactory, client_for: ClientFactory) -> None:
    sim = await make_sim("tencent")
    client = client_for(sim)
    assert (await client.send(message("tencent"))).accepted
    status, faults = await control(sim, "POST", "/sim/faults", {"outage": True})
    assert status == 200 and faults["outage"] is True
    assert (await client.send(message("tencent"))).failure == F.TRANSIENT
    for bad in ({"nope": 1}, {"throttle_rate": 2}, {"balance": -1}, {"outage": "yes"}, [1]):
        status, reply = await control(sim, "POST", "/sim/faults", bad)
        assert status == 400 and "error" in reply
    status, faults = await control(sim, "POST", "/sim/faults", {"outage": False})
    assert (await client.send(message("tencent"))).accepted

    status, stats = await control(sim, "GET", "/sim/stats")
    assert status == 200 and (stats["accepted"], stats["outage"], stats["messages"]) == (2, 1,
                                                                                       2)
    assert await control(sim, "DELETE", "/sim/messages") == (200, {"removed": 2})
    assert await control(sim, "GET", "/sim/messages") == (200, [])


async def test_runs_as_a_process_and_stops_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.notifier.sms_sim", "--provider", "tencent",
        "--port", "0", "--key-id", KEY_ID, "--secret", SECRET, "--sdk-app-id", APP,
        "--sign-name", SIGN, "--template", "1880001=order_id,status", "--seed", "1",
        "--balance", "5", cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        base_url = (await asyncio.wait_for(proc.stdout.readline(), timeout=15)).decode().strip()
        assert base_url.startswith("http://127.0.0.1:")
        client = tencent_sms.TencentSms(base_url, KEY_ID, SECRET, APP, SIGN)
        try:
            assert (await client.send(message("tencent"))).accepted
        finally:
            await client.close()
        async with aiohttp.ClientSession() as http:
            async with http.get(base_url + "/sim/faults") as resp:
                assert (await resp.json())["balance"] == 4
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
