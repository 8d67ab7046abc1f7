"""A local WeCom (企业微信) group-robot webhook over real HTTP, with seeded fault injection.

The real robot (``POST /cgi-bin/webhook/send?key=KEY``) cannot be reached from tests or the
demo, so this stands in for it and answers the way it does: HTTP 200 with an ``errcode`` in
the body for business errors, so a client that only looks at the status code is caught out.

What it checks, in the order a request meets it:

- injected faults first (they stand for the infrastructure in front of the robot): a seeded
  draw per request decides whether the request hangs (``timeout_rate``) or gets a 502
  (``error_rate``); the same seed and request sequence always give the same faults;
- ``key`` must match: otherwise ``93000 invalid webhook url``;
- the body must be a JSON object with a known ``msgtype`` (``40008``) whose content is a
  non-empty string (``44004 empty content``) of at most 4096 UTF-8 bytes for ``markdown`` and
  2048 for ``text`` (``40058 ... exceed max length``); ``mentioned_mobile_list`` must be a list
  of strings (``40058``);
- at most ``rate_per_minute`` accepted messages per rolling ``window_seconds`` (``45009 api
  freq out of limit``). Only accepted messages count: the real robot does not document how
  it counts refused ones.

Run it on its own with ``python -m services.status.robot_sim --port 8099 --key demo``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import time
from collections import Counter, deque
from typing import Any

from aiohttp import web

from shared.simserve import serve

log = logging.getLogger(__name__)

SEND_PATH = "/cgi-bin/webhook/send"
CONTENT_LIMITS = {"markdown": 4096, "text": 2048}  # UTF-8 bytes, as the robot documents


def _answer(errcode: int, errmsg: str) -> web.Response:
    """Business answers are HTTP 200 with the code in the body, as on the real robot."""
    if errcode:
        errmsg = f"{errmsg}, hint: [simulator], more info at robot_sim?e={errcode}"
    return web.json_response({"errcode": errcode, "errmsg": errmsg})


class RobotSimulator:
    """One group robot: validates like WeCom, limits like WeCom, fails when told to.

    ``received`` holds every accepted message body (the parsed JSON) in arrival order;
    ``stats`` counts requests by outcome (``requests``, ``accepted``, ``invalid_key``,
    ``invalid_content``, ``throttled``, ``error_5xx``, ``hung``).
    """

    def __init__(
        self,
        key: str = "sim-key",
        rate_per_minute: int = 20,
        seed: int = 0,
        error_rate: float = 0.0,
        timeout_rate: float = 0.0,
        hang_seconds: float = 30.0,
        *,
        window_seconds: float = 60.0,
    ) -> None:
        if not 0.0 <= error_rate + timeout_rate <= 1.0:
            raise ValueError("error_rate + timeout_rate must lie in [0, 1]")
        self.key = key
        self.rate_per_minute = rate_per_minute
        self.window_seconds = window_seconds  # 60 s on WeCom; shorter keeps tests fast
        self.error_rate = error_rate
        self.timeout_rate = timeout_rate
        self.hang_seconds = hang_seconds
        self.received: list[dict[str, Any]] = []
        self.stats: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._accepted_at: deque[float] = deque()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 = any free port); return the full webhook URL."""
        app = web.Application()
        app.router.add_post(SEND_PATH, self._send)
        self._stopping.clear()
        # Hanging handlers end as soon as stop() is called, so a short shutdown suffices.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}{SEND_PATH}?key={self.key}"
        log.info("event=robot_sim_started host=%s port=%s", bound_host, bound_port)
        return self.url

    async def stop(self) -> None:
        """Release hanging requests (they get a 503) and close the listener."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            log.info("event=robot_sim_stopped stats=%s", dict(self.stats))

    async def _send(self, request: web.Request) -> web.StreamResponse:
        self.stats["requests"] += 1
        draw = self._rng.random()  # one draw per request keeps a seeded run reproducible
        if draw < self.timeout_rate:
            self.stats["hung"] += 1
            try:
                await asyncio.wait_for(self._stopping.wait(), self.hang_seconds)
            except TimeoutError:
                pass
            return web.Response(status=503, text="upstream hung")
        if draw < self.timeout_rate + self.error_rate:
            self.stats["error_5xx"] += 1
            return web.Response(status=502, text="bad gateway (injected)")

        if request.query.get("key") != self.key:
            self.stats["invalid_key"] += 1
            return _answer(93000, "invalid webhook url")
        try:
            body = json.loads(await request.read())
        except (UnicodeDecodeError, ValueError):
            self.stats["invalid_content"] += 1
            return _answer(40058, "invalid json. Invalid input invalid Request Parameter")
        problem = _content_problem(body)
        if problem is not None:
            self.stats["invalid_content"] += 1
            return _answer(*problem)

        now = time.monotonic()
        while self._accepted_at and self._accepted_at[0] <= now - self.window_seconds:
            self._accepted_at.popleft()
        if len(self._accepted_at) >= self.rate_per_minute:
            self.stats["throttled"] += 1
            return _answer(45009, "api freq out of limit")
        self._accepted_at.append(now)
        self.received.append(body)
        self.stats["accepted"] += 1
        return _answer(0, "ok")


def _content_problem(body: Any) -> tuple[int, str] | None:
    """The (errcode, errmsg) WeCom would answer for this body, or None when it is valid."""
    if not isinstance(body, dict):
        return 40058, "invalid Request Parameter"
    msgtype = body.get("msgtype")
    if msgtype not in CONTENT_LIMITS:
        return 40008, "invalid message type"
    section = body.get(msgtype)
    content = section.get("content") if isinstance(section, dict) else None
    if not isinstance(content, str) or not content:
        return 44004, "empty content"
    limit = CONTENT_LIMITS[msgtype]
    if len(content.encode("utf-8")) > limit:
        return 40058, f"{msgtype}.content exceed max length {limit}. Invalid input"
    for field in ("mentioned_list", "mentioned_mobile_list"):
        value = section.get(field)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(v, str) for v in value)
        ):
            return 40058, f"{msgtype}.{field} invalid. Invalid input"
    return None


async def _serve(args: argparse.Namespace) -> None:
    sim = RobotSimulator(
        key=args.key, rate_per_minute=args.rate, seed=args.seed,
        error_rate=args.error_rate, timeout_rate=args.timeout_rate,
    )
    try:
        await serve(sim, args.host, args.port)
    finally:
        print(json.dumps(dict(sim.stats), sort_keys=True), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.status.robot_sim",
        description="Local WeCom group-robot webhook; prints its URL, stops on SIGINT/SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--key", default="sim-key", help="the webhook key the robot accepts")
    parser.add_argument("--rate", type=int, default=20, help="accepted messages per minute")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--error-rate", type=float, default=0.0, help="share answered 502")
    parser.add_argument("--timeout-rate", type=float, default=0.0, help="share left hanging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
