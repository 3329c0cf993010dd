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
import time

import pytest
import redis.asyncio as aioredis

from handlers.errors import answer_for
from presence.writer import write_presence
from store.outages import RETRY_AFTER_SECONDS
from store.stats import read_stats

from conftest import base_document, wait_until
from contact_fakes import contact_settings
from presence_client import SSEClient

pytestmark = pytest.mark.slow  # private store processes stopped, hung and restarted; third parties timing out

ISRC = "USRC17607839"
MUSIC = f"/api/v1/profiles/p1/music/{ISRC}"
CONTACT = "/api/v1/profiles/p1/contact/{channel}"
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) Faults/1.0"
FORMS = {
    "sms": {"message": "Hello", "turnstileToken": "good-token"},
    "email": {"email": "visitor@example.com", "subject": "Hi", "message": "Hello", "turnstileToken": "good-token"},
    "discord": {"handle": "Jamie", "message": "Hello", "turnstileToken": "good-token"},
}


@pytest.fixture
async def server(private_stores, make_server, fakes, upstream):  # stores listed first: they outlive the server
    server = await make_server(
        **contact_settings(
            fakes,
            mongo_uri=private_stores.mongo_uri,
            redis_url=private_stores.redis_url,
            music_upstream_url=upstream.url,
            music_connect_timeout=1.0,
            music_stall_timeout=1.0,
            profile_cache_ttl=300,
            view_flush_interval=0.2,
            sse_ping_interval=0.5,
        )
    )
    await server.load(base_document())
    return server


_ips = iter(range(1, 60000))


async def view(server, ip: str | None = None):
    ip = ip or f"198.18.{(n := next(_ips)) // 250}.{n % 250 + 1}"
    return await server.fetch("/", host="alice.hep.gg", headers={"User-Agent": BROWSER_UA, "X-Forwarded-For": ip})


async def contact(server, channel: str):
    n = next(_ips)
    return await server.fetch(
        CONTACT.format(channel=channel),
        json=FORMS[channel],
        headers={"X-Forwarded-For": f"198.19.{n // 250}.{n % 250 + 1}"},
    )


async def stored(server) -> dict:
    return await read_stats(server.services.db, "p1")


async def owner(server) -> dict:
    return await server.services.db.users.find_one({"_id": "u1"})


# ---------------------------------------------------------------- Redis stopped and restarted


async def test_redis_down_page_renders_presence_null_streams_resync_contact_503_views_kept(
    server, private_stores, caplog
):
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
                503,
                "Contact forms are temporarily unavailable, please try again later",
            )
        assert (await server.fetch("/readyz")).code == 503
        # The open stream stays open through the outage: keepalives still arrive.
        assert (await stream.block(timeout=3)).startswith(":")
        assert hub.listener_count == 1
        await wait_until(lambda: caplog.text.count("stats dedup failed") >= 3, message="no failed flushes")
        assert server.services.stats.pending >= 20, "views recorded while Redis is down are kept"

        await asyncio.to_thread(stores.redis.start)
        # Back: the stream gets the current snapshot (which changed without a publish) ...
        assert await stream.event(timeout=15) == current
        # ... and the next change through the new subscription.
        writer = aioredis.Redis.from_url(stores.redis_url, decode_responses=True)
        later = await write_presence(writer, "u1", {"status": "idle"})
        assert await stream.event(timeout=5) == later
        # Every view, including the 20 made during the outage, reaches MongoDB exactly once.
        await wait_until(lambda: _all_views_written(server, 25), timeout=30)
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
    async with stats.paused():
        assert {(await view(server)).code for _ in range(10)} == {200}
        for n in range(3):  # three visitors starting the track: three plays
            response = await server.fetch(
                MUSIC, headers={"User-Agent": BROWSER_UA, "X-Forwarded-For": f"198.20.0.{n + 1}"}
            )
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
        view(server),
        server.fetch("/readyz"),
        server.fetch(MUSIC),
        server.fetch("/api/v1/profiles/p1/og.png"),
        contact(server, "discord"),
    )
    assert time.monotonic() - started < 8, "bounded by the driver's server-selection timeout (5 s)"
    assert page.code == 503
    assert page.headers["Retry-After"] == "5"
    assert page.headers["Content-Type"].startswith("text/html") and b"Traceback" not in page.body
    assert ready.code == 503 and json.loads(ready.body)["data"]["stores"] == {"mongo": False, "redis": True}
    assert (music.code, music.body, music.headers["Retry-After"]) == (503, b"", "5")
    assert (og.code, og.headers["Retry-After"]) == (503, "5")
    assert (response.code, json.loads(response.body)["error"], response.headers["Retry-After"]) == (
        503,
        "Contact forms are temporarily unavailable, please try again later",
        "5",
    )

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


async def _all_views_written(server, expected: int) -> bool:
    """Nothing queued or in flight, and exactly `expected` views stored (never more: no double count)."""
    stats = server.services.stats
    settled = stats.pending == 0 and not stats.flushing  # read together: a flush cannot start with nothing queued
    views = (await stored(server))["views"]
    assert views <= expected, f"{views} views stored for {expected} sent"
    return settled and views == expected


async def _code_is(server, path: str, code: int) -> bool:
    return (await server.fetch(path, host="alice.hep.gg", headers={"User-Agent": "curl/8"})).code == code


async def _body_has(server, needle: bytes) -> bool:
    return needle in (await server.fetch("/", host="alice.hep.gg", headers={"User-Agent": "curl/8"})).body


# ---------------------------------------------------------------- third parties that accept and never answer


class Blackhole:
    """A TCP server that accepts and then says nothing (optionally a greeting first): a hung upstream.

    It counts connections still open, so a test can see that hepgg_server let go of every one.
    """

    def __init__(self, greeting: bytes = b""):
        self.greeting = greeting
        self.accepted = 0
        self.open = 0

    async def start(self) -> Blackhole:
        self.server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        try:
            if self.greeting:
                writer.write(self.greeting)
            while await reader.read(65536):  # swallow the request, answer nothing, until the peer hangs up
                pass
        except ConnectionError:
            pass
        finally:
            self.open -= 1
            writer.close()

    async def stop(self) -> None:
        self.server.close()


HUNG = {
    # name: (setting pointed at the blackhole, greeting, request, expected status, expected error, credit field)
    "turnstile": ("turnstile_verify_url", b"", "sms", 400, "Anti-spam check failed", None),
    "sms": ("sms_api_url", b"", "sms", 502, "SMS delivery failed", "sms_credits"),
    "discord": ("discord_api_url", b"", "discord", 502, "Discord delivery failed", None),
    "smtp-silent": ("smtp_port", b"", "email", 502, "Email delivery failed", "email_credits"),
    "smtp-after-greeting": (
        "smtp_port",
        b"220 relay ESMTP\r\n",
        "email",
        502,
        "Email delivery failed",
        "email_credits",
    ),
}


@pytest.mark.parametrize("name", list(HUNG))
async def test_hung_third_party_is_answered_within_its_timeout_and_refunded(make_server, fakes, name):
    setting, greeting, channel, status, error, credit_field = HUNG[name]
    hole = await Blackhole(greeting).start()
    target = hole.port if setting == "smtp_port" else f"http://127.0.0.1:{hole.port}/siteverify"
    server = await make_server(
        **contact_settings(fakes, turnstile_timeout=1.0, delivery_timeout=1.0, **{setting: target})
    )
    await server.load(base_document())
    try:
        started = time.monotonic()
        answers = await asyncio.gather(*(contact(server, channel) for _ in range(3)))
        elapsed = time.monotonic() - started
        assert [(r.code, json.loads(r.body)) for r in answers] == [(status, {"ok": False, "error": error})] * 3
        assert elapsed < 1.0 + 1.5, f"answered after {elapsed:.1f}s; the timeout is 1 s"
        assert hole.accepted >= 1
        if credit_field:
            assert (await owner(server))[credit_field] == 5, "every debited credit is refunded"
        await wait_until(lambda: hole.open == 0, timeout=5)  # hepgg_server let go of every connection
    finally:
        await hole.stop()


async def test_music_worker_that_accepts_and_never_answers_is_502_within_the_stall_timeout(make_server):
    hole = await Blackhole().start()
    server = await make_server(
        music_upstream_url=f"http://127.0.0.1:{hole.port}", music_connect_timeout=1.0, music_stall_timeout=1.0
    )
    await server.load(base_document())
    try:
        started = time.monotonic()
        answers = await asyncio.gather(*(server.fetch(MUSIC) for _ in range(3)))
        assert [(r.code, r.body) for r in answers] == [(502, b"")] * 3
        assert time.monotonic() - started < 1.0 + 2.5  # libcurl checks its low-speed limit once a second
        await wait_until(lambda: hole.open == 0, timeout=5)
        assert not server.services.music.streams  # no relay left behind
        await server.services.stats.flush()
        assert (await stored(server))["plays"] == 0  # a failed stream is not a play
    finally:
        await hole.stop()


# ---------------------------------------------------------------- stores that hang instead of dying


async def test_hung_stores_are_answered_in_bounded_time_and_recover(server, private_stores):
    """SIGSTOP: connections are accepted by the kernel but nothing answers, the worst case for a driver."""
    stores = private_stores
    assert (await view(server)).code == 200
    server.services.sites.invalidate()  # the next page view must ask MongoDB
    await asyncio.to_thread(stores.mongo.pause)
    await asyncio.to_thread(stores.redis.pause)
    try:
        started = time.monotonic()
        page, ready, presence, sms = await asyncio.gather(
            view(server), server.fetch("/readyz"), server.fetch("/api/v1/profiles/presence/u1"), contact(server, "sms")
        )
        elapsed = time.monotonic() - started
        assert page.code == 503 and page.headers["Retry-After"] == "5"
        assert ready.code == 503
        assert json.loads(presence.body) == {"ok": True, "data": {"presence": None}}
        assert sms.code == 503
        assert elapsed < 12, f"a hung store held a request for {elapsed:.1f}s"
    finally:
        await asyncio.to_thread(stores.redis.resume)
        await asyncio.to_thread(stores.mongo.resume)
    await wait_until(lambda: _code_is(server, "/", 200), timeout=30)
    assert (await contact(server, "sms")).code == 200
    await wait_until(lambda: _all_views_written(server, 1), timeout=30)
    assert (await owner(server))["sms_credits"] == 4


async def test_a_retried_view_whose_first_dedup_landed_is_still_counted(app_server):
    """Redis applied the SET NX but the reply was lost (hung/died): the retry must not call its own
    earlier write a duplicate. A different event with the same visitor still is one."""
    from store.stats import view_dedup_key

    await app_server.load(base_document())
    stats = app_server.services.stats
    now = app_server.services.clock.now()
    event_id = stats.record_view("p1", "u1", now, "203.0.113.9", BROWSER_UA, None)
    key = view_dedup_key("p1", "203.0.113.9", BROWSER_UA)
    await app_server.services.redis.client.set(key, str(event_id), ex=30)  # what the lost first try left behind
    stats.record_view("p1", "u1", now, "203.0.113.9", BROWSER_UA, None)  # a real refresh: a duplicate
    await stats.flush()
    assert (await stored(app_server))["views"] == 1


async def test_the_drivers_lock_fault_during_an_outage_is_a_503_and_the_same_error_elsewhere_a_500():
    """PyMongo 4.20 on Python 3.11 once raised this from its server-selection lock while MongoDB was down
    (a 500 in test_mongo_down_503_with_retry_after_then_recovers_without_restart). Raised by the driver's
    own Condition, as it was there, it is an outage; the same words raised by anything else are a bug."""
    from pymongo._asyncio_lock import Condition, Lock

    with pytest.raises(RuntimeError) as in_driver:
        await Condition(Lock()).wait()  # the driver's check, on a lock nobody holds
    answer = answer_for(500, in_driver.value)
    assert (answer.status, answer.headers) == (503, {"Retry-After": str(RETRY_AFTER_SECONDS)})

    with pytest.raises(RuntimeError) as in_our_code:
        raise RuntimeError(str(in_driver.value))
    assert answer_for(500, in_our_code.value).status == 500
