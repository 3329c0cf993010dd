#!/usr/bin/env python3
"""Contact limiter benchmark: decisions per second, side by side, on embedded Valkey (127.0.0.1 only).

    PYTHONPATH=. /work/venv/bin/python bench/contact_limiter.py [--seconds 4] [--concurrency 32]

Compares, in one run against the same Redis:
  lua-3-buckets   the production path: one EVALSHA deciding all three buckets atomically
  3x-lua-1-bucket the naive peer: the same script called once per bucket (three round trips,
                  and not atomic across buckets: a refusal by the third still spent the first two)
and, over HTTP against a real server, the throttled path (profile lookup + limiter + 429 envelope)
next to GET /healthz (the cheapest route), so the cost of rejecting abuse is visible as a ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.asyncio import Redis  # noqa: E402
from tornado.httpclient import AsyncHTTPClient  # noqa: E402
from tornado.httpserver import HTTPServer  # noqa: E402
from tornado.netutil import bind_sockets  # noqa: E402

from contact.limiter import DAY, ContactLimiter, Rule, Rules  # noqa: E402
from runtime.app import make_app  # noqa: E402
from runtime.config import load_config  # noqa: E402
from runtime.embedded import EmbeddedStores  # noqa: E402
from runtime.logs import setup_logging  # noqa: E402
from runtime.services import build_services  # noqa: E402
from store.importer import import_document  # noqa: E402

# Huge buckets so every call is a full decision (allowed), never a cheap early refusal.
OPEN = Rules(burst=Rule("burst", 10**9, 60), daily=Rule("daily", 10**9, DAY),
             owner={c: Rule("owner", 10**9, DAY) for c in ("sms", "email", "discord")})


async def run_for(seconds: float, concurrency: int, call) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(n: int) -> None:
        nonlocal done
        for i in itertools.count():
            if time.perf_counter() >= deadline:
                return
            await call(n, i)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return done / (time.perf_counter() - start)


async def bench_limiter(redis_url: str, seconds: float, concurrency: int) -> dict:
    client = Redis.from_url(redis_url, decode_responses=True, max_connections=concurrency + 4)
    limiter = ContactLimiter(client, OPEN)
    script = limiter._script

    async def triple(n: int, i: int) -> None:
        await limiter.acquire("owner", "profile", f"10.0.{n}.{i % 200}", "discord")

    async def one_by_one(n: int, i: int) -> None:
        keys = ContactLimiter.keys("owner", "profile", f"10.0.{n}.{i % 200}", "discord")
        for key in keys:
            await script(keys=[key], args=[10**9, 60])

    results = {}
    for name, call in (("lua-3-buckets", triple), ("3x-lua-1-bucket", one_by_one)):
        await client.flushdb()
        results[name] = await run_for(seconds, concurrency, call)
    await client.aclose()
    return results


async def bench_http(mongo_uri: str, redis_url: str, seconds: float, concurrency: int) -> dict:
    config = load_config(environ={}, mongo_uri=mongo_uri, redis_url=redis_url, mongo_db="bench", port=0,
                         log_level="error")
    services = await build_services(config, mongo_uri, redis_url)
    doc = json.loads(json.dumps({"users": [{"id": "u1", "premium_until": "2099-01-01T00:00:00Z",
                                             "discord": {"channel_id": "1", "bot_present": True}}],
                                  "profiles": [{"id": "p1", "owner_id": "u1", "domain": "bench.hep.gg",
                                                "is_public": 1, "toggles": {"contact_discord": True}}]}))
    report = await import_document(services.db, doc)
    assert report.ok, report.errors
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(make_app(services))
    server.add_sockets(sockets)
    base = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    client = AsyncHTTPClient(force_instance=True, max_clients=concurrency)
    body = json.dumps({"message": "hi", "turnstileToken": "x"})

    async def throttled(n: int, i: int) -> None:
        response = await client.fetch(base + "/api/v1/profiles/p1/contact/discord", method="POST", body=body,
                                      raise_error=False)
        assert response.code == 429 or i < 3, response.code

    async def healthz(n: int, i: int) -> None:
        await client.fetch(base + "/healthz", raise_error=False)

    results = {}
    try:
        for name, call in (("http-429-throttled", throttled), ("http-healthz", healthz)):
            results[name] = await run_for(seconds, concurrency, call)
    finally:
        client.close()
        server.stop()
        await services.close()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    setup_logging("error")  # 429s are the point here, not warnings
    with tempfile.TemporaryDirectory() as data_dir:
        stores = EmbeddedStores(Path(data_dir))
        endpoints = stores.start()
        try:
            limiter = await bench_limiter(endpoints.redis_url, args.seconds, args.concurrency)
            http = await bench_http(endpoints.mongo_uri, endpoints.redis_url, args.seconds, min(args.concurrency, 16))
        finally:
            stores.stop()
    print(f"{'path':20} {'ops/s':>10}")
    for name, rate in {**limiter, **http}.items():
        print(f"{name:20} {rate:10.0f}")
    print(f"ratio lua-3-buckets / 3x-lua-1-bucket: {limiter['lua-3-buckets'] / limiter['3x-lua-1-bucket']:.2f}x")
    print(f"ratio http-429-throttled / http-healthz: {http['http-429-throttled'] / http['http-healthz']:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
