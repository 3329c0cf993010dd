"""Faults survived, nothing lost (issue 10): real store servers stopped and restarted, hung third parties.

Every store fault runs against a private Valkey and SecantusDB (tests/private_stores.py)
that the test stops and starts on the same port while one hepgg_server keeps running:
no mocks and no restart of the server. After each fault, what the stores hold is
compared with what was sent: views, plays and credits must reconcile exactly.

Related faults covered elsewhere (not repeated here): a Redis kill mid-stream with
instant restart (test_presence_resilience.py), a Redis URL unreachable from the
start (test_contact_limits.py), SMS 500/slow/unreachable, Discord 4xx/429 and SMTP
rejections with refunds (test_contact.py), a music worker that hangs before its
headers or stalls mid-body (test_music.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
import redis.asyncio as aioredis

from conftest import base_document
from contact_fakes import contact_settings
from music_upstream import Upstream
from presence.writer import write_presence
from presence_client import SSEClient
from private_stores import private_stores  # noqa: F401  (fixture)
from store.stats import read_stats

ISRC = "USRC17607839"
MUSIC = f"/api/v1/profiles/p1/music/{ISRC}"
CONTACT = "/api/v1/profiles/p1/contact/{channel}"
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) Faults/1.0"
FORMS = {
    "sms": {"message": "Hello", "turnstileToken": "good-token"},
    "email": {"email": "visitor@example.com", "subject": "Hi", "message": "Hello", "turnstileToken": "good-token"},
    "discord": {"handle": "Jamie", "message": "Hello", "turnstileToken": "good-token"},
}


async def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture
async def upstream():
    up = Upstream().start()
    yield up
    await up.stop()


@pytest.fixture
async def server(private_stores, make_server, fakes, upstream):  # noqa: F811  (stores outlive the server)
    server = await make_server(**contact_settings(
        fakes, mongo_uri=private_stores.mongo_uri, redis_url=private_stores.redis_url,
        music_upstream_url=upstream.url, music_connect_timeout=1.0, music_stall_timeout=1.0,
        profile_cache_ttl=300, view_flush_interval=0.2, sse_ping_interval=0.5))
    await server.load(base_document())
    return server


_ips = iter(range(1, 60000))


async def view(server, ip: str | None = None):
    ip = ip or f"198.18.{(n := next(_ips)) // 250}.{n % 250 + 1}"
    return await server.fetch("/", host="alice.hep.gg", headers={"User-Agent": BROWSER_UA, "X-Forwarded-For": ip})


async def contact(server, channel: str):
    n = next(_ips)
    return await server.fetch(CONTACT.format(channel=channel), json=FORMS[channel],
                              headers={"X-Forwarded-For": f"198.19.{n // 250}.{n % 250 + 1}"})


async def stored(server) -> dict:
    return await read_stats(server.services.db, "p1")


async def owner(server) -> dict:
    return await server.services.db.users.find_one({"_id": "u1"})


# ---------------------------------------------------------------- Redis stopped and restarted

async def test_redis_down_page_renders_presence_null_streams_resync_contact_503_views_kept(server, private_stores):
    stores = private_stores
    writer = aioredis.Redis.from_url(stores.redis_url, decode_responses=True)
    hub = server.services.presence.hub
    stream = await SSEClient.open(server.port, "/api/v1/profiles/presence/u1/stream")
    try:
        assert await stream.event() is None
        first = await write_presence(writer, "u1", {"status": "online"})
        assert await stream.event() == first
        # Changed without a publish: only a resync after the outage can bring this to the stream.
        current = {"status": "dnd", "updatedAt": "2026-05-29T12:00:00.000Z"}
        await writer.set("presence:u1", json.dumps(current), ex=300)
        await writer.aclose()
        before_views = [await view(server) for _ in range(5)]
        assert {r.code for r in before_views} == {200}

        await asyncio.to_thread(stores.redis.stop)  # SIGTERM: Valkey writes its append-only file and exits
        await wait_until(lambda: not hub.connected.is_set(), timeout=10)

        down_views = [await view(server) for _ in range(20)]
        assert {r.code for r in down_views} == {200}, "the page does not need Redis"
        assert b"Alice" in down_views[0].body
        snapshot = await server.fetch("/api/v1/profiles/presence/u1")
        assert (snapshot.code, json.loads(snapshot.body)) == (200, {"ok": True, "data": {"presence": None}})
        for channel in ("sms", "email", "discord"):
            response = await contact(server, channel)
            assert (response.code, json.loads(response.body)["error"]) == (
                503, "Contact forms are temporarily unavailable, please try again later")
        assert (await server.fetch("/readyz")).code == 503
        # The open stream stays open through the outage: keepalives still arrive.
        assert (await stream.block(timeout=3)).startswith(":")
        assert hub.listener_count == 1
        await asyncio.sleep(1.0)  # a few failed flushes
        assert server.services.stats.pending >= 20, "views recorded while Redis is down are kept"

        await asyncio.to_thread(stores.redis.start)
        # Back: the stream gets the current snapshot (which changed without a publish) ...
        assert await stream.event(timeout=15) == current
        # ... and the next change through the new subscription.
        writer = aioredis.Redis.from_url(stores.redis_url, decode_responses=True)
        later = await write_presence(writer, "u1", {"status": "idle"})
        assert await stream.event(timeout=5) == later
        # Every view, including the 20 made during the outage, reaches MongoDB exactly once.
        await wait_until(lambda: server.services.stats.pending == 0)
        assert (await stored(server))["views"] == 25
        response = await contact(server, "sms")
        assert response.code == 200
        assert (await owner(server))["sms_credits"] == 4  # the three refused sends cost nothing
        assert (await server.fetch("/readyz")).code == 200
    finally:
        stream.close()
        await writer.aclose()


# ---------------------------------------------------------------- MongoDB stopped and restarted

async def test_mongo_down_503_with_retry_after_then_recovers_without_restart(server, private_stores, upstream):
    stores = private_stores
    stats = server.services.stats
    watcher = server.services.change_watcher
    await wait_until(watcher.active.is_set, timeout=10)
    # Views and plays made just before MongoDB dies: hold the flusher so they are still in memory.
    async with stats._lock:
        assert {(await view(server)).code for _ in range(10)} == {200}
        for _ in range(3):
            response = await server.fetch(MUSIC)
            assert response.code == 200 and response.body == upstream.body
        assert stats.pending == 13
        # SIGTERM: SecantusDB loses its last acknowledged writes on SIGKILL (no WT log sync; see
        # docs/resilience.md), which would be a test of the embedded store, not of hepgg_server.
        await asyncio.to_thread(stores.mongo.stop)

    # Cached sites are served until the change stream reports the gap (or the TTL ends), then every
    # lookup goes to MongoDB and fails within the driver's server-selection timeout.
    await wait_until(lambda: not watcher.active.is_set(), timeout=15)
    started = time.monotonic()
    page, ready, music, og, response = await asyncio.gather(
        view(server), server.fetch("/readyz"), server.fetch(MUSIC), server.fetch("/api/v1/profiles/p1/og.png"),
        contact(server, "discord"))
    assert time.monotonic() - started < 8, "bounded by the driver's server-selection timeout (5 s)"
    assert page.code == 503
    assert page.headers["Retry-After"] == "5"
    assert page.headers["Content-Type"].startswith("text/html") and b"Traceback" not in page.body
    assert ready.code == 503 and json.loads(ready.body)["data"]["stores"] == {"mongo": False, "redis": True}
    assert (music.code, music.body, music.headers["Retry-After"]) == (503, b"", "5")
    assert (og.code, og.headers["Retry-After"]) == (503, "5")
    assert (response.code, json.loads(response.body)["error"], response.headers["Retry-After"]) == (
        503, "Contact forms are temporarily unavailable, please try again later", "5")

    await asyncio.to_thread(stores.mongo.start)
    # Recovery without restarting hepgg_server: pages, the batched writes and the change stream.
    await wait_until(lambda: _code_is(server, "/", 200), timeout=30)
    await wait_until(lambda: stats.pending == 0, timeout=30)
    assert (await server.fetch("/readyz")).code == 200
    await wait_until(watcher.active.is_set, timeout=30)
    await server.services.db.profiles.update_one({"_id": "p1"}, {"$set": {"content.display_name": "Renamed"}})
    # the cache TTL is 300 s here: only the re-opened change stream can make this visible
    await wait_until(lambda: _body_has(server, b"Renamed"), timeout=10)
    await stats.flush()
    totals = await stored(server)
    assert totals == {"profile_id": "p1", "views": 10, "plays": 3, "plays_by_isrc": {ISRC: 3}}


async def _code_is(server, path: str, code: int) -> bool:
    return (await server.fetch(path, host="alice.hep.gg", headers={"User-Agent": "curl/8"})).code == code


async def _body_has(server, needle: bytes) -> bool:
    return needle in (await server.fetch("/", host="alice.hep.gg", headers={"User-Agent": "curl/8"})).body
