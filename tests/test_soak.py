"""A bounded mixed soak (issue 10): SSE + music + pages + contacts against `hepgg_server.py serve`.

The server is a real `serve` subprocess (so its /proc/<pid> can be read) on the
session stores, with the local third-party fakes. A warm-up round of the same
load brings pools and caches to their steady size; then the soak runs for
HEPGG_SOAK_SECONDS (default 60 in the suite; 120 or more for a longer look). After the load stops
we require: zero 5xx,
file descriptors and asyncio tasks back to the warm-up baseline (small stated
slack for pooled connections), RSS within a stated tolerance of the warm-up
RSS, and views, plays and credits reconciling exactly with what was sent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from tornado.httpclient import AsyncHTTPClient

from presence.writer import write_presence
from store.importer import import_document
from store.stats import read_stats

from conftest import ROOT, base_document, free_port, metric_value, wait_until, wait_until_serving
from contact_fakes import third_party_flags
from music_upstream import Upstream
from presence_client import SSEClient

SOAK_SECONDS = float(os.environ.get("HEPGG_SOAK_SECONDS", "60"))
WARMUP_SECONDS = min(15.0, max(3.0, SOAK_SECONDS / 4))
FD_SLACK = 8  # pooled store/upstream connections may settle at a slightly different size
RSS_SLACK = 10 * 1024 * 1024  # allocator noise; a per-request leak over minutes of load is far larger
TASK_SLACK = 2
SSE_LISTENERS = 40
ISRC = "USRC17607839"
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) Soak/1.0"
SMS_CREDITS = 1000

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SOAK_SECONDS + WARMUP_SECONDS + 120)]


def proc_numbers(pid: int) -> dict:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return {"fds": fds, "rss": int(status["VmRSS"].split()[0]) * 1024, "threads": int(status["Threads"])}


class Load:
    """The mixed load; every answer is tallied by route and status."""

    def __init__(self, base: str, port: int, redis_url: str):
        self.base = base
        self.port = port
        self.redis_url = redis_url
        self.http = AsyncHTTPClient(force_instance=True, max_clients=20)
        self.codes: collections.Counter = collections.Counter()
        self.views = 0  # 200 pages from a browser, each from its own address
        self.plays = 0  # whole tracks received from byte 0, each by a new visitor
        self.sms_sent = 0
        self.sse_events = 0
        self.ips = itertools.count(1)

    def ip(self) -> str:
        n = next(self.ips)
        return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"

    async def fetch(self, kind: str, path: str, **kwargs):
        response = await self.http.fetch(self.base + path, raise_error=False, request_timeout=30, **kwargs)
        self.codes[(kind, response.code)] += 1
        return response

    async def pages(self, until: float) -> None:
        while time.monotonic() < until:
            response = await self.fetch(
                "page", "/", headers={"Host": "alice.hep.gg", "User-Agent": BROWSER_UA, "X-Forwarded-For": self.ip()}
            )
            self.views += response.code == 200

    async def music(self, until: float, body: bytes) -> None:
        while time.monotonic() < until:
            # Each listener from its own address: one visitor's repeats within 30 s are one play (music/plays.py).
            headers = {"User-Agent": BROWSER_UA, "X-Forwarded-For": self.ip()}
            response = await self.fetch("music", f"/api/v1/profiles/p1/music/{ISRC}", headers=headers)
            self.plays += response.code == 200 and response.body == body

    async def contacts(self, until: float) -> None:
        forms = [
            ("sms", {"message": "soak", "turnstileToken": "good-soak"}),
            ("discord", {"handle": "Soak", "message": "soak", "turnstileToken": "good-soak"}),
        ]
        for channel, form in itertools.cycle(forms):
            if time.monotonic() >= until:
                return
            response = await self.fetch(
                f"contact-{channel}",
                f"/api/v1/profiles/p1/contact/{channel}",
                method="POST",
                body=json.dumps(form),
                headers={"Content-Type": "application/json", "X-Forwarded-For": self.ip()},
            )
            if channel == "sms" and response.code == 200:
                self.sms_sent += 1
            await asyncio.sleep(1.0)

    async def sse(self, until: float) -> None:
        """SSE_LISTENERS streams held open; a quarter of them replaced every 5 s (reconnect churn)."""
        path = "/api/v1/profiles/presence/u1/stream"
        clients = [await SSEClient.open(self.port, path) for _ in range(SSE_LISTENERS)]
        readers = {client: asyncio.create_task(self._drain(client)) for client in clients}
        try:
            while time.monotonic() < until:
                await asyncio.sleep(5)
                for client in random.sample(list(readers), SSE_LISTENERS // 4):
                    readers.pop(client).cancel()
                    client.close()
                    fresh = await SSEClient.open(self.port, path)
                    self.codes[("sse", fresh.status)] += 1
                    readers[fresh] = asyncio.create_task(self._drain(fresh))
        finally:
            for client, task in readers.items():
                task.cancel()
                client.close()
            await asyncio.gather(*readers.values(), return_exceptions=True)

    async def _drain(self, client: SSEClient) -> None:
        while await client.block(timeout=60) is not None:
            self.sse_events += 1

    async def presence_writer(self, until: float) -> None:
        redis = aioredis.Redis.from_url(self.redis_url, decode_responses=True)
        try:
            for status in itertools.cycle(["online", "idle", "dnd"]):
                if time.monotonic() >= until:
                    return
                await write_presence(redis, "u1", {"status": status})
                await asyncio.sleep(0.5)
        finally:
            await redis.aclose()

    async def run(self, seconds: float, track: bytes) -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(
            self.sse(until),
            self.presence_writer(until),
            self.contacts(until),
            *(self.pages(until) for _ in range(3)),
            *(self.music(until, track) for _ in range(2)),
        )

    def server_errors(self) -> dict:
        return {f"{kind} {code}": n for (kind, code), n in self.codes.items() if code >= 500 or code == 599}


async def metric(http: AsyncHTTPClient, base: str, name: str, **labels: str) -> float:
    return metric_value((await http.fetch(base + "/metrics")).body, name, **labels)


async def test_mixed_soak_leaves_nothing_behind(store_urls, fakes, tmp_path):
    upstream = Upstream().start()
    db_name = f"soak{os.getpid()}_{random.randrange(1 << 30)}"
    mongo = AsyncMongoClient(store_urls.mongo_uri, tz_aware=True)
    db = mongo[db_name]
    document = copy.deepcopy(base_document())
    document["users"][0]["sms_credits"] = SMS_CREDITS
    report = await import_document(db, document)
    assert report.ok, report.errors
    port = free_port()
    argv = [
        sys.executable,
        str(ROOT / "hepgg_server.py"),
        "serve",
        "--port",
        str(port),
        "--processes",
        "1",
        "--data-dir",
        str(tmp_path / "data"),
        "--mongo-uri",
        store_urls.mongo_uri,
        "--redis-url",
        store_urls.redis_url,
        "--mongo-db",
        db_name,
        "--trusted-proxies",
        "127.0.0.1/32",
        "--music-upstream-url",
        upstream.url,
        *third_party_flags(fakes),
        "--og-render-processes",
        "1",
        "--view-flush-interval",
        "0.5",
        "--sse-ping-interval",
        "5",
        "--log-level",
        "warning",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEPGG_")}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    load = Load(base, port, store_urls.redis_url)
    probe = AsyncHTTPClient(force_instance=True)
    try:
        await asyncio.to_thread(wait_until_serving, proc, port, "/readyz")

        async def settled(baseline: dict | None = None) -> dict:
            """Numbers once the load has stopped and the server let go of it: no stream open, every view and
            play the load got written, and (after the soak) fds and tasks back within the slack of the
            baseline, or still above it after 10 s, which the asserts below then report."""

            async def let_go() -> bool:
                return (
                    await metric(probe, base, "hepgg_open_streams") == 0
                    and await metric(probe, base, "hepgg_stats_flushed_total", kind="view") == load.views
                    and await metric(probe, base, "hepgg_stats_flushed_total", kind="play") == load.plays
                )

            async def back_to(baseline: dict) -> bool:
                return (
                    proc_numbers(proc.pid)["fds"] <= baseline["fds"] + FD_SLACK
                    and await metric(probe, base, "hepgg_asyncio_tasks") <= baseline["tasks"] + TASK_SLACK
                )

            await wait_until(let_go, timeout=15, interval=0.1, message="streams open or events unwritten")
            if baseline is not None:
                with contextlib.suppress(AssertionError):
                    await wait_until(lambda: back_to(baseline), timeout=10, interval=0.2)
            numbers = proc_numbers(proc.pid)
            numbers["tasks"] = await metric(probe, base, "hepgg_asyncio_tasks")
            numbers["open_streams"] = await metric(probe, base, "hepgg_open_streams")
            return numbers

        await load.run(WARMUP_SECONDS, upstream.body)
        warm = await settled()
        started = time.monotonic()
        await load.run(SOAK_SECONDS, upstream.body)
        soak_time = time.monotonic() - started
        after = await settled(warm)

        stats = await read_stats(db, "p1")
        credits = (await db.users.find_one({"_id": "u1"}))["sms_credits"]
        summary = {
            "soak_seconds": round(soak_time, 1),
            "warm": warm,
            "after": after,
            "rss_growth_kib": (after["rss"] - warm["rss"]) // 1024,
            "requests": sum(load.codes.values()),
            "codes": {f"{k} {c}": n for (k, c), n in sorted(load.codes.items())},
            "views_sent": load.views,
            "views_stored": stats["views"],
            "plays_sent": load.plays,
            "plays_stored": stats["plays"],
            "sms_sent": load.sms_sent,
            "sms_credits_left": credits,
            "sse_blocks_received": load.sse_events,
        }
        print("SOAK", json.dumps(summary))
        (tmp_path / "soak.json").write_text(json.dumps(summary, indent=1))

        assert load.server_errors() == {}, load.server_errors()
        assert after["open_streams"] == 0
        assert after["fds"] <= warm["fds"] + FD_SLACK, (warm, after)
        assert after["tasks"] <= warm["tasks"] + TASK_SLACK, (warm, after)
        assert after["rss"] <= warm["rss"] + RSS_SLACK, (warm, after)
        assert (stats["views"], stats["plays"]) == (load.views, load.plays)
        assert stats["plays_by_isrc"] == {ISRC: load.plays}
        assert credits == SMS_CREDITS - load.sms_sent
        assert load.views > 100 and load.plays > 20 and load.sse_events > SSE_LISTENERS
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        probe.close()
        load.http.close()
        await upstream.stop()
        await mongo.drop_database(db_name)
        await mongo.close()
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
