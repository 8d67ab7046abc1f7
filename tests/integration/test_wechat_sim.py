"""The WeChat template-message client against the WeChat simulator over real loopback HTTP,
and the simulator's signed receipt pushes into a small receiver: a send is accepted and its
receipt arrives, a dead token is replaced once, every WeChat refusal and every injected fault
comes back as the right class, and a seed always draws the same faults.

Needs neither Kafka nor PostgreSQL.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from services.notifier.providers.base import Failure, Outgoing, Receipt, SendResult
from services.notifier.providers.wechat import (
    PUSH_REPLY,
    SEND_PATH,
    TOKEN_PATH,
    WeChatTemplate,
    parse_receipt,
    verify_push,
)
from services.notifier.wechat_sim import WeChatSimulator

APP_ID, APP_SECRET, PUSH_TOKEN = "wx1234567890abcdef", "secret-test", "push-token-test"
TEMPLATE = "OS_ZH_ORDER_SHIPPED"
REPO_ROOT = Path(__file__).resolve().parents[2]


def openid(n: int) -> str:
    return f"oTest{n:023d}"  # 28 characters, like WeChat's


UNSUBSCRIBED = openid(999)


def message(n: int = 1, *, to: str | None = None, **params: str) -> Outgoing:
    return Outgoing(message_id=f"notify-ord-{n}-shipped-wechat", recipient=to or openid(n),
                    template=TEMPLATE, params=params or {"thing1": "您的订单已发货"},
                    url=f"https://shop.example.cn/orders/{n}")


async def eventually(check: Callable[[], Awaitable[bool] | bool], *, timeout: float = 10.0,
                     what: str = "condition") -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"deadline passed waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Receiver:
    """The account's server URL: checks each push's signature, parses its receipt, and can
    fail the first tries."""

    url: str = ""
    receipts: list[Receipt] = field(default_factory=list)
    arrived_at: list[float] = field(default_factory=list)  # monotonic, per receipt
    bad_signatures: int = 0
    fail_first: int = 0
    requests: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.requests <= self.fail_first:
            return web.Response(status=500, text="busy")
        q = request.query
        if not verify_push(PUSH_TOKEN, q.get("signature"), q.get("timestamp"), q.get("nonce")):
            self.bad_signatures += 1
            return web.Response(status=403, text="bad signature")
        receipt = parse_receipt(await request.read())
        if receipt is not None:
            self.receipts.append(receipt)
            self.arrived_at.append(time.monotonic())
        return web.Response(text=PUSH_REPLY)

    def by_msgid(self) -> dict[str, Receipt]:
        return {r.provider_message_id: r for r in self.receipts}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/wechat/push", recv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    recv.url = f"http://127.0.0.1:{runner.addresses[0][1]}/wechat/push"
    yield recv
    await runner.cleanup()


SimFactory = Callable[..., Awaitable[WeChatSimulator]]


@pytest.fixture
async def make_sim(receiver: Receiver) -> AsyncIterator[SimFactory]:
    started: list[WeChatSimulator] = []

    async def make(**options: Any) -> WeChatSimulator:
        options.setdefault("callback_url", receiver.url)
        sim = WeChatSimulator(app_id=APP_ID, app_secret=APP_SECRET, token=PUSH_TOKEN,
                              seed=options.pop("seed", 7), unsubscribed=[UNSUBSCRIBED],
                              push_retry_delay=0.05, **options)
        await sim.start("127.0.0.1", 0)
        started.append(sim)
        return sim

    yield make
    for sim in started:
        await sim.stop()


ClientFactory = Callable[..., WeChatTemplate]


@pytest.fixture
async def client_for() -> AsyncIterator[ClientFactory]:
    clients: list[WeChatTemplate] = []

    def make(base_url: str, *, secret: str = APP_SECRET, app_id: str = APP_ID,
             **options: Any) -> WeChatTemplate:
        client = WeChatTemplate(base_url, app_id, secret, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def control(sim: WeChatSimulator, method: str, path: str,
                  body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, sim.base_url + path, json=body) as resp:
            return resp.status, await resp.json()


async def sim_messages(sim: WeChatSimulator) -> list[dict[str, Any]]:
    return (await control(sim, "GET", "/sim/messages"))[1]


# --- the happy path ----------------------------------------------------------------------


async def test_a_send_is_accepted_and_its_signed_receipt_reaches_the_server_url(
        make_sim: SimFactory, client_for: ClientFactory, receiver: Receiver) -> None:
    # Given an account and its server URL
    sim = await make_sim()
    client = client_for(sim.base_url)

    # When a template message is sent
    result = await client.send(message(1, thing1="您的订单已发货", time2="2026-01-20 12:00"))

    # Then WeChat took it, and recorded exactly what we meant to send
    assert result.accepted and result.failure is None and result.provider_message_id
    [sent] = await sim_messages(sim)
    assert sent["openid"] == openid(1) and sent["template_id"] == TEMPLATE
    assert sent["data"] == {"thing1": "您的订单已发货", "time2": "2026-01-20 12:00"}
    assert sent["url"] == "https://shop.example.cn/orders/1"
    assert sent["client_msg_id"] == "notify-ord-1-shipped-wechat"
    assert str(sent["msgid"]) == result.provider_message_id
    assert datetime.fromisoformat(sent["time"]).tzinfo is not None

    # And its receipt arrives, correctly signed, and says delivered
    await eventually(lambda: len(receiver.receipts) == 1, what="the receipt")
    receipt = receiver.receipts[0]
    assert receiver.bad_signatures == 0
    assert receipt.provider_message_id == result.provider_message_id
    assert receipt.delivered and receipt.code == "success" and receipt.recipient == openid(1)
    assert abs((receipt.at - datetime.now(UTC)).total_seconds()) < 60
    await eventually(lambda: sim.stats.receipts_sent == 1 and sim.pending_pushes == 0,
                     what="the push to be counted")
    assert (await sim_messages(sim))[0]["push"] == "delivered"


async def test_concurrent_first_sends_wait_for_one_token_fetch(
        make_sim: SimFactory, client_for: ClientFactory) -> None:
    sim = await make_sim()
    client = client_for(sim.base_url)
    results = await asyncio.gather(*(client.send(message(n)) for n in range(1, 21)))
    assert all(r.accepted for r in results)
    assert sim.stats.token_requests == 1
    assert len({r.provider_message_id for r in results}) == 20


async def test_the_token_is_refetched_ahead_of_its_end(
        make_sim: SimFactory, client_for: ClientFactory) -> None:
    # Given a client whose clock we move, and a token valid for 7200 s
    sim = await make_sim()
    now = [datetime(2026, 1, 20, 4, 0, tzinfo=UTC)]
    client = client_for(sim.base_url, clock=lambda: now[0])
    assert (await client.send(message(1))).accepted
    now[0] = now[0].replace(hour=5, minute=54)      # 6840 s later: still 6 minutes left
    assert (await client.send(message(2))).accepted
    assert sim.stats.token_requests == 1
    now[0] = now[0].replace(minute=56)              # 4 minutes left: inside the margin
    assert (await client.send(message(3))).accepted
    assert sim.stats.token_requests == 2


# --- tokens ------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "errcode"), [(None, "42001"), ({"invalidate": True}, "40001")])
async def test_a_dead_token_is_replaced_once_and_the_send_goes_through(
        make_sim: SimFactory, client_for: ClientFactory, body: Any, errcode: str) -> None:
    # Given a client holding a token
    sim = await make_sim()
    client = client_for(sim.base_url)
    assert (await client.send(message(1))).accepted

    # When WeChat expires (42001) or invalidates (40001) every token
    status, _ = await control(sim, "POST", "/sim/tokens/expire", body)
    assert status == 200

    # Then the next send is refused once, a token is fetched, and the send goes through
    result = await client.send(message(2))
    assert result.accepted
    assert sim.stats.refusals == {errcode: 1}
    assert sim.stats.token_requests == 2 and sim.stats.sends == 3
    assert len(await sim_messages(sim)) == 2


async def test_a_token_refused_again_after_the_refresh_is_config(
        client_for: ClientFactory) -> None:
    # A WeChat whose every token is refused: the client refreshes once, not in a loop.
    calls = {"token": 0, "send": 0}

    async def token(request: web.Request) -> web.Response:
        calls["token"] += 1
        return web.json_response({"access_token": f"t{calls['token']}", "expires_in": 7200})

    async def send(request: web.Request) -> web.Response:
        calls["send"] += 1
        return web.json_response({"errcode": 40001, "errmsg": "invalid credential"})

    app = web.Application()
    app.router.add_post(TOKEN_PATH, token)
    app.router.add_post(SEND_PATH, send)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        client = client_for(f"http://127.0.0.1:{runner.addresses[0][1]}")
        result = await client.send(message(1))
    finally:
        await runner.cleanup()
    assert (result.code, result.failure) == ("40001", Failure.CONFIG)
    assert calls == {"token": 2, "send": 2}


async def test_the_stable_token_is_stable_unless_forced(make_sim: SimFactory) -> None:
    sim = await make_sim()
    creds = {"grant_type": "client_credential", "appid": APP_ID, "secret": APP_SECRET}
    _, first = await control(sim, "POST", TOKEN_PATH, {**creds, "force_refresh": False})
    _, again = await control(sim, "POST", TOKEN_PATH, creds)
    assert again["access_token"] == first["access_token"]
    assert 7190 <= first["expires_in"] <= 7200

    # Force mode kills the old token; a second force within 30 s changes nothing.
    _, forced = await control(sim, "POST", TOKEN_PATH, {**creds, "force_refresh": True})
    _, forced_again = await control(sim, "POST", TOKEN_PATH, {**creds, "force_refresh": True})
    assert forced["access_token"] != first["access_token"]
    assert forced_again["access_token"] == forced["access_token"]
    body = {"touser": openid(1), "template_id": TEMPLATE, "data": {"thing1": {"value": "x"}}}
    _, old = await control(sim, "POST", f"{SEND_PATH}?access_token={first['access_token']}",
                           body)
    _, new = await control(sim, "POST", f"{SEND_PATH}?access_token={forced['access_token']}",
                           body)
    assert old["errcode"] == 40001 and new["errcode"] == 0


@pytest.mark.parametrize(("options", "errcode"), [
    ({"secret": "wrong-secret"}, "40125"),
    ({"app_id": "wx0000000000000000"}, "40013"),
])
async def test_bad_credentials_are_config_and_nothing_is_sent(
        make_sim: SimFactory, client_for: ClientFactory, options: dict[str, str],
        errcode: str) -> None:
    sim = await make_sim()
    result = await client_for(sim.base_url, **options).send(message(1))
    assert (result.accepted, result.code, result.failure) == (False, errcode, Failure.CONFIG)
    assert sim.stats.sends == 0 and sim.stats.token_refusals == 1


# --- WeChat's refusals -------------------------------------------------------------------


@pytest.mark.parametrize(("outgoing", "errcode", "failure"), [
    (message(1, to=UNSUBSCRIBED), "43004", Failure.BAD_RECIPIENT),
    (message(1, to="not-an-openid"), "40003", Failure.BAD_RECIPIENT),
    (Outgoing(message_id="m1", recipient=openid(1), template="tpl-unknown",
              params={"thing1": "x"}), "40037", Failure.CONFIG),
    (message(1, thing1="这一段文字远远超过了二十个字的模板字段长度限制"), "47003", Failure.CONTENT),
    (message(1, thing1="第一行\n第二行"), "47003", Failure.CONTENT),
])
async def test_each_refusal_has_its_class(make_sim: SimFactory, client_for: ClientFactory,
                                          receiver: Receiver, outgoing: Outgoing,
                                          errcode: str, failure: Failure) -> None:
    sim = await make_sim()
    result = await client_for(sim.base_url).send(outgoing)
    assert (result.accepted, result.code, result.failure) == (False, errcode, failure)
    assert "rid:" in result.detail   # WeChat's errmsg, passed on for the operators
    assert await sim_messages(sim) == [] and sim.pending_pushes == 0


async def test_a_spent_daily_quota_pauses_the_channel_until_midnight_in_shanghai(
        make_sim: SimFactory, client_for: ClientFactory) -> None:
    sim = await make_sim(daily_quota=2)
    at_2330_in_shanghai = datetime(2026, 1, 20, 15, 30, tzinfo=UTC)
    client = client_for(sim.base_url, clock=lambda: at_2330_in_shanghai)
    assert [(await client.send(message(n))).accepted for n in (1, 2)] == [True, True]
    result = await client.send(message(3))
    assert (result.code, result.failure) == ("45009", Failure.QUOTA)
    assert result.retry_after == 1800.0
    assert len(await sim_messages(sim)) == 2


async def test_a_repeated_client_msg_id_sends_once(
        make_sim: SimFactory, client_for: ClientFactory, receiver: Receiver) -> None:
    sim = await make_sim()
    client = client_for(sim.base_url)
    first, again = await client.send(message(1)), await client.send(message(1))
    other_user = await client.send(message(1, to=openid(2)))  # same id, another openid
    assert first.accepted and again.accepted and other_user.accepted
    assert again.provider_message_id == first.provider_message_id
    assert other_user.provider_message_id != first.provider_message_id
    assert len(await sim_messages(sim)) == 2 and sim.stats.duplicates == 1
    await eventually(lambda: len(receiver.receipts) == 2 and sim.pending_pushes == 0,
                     what="two receipts")
    assert set(receiver.by_msgid()) == {first.provider_message_id,
                                        other_user.provider_message_id}


# --- injected faults ---------------------------------------------------------------------


async def test_system_busy_is_transient(make_sim: SimFactory, client_for: ClientFactory) -> None:
    sim = await make_sim(busy_rate=1.0)
    result = await client_for(sim.base_url).send(message(1))
    assert (result.code, result.failure) == ("-1", Failure.TRANSIENT)
    assert sim.stats.busy == 1 and await sim_messages(sim) == []


async def test_an_outage_is_transient_for_the_token_and_for_the_send(
        make_sim: SimFactory, client_for: ClientFactory) -> None:
    sim = await make_sim()
    client = client_for(sim.base_url)
    assert (await client.send(message(1))).accepted       # the client now holds a token
    await control(sim, "POST", "/sim/faults", {"outage": True})
    result = await client.send(message(2))
    assert (result.code, result.failure) == ("http_503", Failure.TRANSIENT)
    fresh = await client_for(sim.base_url).send(message(3))  # no token: the fetch fails
    assert (fresh.code, fresh.failure) == ("http_503", Failure.TRANSIENT)
    assert sim.stats.outage_answers == 2


async def test_a_hung_send_is_unknown_within_the_timeout(
        make_sim: SimFactory, client_for: ClientFactory) -> None:
    sim = await make_sim(hang_rate=1.0)
    client = client_for(sim.base_url, timeout=0.5)
    started = time.monotonic()
    result = await client.send(message(1))
    assert (result.code, result.failure) == ("timeout", Failure.UNKNOWN)
    assert time.monotonic() - started < 2.0   # generous: the point is "not forever"
    assert sim.stats.hung == 1


async def test_latency_inside_the_timeout_is_only_slow_and_beyond_it_unknown(
        make_sim: SimFactory, client_for: ClientFactory) -> None:
    sim = await make_sim(latency=0.2)
    started = time.monotonic()
    assert (await client_for(sim.base_url, timeout=3.0).send(message(1))).accepted
    assert time.monotonic() - started >= 0.4     # token and send, 0.2 s each

    await control(sim, "POST", "/sim/faults", {"latency": 0.0})
    holder = client_for(sim.base_url, timeout=0.3)
    assert (await holder.send(message(2))).accepted          # now holds a token
    await control(sim, "POST", "/sim/faults", {"latency": 1.0})
    late = await holder.send(message(3))                     # the send itself is too slow
    assert (late.code, late.failure) == ("timeout", Failure.UNKNOWN)
    fresh = await client_for(sim.base_url, timeout=0.3).send(message(4))
    assert (fresh.code, fresh.failure) == ("token_timeout", Failure.TRANSIENT)


@pytest.mark.parametrize(("fault", "status", "detail"), [
    ("fail_rate", "failed: system failed", "failed to deliver"),
    ("block_rate", "failed:user block", "refuses"),
])
async def test_an_accepted_message_can_still_fail_in_its_receipt(
        make_sim: SimFactory, client_for: ClientFactory, receiver: Receiver, fault: str,
        status: str, detail: str) -> None:
    sim = await make_sim(**{fault: 1.0})
    result = await client_for(sim.base_url).send(message(1))
    assert result.accepted
    await eventually(lambda: len(receiver.receipts) == 1, what="the failed receipt")
    receipt = receiver.receipts[0]
    assert not receipt.delivered and receipt.code == status and detail in receipt.detail
    assert (await sim_messages(sim))[0]["fate"] == status


async def test_a_lost_receipt_never_comes(make_sim: SimFactory, client_for: ClientFactory,
                                          receiver: Receiver) -> None:
    sim = await make_sim(lose_receipt_rate=1.0)
    client = client_for(sim.base_url)
    lost = await client.send(message(1))
    await control(sim, "POST", "/sim/faults", {"lose_receipt_rate": 0.0})
    kept = await client.send(message(2))
    assert lost.accepted and kept.accepted
    # The second receipt arriving is the sign that the first is not merely late.
    await eventually(lambda: len(receiver.receipts) == 1 and sim.pending_pushes == 0,
                     what="the second receipt")
    assert list(receiver.by_msgid()) == [kept.provider_message_id]
    assert [m["push"] for m in await sim_messages(sim)] == ["lost", "delivered"]
    assert sim.stats.receipts_lost == 1


async def test_a_delayed_receipt_comes_after_its_delay(
        make_sim: SimFactory, client_for: ClientFactory, receiver: Receiver) -> None:
    sim = await make_sim(receipt_delay=0.4)
    accepted_at = time.monotonic()
    assert (await client_for(sim.base_url).send(message(1))).accepted
    assert sim.pending_pushes == 1
    await eventually(lambda: len(receiver.receipts) == 1, what="the delayed receipt")
    assert receiver.arrived_at[0] - accepted_at >= 0.4


async def test_a_failed_push_is_retried_and_then_given_up(
        make_sim: SimFactory, client_for: ClientFactory, receiver: Receiver) -> None:
    # Given a server URL that fails its first two requests
    receiver.fail_first = 2
    sim = await make_sim(push_retries=3)
    client = client_for(sim.base_url)
    assert (await client.send(message(1))).accepted
    await eventually(lambda: len(receiver.receipts) == 1, what="the retried receipt")
    await eventually(lambda: sim.pending_pushes == 0, what="the push to finish")
    assert (sim.stats.receipt_failures, sim.stats.receipts_sent) == (2, 1)

    # When it fails every time, the simulator gives up after its retries
    receiver.fail_first = 10**6
    assert (await client.send(message(2))).accepted
    await eventually(lambda: sim.stats.receipts_abandoned == 1, what="the push abandoned")
    assert (await sim_messages(sim))[1]["push"] == "abandoned"
    assert sim.stats.receipt_failures == 2 + 4     # the first try and 3 retries


async def test_the_same_seed_draws_the_same_faults(
        make_sim: SimFactory, client_for: ClientFactory, receiver: Receiver) -> None:
    faults = {"busy_rate": 0.3, "fail_rate": 0.2, "block_rate": 0.2, "lose_receipt_rate": 0.2}

    async def run(seed: int) -> list[tuple[str, str]]:
        sim = await make_sim(seed=seed, callback_url=None, **faults)
        client = client_for(sim.base_url)
        codes = [(await client.send(message(n))).code for n in range(1, 31)]
        fates = iter(f"{m['fate']}|{m['push']}" for m in await sim_messages(sim))
        return [(code, next(fates) if code == "0" else "-") for code in codes]

    first = await run(11)
    assert first == await run(11)
    assert first != await run(12)
    assert {code for code, _ in first} == {"0", "-1"}   # both outcomes were drawn
    assert len({fate for _, fate in first}) >= 3          # and several receipt fates


# --- control API and process -------------------------------------------------------------


async def test_faults_are_read_and_changed_at_run_time(
        make_sim: SimFactory, client_for: ClientFactory) -> None:
    sim = await make_sim()
    client = client_for(sim.base_url)
    status, faults = await control(sim, "GET", "/sim/faults")
    assert status == 200 and faults["busy_rate"] == 0.0 and faults["outage"] is False
    status, faults = await control(sim, "POST", "/sim/faults", {"busy_rate": 1.0})
    assert status == 200 and faults["busy_rate"] == 1.0
    assert (await client.send(message(1))).failure is Failure.TRANSIENT
    await control(sim, "POST", "/sim/faults", {"busy_rate": 0.0})
    assert (await client.send(message(1))).accepted
    for bad, word in (({"busy_rte": 1}, "busy_rte"), ({"fail_rate": 2}, "fraction"),
                      ({"latency": -1}, "seconds"), ({"outage": "yes"}, "outage")):
        status, reply = await control(sim, "POST", "/sim/faults", bad)
        assert status == 400 and word in reply["error"]


async def test_messages_are_forgotten_on_request_and_stats_count_them(
        make_sim: SimFactory, client_for: ClientFactory) -> None:
    sim = await make_sim(callback_url=None)
    client = client_for(sim.base_url)
    for n in (1, 2):
        assert (await client.send(message(n))).accepted
    status, stats = await control(sim, "GET", "/sim/stats")
    assert status == 200
    assert (stats["accepted"], stats["quota_used"], stats["tokens_live"]) == (2, 2, 1)
    assert await control(sim, "DELETE", "/sim/messages") == (200, {"removed": 2})
    assert await sim_messages(sim) == []


async def test_runs_as_a_process_and_stops_on_sigterm(client_for: ClientFactory) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.notifier.wechat_sim", "--port", "0",
        "--app-id", APP_ID, "--app-secret", APP_SECRET, "--token", PUSH_TOKEN,
        "--seed", "1", "--busy-rate", "0.5", "--daily-quota", "10",
        cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        base_url = (await asyncio.wait_for(proc.stdout.readline(), timeout=15)).decode().strip()
        assert base_url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as http:
            async with http.get(base_url + "/sim/faults") as resp:
                assert (await resp.json())["busy_rate"] == 0.5
        client = client_for(base_url)
        results: list[SendResult] = [await client.send(message(n)) for n in range(1, 9)]
        assert {r.code for r in results} <= {"0", "-1"} and any(r.accepted for r in results)
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_the_health_check_says_whether_a_token_can_be_had(make_sim: SimFactory,
                                                                client_for: ClientFactory
                                                                ) -> None:
    sim = await make_sim()
    assert await client_for(sim.base_url).check()
    assert not await client_for(sim.base_url, secret="wrong-secret").check()
