"""Live Discord presence: the snapshot endpoint, the SSE stream and the hub (issue 8), over real HTTP + Redis."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis.asyncio as aioredis

from presence.hub import LOADING
from presence.writer import clear_presence, write_presence

from conftest import wait_until
from presence_client import SSEClient

SPOTIFY = {
    "status": "online",
    "activity": {
        "name": "Spotify",
        "type": 2,
        "details": "Song Title",
        "state": "Artist Name",
        "startedAt": 1716900000000,
        "endsAt": 1716900210000,
        "largeImage": "https://i.scdn.co/image/abc",
        "largeText": "Album Name",
    },
}


@pytest.fixture
async def redis_client(store_urls):
    client = aioredis.Redis.from_url(store_urls.redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def test_snapshot_null_for_unknown_user(app_server):
    response = await app_server.fetch("/api/v1/profiles/presence/nobody-123")
    assert response.code == 200
    assert json.loads(response.body) == {"ok": True, "data": {"presence": None}}
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_snapshot_returns_what_the_writer_stored(app_server, redis_client):
    written = await write_presence(redis_client, "u1", SPOTIFY)
    response = await app_server.fetch("/api/v1/profiles/presence/u1")
    body = json.loads(response.body)
    assert body["ok"] is True
    presence = body["data"]["presence"]
    assert presence == written
    assert presence["activity"]["largeText"] == "Album Name"
    assert presence["updatedAt"].endswith("Z") and len(presence["updatedAt"]) == 24
    assert 299_000 <= await redis_client.pttl("presence:u1") <= 300_000
    await clear_presence(redis_client, "u1")
    response = await app_server.fetch("/api/v1/profiles/presence/u1")
    assert json.loads(response.body)["data"]["presence"] is None


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/profiles/presence//stream",
        "/api/v1/profiles/presence/%20/stream",
        "/api/v1/profiles/presence/",
        "/api/v1/profiles/presence/%20",
    ],
)
async def test_blank_user_id_is_400(app_server, path):
    response = await app_server.fetch(path)
    assert response.code == 400
    assert json.loads(response.body) == {"ok": False, "error": "userID required"}


async def test_stream_headers_and_first_event_null(app_server):
    client = await SSEClient.open(app_server.port, "/api/v1/profiles/presence/nobody/stream")
    try:
        assert client.status == 200
        assert client.headers["content-type"] == "text/event-stream"
        assert client.headers["cache-control"] == "no-store"
        assert client.headers["connection"] == "keep-alive"
        hint = await client.block()  # first, when to come back should the stream be lost without a word
        assert hint.startswith("retry: ") and 1000 <= int(hint.split()[1]) <= 5000
        assert await client.block() == "event: presence\ndata: null"
    finally:
        client.close()


async def test_every_stream_opens_with_a_jittered_retry_hint(app_server):
    """Listeners of a replica that dies come back spread over 1-5 s, not all at the browser's fixed default."""
    clients = [await SSEClient.open(app_server.port, "/api/v1/profiles/presence/u9/stream") for _ in range(20)]
    try:
        hints = [int((await client.block()).removeprefix("retry: ")) for client in clients]
        assert all(1000 <= hint <= 5000 for hint in hints) and len(set(hints)) >= 5
    finally:
        for client in clients:
            client.close()


async def test_stream_first_event_is_current_snapshot_then_changes_within_100ms(app_server, redis_client):
    first = await write_presence(redis_client, "u1", SPOTIFY)
    client = await SSEClient.open(app_server.port, "/api/v1/profiles/presence/u1/stream")
    try:
        assert await client.event() == first
        for status in ("idle", "dnd", "offline"):
            started = time.monotonic()
            written = await write_presence(redis_client, "u1", {"status": status})
            assert await client.event(timeout=1) == written
            assert time.monotonic() - started < 0.1
        await clear_presence(redis_client, "u1")
        assert await client.event() is None
    finally:
        client.close()


async def test_http10_stream_is_close_delimited(app_server, redis_client):
    client = await SSEClient.open(app_server.port, "/api/v1/profiles/presence/u1/stream", version="1.0")
    try:
        assert client.status == 200 and "transfer-encoding" not in client.headers
        assert await client.event() is None
        written = await write_presence(redis_client, "u1", {"status": "online"})
        assert await client.event() == written
    finally:
        client.close()


async def test_keepalive_ping_with_short_interval(make_server):
    server = await make_server(sse_ping_interval=0.2)
    client = await SSEClient.open(server.port, "/api/v1/profiles/presence/u1/stream")
    try:
        await client.event()
        started = time.monotonic()
        assert await client.block(timeout=2) == ": ping"
        assert await client.block(timeout=2) == ": ping"
        assert time.monotonic() - started < 1.0
    finally:
        client.close()


async def test_expired_snapshot_reaches_streams_as_null(app_server, redis_client):
    written = await write_presence(redis_client, "u1", {"status": "online"}, ttl=0.5)
    client = await SSEClient.open(app_server.port, "/api/v1/profiles/presence/u1/stream")
    try:
        assert await client.event() == written
        assert await client.event(timeout=5) is None  # the key expired: Redis told the hub
        response = await app_server.fetch("/api/v1/profiles/presence/u1")
        assert json.loads(response.body)["data"]["presence"] is None
    finally:
        client.close()


async def hub_clients(redis_client) -> list[str]:
    listing = await redis_client.execute_command("CLIENT", "LIST")
    if isinstance(listing, bytes):
        listing = listing.decode()
    return [line for line in listing.splitlines() if "name=hepgg-presence-hub" in line]


async def test_one_pubsub_connection_subscribed_only_while_listened(app_server, redis_client):
    hub = app_server.services.presence.hub
    await wait_until(lambda: hub.connected.is_set())
    clients = [
        await SSEClient.open(app_server.port, f"/api/v1/profiles/presence/user{i % 5}/stream") for i in range(40)
    ]
    try:
        for client in clients:
            assert await client.event() is None
        assert len(await hub_clients(redis_client)) == 1
        channels = set(await redis_client.pubsub_channels("presence:*"))
        assert channels == {f"presence:user{i}" for i in range(5)}
        assert hub.listener_count == 40
        # The last listener of user0 leaves: its channel is unsubscribed; the others stay.
        for i, client in enumerate(clients):
            if i % 5 == 0:
                client.close()
        await wait_until(lambda: hub.listener_count == 32)

        async def unsubscribed():
            return "presence:user0" not in set(await redis_client.pubsub_channels("presence:*"))

        await wait_until(unsubscribed)
        assert len(await hub_clients(redis_client)) == 1
    finally:
        for client in clients:
            client.close()
    await wait_until(lambda: hub.listener_count == 0)

    async def none_left():
        return not await redis_client.pubsub_channels("presence:*")

    await wait_until(none_left)


async def test_spread_listeners_get_only_their_user(app_server, redis_client):
    a = await SSEClient.open(app_server.port, "/api/v1/profiles/presence/alice/stream")
    b = await SSEClient.open(app_server.port, "/api/v1/profiles/presence/bob/stream")
    try:
        assert await a.event() is None and await b.event() is None
        written = await write_presence(redis_client, "bob", {"status": "dnd"})
        assert await b.event() == written
        with pytest.raises(asyncio.TimeoutError):
            await a.block(timeout=0.3)
    finally:
        a.close()
        b.close()


async def test_drain_sheds_streams_with_a_retry_hint(app_server):
    client = await SSEClient.open(app_server.port, "/api/v1/profiles/presence/u1/stream")
    await client.event()
    waiting = await SSEClient.open(app_server.port, "/api/v1/profiles/presence/u2/stream")
    await waiting.event()
    # As while its channel resubscribes (Redis lost): a stream that has no event from this replica to show.
    app_server.services.presence.hub.channels["presence:u2"].state = LOADING
    await app_server.services.lifecycle.drain(1.0)
    block = await client.block()
    assert block.startswith("retry: ") and 500 <= int(block.split()[1]) <= 6000
    assert await client.block() is None  # the body ended
    hint = await waiting.block()  # it may come back at once: another replica takes it
    assert hint.startswith("retry: ") and 250 <= int(hint.split()[1]) <= 1000
    # While draining, a new stream is answered 200 with a short retry hint (not overload's 5-20 s, nor the drain's
    # 0.5-6 s: it had nothing here, and another replica takes it at once) and closed.
    for _ in range(3):
        late = await SSEClient.open(app_server.port, "/api/v1/profiles/presence/u1/stream")
        assert late.status == 200
        hint = await late.block()
        assert hint.startswith("retry: ") and 250 <= int(hint.split()[1]) <= 1000
        assert await late.block() is None


async def test_overload_sheds_with_200_and_retry(make_server):
    server = await make_server(sse_max_streams=2)
    clients = [await SSEClient.open(server.port, "/api/v1/profiles/presence/u1/stream") for _ in range(2)]
    try:
        for client in clients:
            assert await client.event() is None
        extra = await SSEClient.open(server.port, "/api/v1/profiles/presence/u1/stream")
        assert extra.status == 200
        hint = await extra.block()
        assert hint.startswith("retry: ") and 5000 <= int(hint.split()[1]) <= 20000  # come back later
        assert await extra.block() is None
    finally:
        for client in clients:
            client.close()


async def test_stream_rejects_other_methods(app_server):
    response = await app_server.fetch("/api/v1/profiles/presence/u1/stream", method="POST", body=b"")
    assert response.code == 405
    assert json.loads(response.body) == {"ok": False, "error": "Method not allowed"}


async def test_malformed_published_payload_is_not_forwarded(app_server, redis_client):
    client = await SSEClient.open(app_server.port, "/api/v1/profiles/presence/u1/stream")
    try:
        assert await client.event() is None
        await redis_client.publish("presence:u1", '{"status":"online"}\n\nevent: evil\ndata: x')
        written = await write_presence(redis_client, "u1", {"status": "idle"})
        assert await client.event() == written
    finally:
        client.close()


async def test_demo_presence_cycles_through_the_writer(make_server):
    server = await make_server(demo_presence=True)
    client = await SSEClient.open(server.port, "/api/v1/profiles/presence/demo-owner/stream")
    try:
        event = await client.event()
        if event is None:  # the demo's first write may land just after the stream's first snapshot
            event = await client.event(timeout=5)
        assert event["status"] in ("online", "idle", "dnd", "offline")
        assert event["activity"]["type"] in range(6)
    finally:
        client.close()
