"""A local Kuaidi100 stand-in over real HTTP: answers tracking queries, pushes callbacks as
scans "happen", and misbehaves on purpose (drops, duplicates, delays, hangs, errors,
throttling, an exhausted quota) so the status service can be tested against a provider
that fails the way real ones do.

Control API (JSON):
    POST /sim/shipments   one shipment or a list: {"carrier", "tracking_number",
                          "callback_url"?, "freeze_after"?, "scans": [{"stage" or "state",
                          "at" (aware ISO-8601) or "after" (seconds from now),
                          "description"?, "location"?}]}
    DELETE /sim/shipments forget every shipment
    GET /sim/stats        counters
    GET|POST /sim/faults  read / change fault settings at run time
Provider API:
    POST /poll/query.do   Kuaidi100's real-time query, same form, same answers

Faults are drawn from seeded ``random.Random`` generators so runs are reproducible: a
scan's push fate (drop / duplicate / delay) from one seeded by (seed, tracking number, scan
index), independent of timing; query faults from one stream per simulator, in arrival
order. Throttling is a token bucket answered with HTTP 429 and Retry-After: Kuaidi100
documents no rate-limit answer for this API (it asks for at most one query per parcel per
half hour and locks numbers queried more often), so we answer like an HTTP gateway would.

Run as a process: ``python -m services.status.carrier_sim --port 8100 --callback-url URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import math
import random
import time
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web

from services.status.carriers import kuaidi100
from services.status.carriers.model import (
    KUAIDI100_STATES,
    STATE_FOR_STAGE,
    Scan,
    Stage,
    UnknownCarrier,
    UnknownState,
    carrier_code,
    normalize_state,
)
from shared import simserve
from shared.simserve import serve
from shared.timeutil import to_utc, utc_now

log = logging.getLogger(__name__)

PUSH_CONCURRENCY = 50
_DESCRIPTIONS = {
    Stage.PICKED_UP: "【深圳南山营业点】快件已揽收",
    Stage.IN_TRANSIT: "快件已到达【广州转运中心】，正发往下一站",
    Stage.OUT_FOR_DELIVERY: "【北京朝阳】快递员正在派件，请保持电话畅通",
    Stage.DELIVERED: "快件已签收，签收人：本人",
    Stage.EXCEPTION: "快件派送不成功，收件人电话无法接通",
    Stage.RETURNED: "快件已退回寄件人",
}


@dataclass(frozen=True)
class Faults:
    """Fault settings. Fractions are probabilities in [0, 1]."""

    drop_callbacks: float = 0.0        # pushes never sent
    duplicate_callbacks: float = 0.0   # pushes sent twice
    delay_callbacks: float = 0.0       # pushes held back up to max_callback_delay seconds
    max_callback_delay: float = 2.0
    query_timeouts: float = 0.0        # queries that hang timeout_hang seconds, then answer
    timeout_hang: float = 30.0
    query_errors: float = 0.0          # queries answered "server busy" (JSON 502 or HTTP 503)
    rate_limit_per_second: float | None = None  # above it: HTTP 429 + Retry-After
    quota: int | None = None           # total queries allowed, then 601 "key expired"

    def updated(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with ``changes`` applied; raises ValueError naming a bad key or value."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault settings {unknown}; known: {sorted(known)}")
        new = replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        for name in ("drop_callbacks", "duplicate_callbacks", "delay_callbacks",
                     "query_timeouts", "query_errors"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1], not {value!r}")
        for name in ("max_callback_delay", "timeout_hang"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be >= 0 seconds, not {value!r}")
        rate = self.rate_limit_per_second
        if rate is not None and (not isinstance(rate, int | float) or rate <= 0):
            raise ValueError(f"rate_limit_per_second must be > 0 or null, not {rate!r}")
        if self.quota is not None and (not isinstance(self.quota, int) or self.quota < 0):
            raise ValueError(f"quota must be an integer >= 0 or null, not {self.quota!r}")


@dataclass
class Stats:
    queries: int = 0                # every request to the query API, throttled ones too
    query_timeouts: int = 0
    query_errors: int = 0
    throttled: int = 0
    quota_exhausted: int = 0
    sign_failures: int = 0
    scans_due: int = 0              # scans that became visible (for parcels with a callback)
    callbacks_sent: int = 0         # pushes the subscriber answered 2xx (copies included)
    callbacks_dropped: int = 0
    callbacks_duplicated: int = 0   # extra copies scheduled
    callbacks_delayed: int = 0
    callback_failures: int = 0      # failed attempts (non-2xx, refused, timed out)
    callbacks_abandoned: int = 0    # pushes given up after every retry


@dataclass
class _Shipment:
    carrier: str
    tracking_number: str
    callback_url: str | None
    scans: list[Scan]          # oldest first
    times: list[float]         # epoch seconds of scans, for bisect
    generation: int = 0

    def visible(self, now: float) -> list[Scan]:
        return self.scans[:bisect_right(self.times, now)]


@dataclass
class _Push:
    url: str
    form: dict[str, str]
    tracking_number: str
    index: int
    attempt: int = 0


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    what: _Push | tuple[str, int, int] = field(compare=False)  # push, or (number, gen, index)


class CarrierSimulator:
    """Kuaidi100 look-alike. ``await start()`` returns its base URL; ``await stop()``."""

    def __init__(self, *, customer: str = "sim-customer", key: str = "sim-key",
                 salt: str = "sim-salt", callback_url: str | None = None, seed: int = 0,
                 push_retries: int = 3, push_backoff: float = 0.2, push_timeout: float = 5.0,
                 push_concurrency: int = PUSH_CONCURRENCY, **faults: Any) -> None:
        self.customer, self.key, self.salt = customer, key, salt
        self.callback_url = callback_url
        self.seed = seed
        self.faults = Faults().updated(faults)
        self.stats = Stats()
        self.push_retries, self.push_backoff = push_retries, push_backoff
        self.push_timeout, self.push_concurrency = push_timeout, push_concurrency
        self._shipments: dict[str, _Shipment] = {}
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._generations = itertools.count(1)
        self._query_rng = random.Random(f"{seed}|query")
        self._quota_used = 0
        self._tokens = math.inf  # the bucket starts full (capped at the rate on first use)
        self._tokens_at = time.monotonic()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._queue: asyncio.Queue[_Push] = asyncio.Queue()
        self._in_flight = 0  # pushes a worker is delivering right now
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_post(kuaidi100.QUERY_PATH, self._query)
        self.app.router.add_post("/sim/shipments", self._add_shipments)
        self.app.router.add_delete("/sim/shipments", self._clear_shipments)
        self.app.router.add_get("/sim/stats", self._stats)
        self.app.router.add_get("/sim/faults", self._get_faults)
        self.app.router.add_post("/sim/faults", self._set_faults)

    # --- life cycle ----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.push_timeout),
            connector=aiohttp.TCPConnector(limit=self.push_concurrency))
        self._tasks.append(asyncio.create_task(self._schedule(), name="sim-scheduler"))
        self._tasks.extend(asyncio.create_task(self._push_worker(), name=f"sim-push-{n}")
                           for n in range(self.push_concurrency))
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.base_url = f"http://{host}:{bound[1]}"
        log.info("event=carrier_sim_started url=%s seed=%s", self.base_url, self.seed)
        return self.base_url

    async def stop(self) -> None:
        self._stopping.set()  # releases hanging queries at once
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        log.info("event=carrier_sim_stopped %s", _kv(asdict(self.stats)))

    async def __aenter__(self) -> CarrierSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- shipments -----------------------------------------------------------------------

    def add_shipments(self, specs: list[Mapping[str, Any]] | Mapping[str, Any]) -> int:
        """Load shipments (same shape as the control API); all or nothing. Returns count."""
        items = [specs] if isinstance(specs, Mapping) else list(specs)
        now = utc_now()
        parsed = [self._parse_shipment(spec, now, n) for n, spec in enumerate(items)]
        for shipment in parsed:
            shipment.generation = next(self._generations)
            self._shipments[shipment.tracking_number] = shipment
            if shipment.callback_url is None:
                continue  # poll-only parcel: nothing to push
            for index, at in enumerate(shipment.times):
                heapq.heappush(self._heap, _Due(at, next(self._seq), (
                    shipment.tracking_number, shipment.generation, index)))
        self._wake.set()
        return len(parsed)

    def _parse_shipment(self, spec: Any, now: datetime, n: int) -> _Shipment:
        if not isinstance(spec, Mapping):
            raise ValueError(f"shipment {n}: not an object")
        try:
            carrier = carrier_code(spec.get("carrier", ""))
        except UnknownCarrier as exc:
            raise ValueError(f"shipment {n}: {exc}") from exc
        number = spec.get("tracking_number")
        if not isinstance(number, str) or not number.strip():
            raise ValueError(f"shipment {n}: tracking_number must be non-empty text")
        url = spec.get("callback_url") or self.callback_url
        raw_scans = spec.get("scans", [])
        if not isinstance(raw_scans, list):
            raise ValueError(f"shipment {n}: scans must be a list")
        scans = sorted((self._parse_scan(carrier, number.strip(), raw, now, f"{n}.{i}")
                        for i, raw in enumerate(raw_scans)), key=lambda s: s.scanned_at)
        freeze = spec.get("freeze_after")
        if freeze is not None:
            try:
                stage = Stage(freeze)
                cut = next(i for i, s in enumerate(scans) if s.stage == stage)
            except (ValueError, StopIteration) as exc:
                raise ValueError(f"shipment {n}: freeze_after {freeze!r} is not the stage "
                                 f"of any of its scans") from exc
            scans = scans[:cut + 1]  # the parcel goes silent after that stage
        return _Shipment(carrier, number.strip(), url, scans,
                         [s.scanned_at.timestamp() for s in scans])

    @staticmethod
    def _parse_scan(carrier: str, number: str, raw: Any, now: datetime, where: str) -> Scan:
        if not isinstance(raw, Mapping):
            raise ValueError(f"scan {where}: not an object")
        try:
            if "state" in raw:
                state = normalize_state(raw["state"], f"scan {where}")
                stage = KUAIDI100_STATES[state].stage
                if "stage" in raw and Stage(raw["stage"]) != stage:
                    raise ValueError(f"state {state} is {stage}, not {raw['stage']}")
            else:
                stage = Stage(raw.get("stage"))
                state = STATE_FOR_STAGE[stage]
            if "after" in raw:
                at = now + timedelta(seconds=float(raw["after"]))
            elif isinstance(raw.get("at"), str):
                at = to_utc(datetime.fromisoformat(raw["at"]))
            else:
                raise ValueError("needs 'at' (aware ISO-8601 time) or 'after' (seconds)")
        except (ValueError, TypeError, OverflowError, UnknownState) as exc:
            raise ValueError(f"scan {where}: {exc}") from exc
        description = raw.get("description") or _DESCRIPTIONS[stage]
        location = raw.get("location")
        # Precise time drives visibility; the wire format shows whole seconds, as Kuaidi100's.
        return Scan(carrier, number, stage, at, str(description),
                    str(location) if location else None, state)

    # --- scheduler and pusher ------------------------------------------------------------

    async def _schedule(self) -> None:
        """One task for every parcel: pops due scans and due (re)tries off one heap."""
        while True:
            self._wake.clear()
            now = time.time()
            while self._heap and self._heap[0].at <= now:
                due = heapq.heappop(self._heap)
                if isinstance(due.what, _Push):
                    self._queue.put_nowait(due.what)
                else:
                    self._scan_due(*due.what, now=now)
            wait = self._heap[0].at - time.time() if self._heap else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def _scan_due(self, number: str, generation: int, index: int, *, now: float) -> None:
        shipment = self._shipments.get(number)
        if shipment is None or shipment.generation != generation or not shipment.callback_url:
            return
        self.stats.scans_due += 1
        rng = random.Random(f"{self.seed}|push|{number}|{index}")
        drop, duplicate, delay, delay_by = rng.random(), rng.random(), rng.random(), rng.random()
        faults = self.faults
        if drop < faults.drop_callbacks:
            self.stats.callbacks_dropped += 1
            log.debug("event=sim_push_dropped tracking_number=%s index=%d", number, index)
            return
        result = kuaidi100.build_result(shipment.carrier, number, shipment.scans[:index + 1])
        form = kuaidi100.push_form(result, self.salt)
        copies = 1
        if duplicate < faults.duplicate_callbacks:
            copies = 2
            self.stats.callbacks_duplicated += 1
        at = now
        if delay < faults.delay_callbacks:
            at = now + delay_by * faults.max_callback_delay
            self.stats.callbacks_delayed += 1
        for _ in range(copies):
            push = _Push(shipment.callback_url, form, number, index)
            if at > now:
                heapq.heappush(self._heap, _Due(at, next(self._seq), push))
            else:
                self._queue.put_nowait(push)

    async def _push_worker(self) -> None:
        while True:
            push = await self._queue.get()
            self._in_flight += 1
            try:
                await self._deliver(push)
            finally:
                self._in_flight -= 1
                self._queue.task_done()

    async def _deliver(self, push: _Push) -> None:
        assert self._session is not None
        try:
            async with self._session.post(push.url, data=push.form) as resp:
                await resp.read()
                failure = None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            failure = repr(exc)
        if failure is None:
            self.stats.callbacks_sent += 1
            return
        self.stats.callback_failures += 1
        if push.attempt >= self.push_retries:
            self.stats.callbacks_abandoned += 1
            log.warning("event=sim_push_abandoned tracking_number=%s index=%d attempts=%d "
                        "error=%s", push.tracking_number, push.index, push.attempt + 1, failure)
            return
        retry = replace(push, attempt=push.attempt + 1)
        at = time.time() + self.push_backoff * 2 ** push.attempt
        heapq.heappush(self._heap, _Due(at, next(self._seq), retry))
        self._wake.set()

    @property
    def pending_pushes(self) -> int:
        """Pushes queued, in flight or scheduled (retries, delays): not yet done."""
        return (self._queue.qsize() + self._in_flight
                + sum(isinstance(d.what, _Push) for d in self._heap))

    # --- provider API --------------------------------------------------------------------

    async def _query(self, request: web.Request) -> web.StreamResponse:
        self.stats.queries += 1
        form = await request.post()
        wait = self._take_token()
        if wait is not None:
            self.stats.throttled += 1
            return _json(kuaidi100.error_answer("429"), status=429,
                         headers={"Retry-After": str(max(1, math.ceil(wait)))})
        customer, sign, param = (str(form.get(k, "")) for k in ("customer", "sign", "param"))
        if not (customer and sign and param):
            return _json(kuaidi100.error_answer("400", "提交的数据不完整"))
        expected = kuaidi100.query_sign(param, self.key, self.customer)
        if customer != self.customer or not kuaidi100.sign_matches(sign, expected):
            self.stats.sign_failures += 1
            return _json(kuaidi100.error_answer("503"))
        if self.faults.quota is not None and self._quota_used >= self.faults.quota:
            self.stats.quota_exhausted += 1
            return _json(kuaidi100.error_answer("601"))
        self._quota_used += 1
        hang, error, how = (self._query_rng.random() for _ in range(3))
        if hang < self.faults.query_timeouts:
            self.stats.query_timeouts += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.faults.timeout_hang):
                    await self._stopping.wait()
        elif error < self.faults.query_errors:
            self.stats.query_errors += 1
            if how < 0.5:
                return _json(kuaidi100.error_answer("502"))
            return web.Response(status=503, text="503 Service Temporarily Unavailable")
        return _json(self._answer(param))

    def _answer(self, param: str) -> dict[str, Any]:
        try:
            query = json.loads(param)
            com, number = str(query["com"]), str(query["num"])
        except (ValueError, KeyError, TypeError):
            return kuaidi100.error_answer("400", "提交的数据不完整")
        try:
            carrier = carrier_code(com)
        except UnknownCarrier:
            return kuaidi100.error_answer("400")
        shipment = self._shipments.get(number.strip())
        visible = shipment.visible(time.time()) if shipment else []
        if shipment is None or shipment.carrier != carrier or not visible:
            return kuaidi100.error_answer("500")
        return kuaidi100.build_result(carrier, shipment.tracking_number, visible,
                                      order=str(query.get("order", "desc")))

    def _take_token(self) -> float | None:
        """Token bucket; None when the query may pass, else seconds until a token."""
        rate = self.faults.rate_limit_per_second
        if rate is None:
            return None
        now = time.monotonic()
        capacity = max(1.0, rate)
        self._tokens = min(capacity, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / rate

    # --- control API ---------------------------------------------------------------------

    async def _add_shipments(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            count = self.add_shipments(body)
        except ValueError as exc:
            return _json({"error": str(exc)}, status=400)
        return _json({"accepted": count})

    async def _clear_shipments(self, request: web.Request) -> web.StreamResponse:
        count = len(self._shipments)
        self._shipments.clear()
        return _json({"removed": count})

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        return _json({**asdict(self.stats), "shipments": len(self._shipments),
                      "pending_pushes": self.pending_pushes})

    async def _get_faults(self, request: web.Request) -> web.StreamResponse:
        return _json(asdict(self.faults))

    async def _set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object of fault settings")
            self.faults = self.faults.updated(changes)
        except ValueError as exc:
            return _json({"error": str(exc)}, status=400)
        if "rate_limit_per_second" in changes:
            self._tokens, self._tokens_at = math.inf, time.monotonic()
        log.info("event=sim_faults_changed %s", _kv(asdict(self.faults)))
        return _json(asdict(self.faults))


def _json(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
          ) -> web.Response:
    # Raw UTF-8 Chinese, as Kuaidi100 answers, not \\u escapes.
    return web.json_response(body, status=status, headers=headers,
                             dumps=lambda v: json.dumps(v, ensure_ascii=False))


def _kv(values: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())


# --- process entry point -----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m services.status.carrier_sim",
                                description="Local Kuaidi100 simulator with fault injection.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--callback-url", default=None, help="default push target")
    p.add_argument("--customer", default="sim-customer")
    p.add_argument("--key", default="sim-key")
    p.add_argument("--salt", default="sim-salt")
    p.add_argument("--seed", type=int, default=0)
    for name, kind in (("drop_callbacks", float), ("duplicate_callbacks", float),
                       ("delay_callbacks", float), ("max_callback_delay", float),
                       ("query_timeouts", float), ("timeout_hang", float),
                       ("query_errors", float), ("rate_limit_per_second", float),
                       ("quota", int)):
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    return p


async def _serve(args: argparse.Namespace) -> None:
    faults = {name: getattr(args, name) for name in (f.name for f in fields(Faults))
              if getattr(args, name) is not None}
    sim = CarrierSimulator(customer=args.customer, key=args.key, salt=args.salt,
                           callback_url=args.callback_url, seed=args.seed, **faults)
    await serve(sim, args.host, args.port)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return simserve.main("carrier_sim", lambda: _serve(args))


if __name__ == "__main__":
    raise SystemExit(main())
