"""Presence streams under stress: slow listeners, Redis restarts (issue 8; clusters: test_redis_cluster.py)."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import redis.asyncio as aioredis

from presence.writer import write_presence

from conftest import wait_until
from presence_client import SSEClient


@pytest.fixture
async def redis_client(store_urls):
    client = aioredis.Redis.from_url(store_urls.redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def test_listener_that_stops_reading_is_cut_off(make_server, redis_client):
    server = await make_server(sse_max_buffer=32 * 1024)
    hub = server.services.presence.hub
    healthy = await SSEClient.open(server.port, "/api/v1/profiles/presence/u1/stream")
    assert await healthy.event() is None
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window: the server's queue fills fast
    stuck.connect(("127.0.0.1", server.port))
    stuck.sendall(b"GET /api/v1/profiles/presence/u1/stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await wait_until(lambda: hub.listener_count == 2)
    big = json.dumps({"status": "online", "pad": "x" * 15000})
    published = 0
    try:
        while hub.listener_count == 2 and published < 3000:
            await redis_client.publish("presence:u1", big)
            published += 1
            if published % 20 == 0:
                while True:  # the healthy listener keeps reading, so only the stuck one falls behind
                    try:
                        block = await healthy.block(timeout=0.05)
                    except TimeoutError:
                        break
                    assert block is not None
        assert hub.listener_count == 1, f"stuck listener still open after {published} events"
        # The healthy stream is untouched and still gets changes.
        written = await write_presence(redis_client, "u1", {"status": "idle"})
        while (event := await healthy.event()) != written:
            assert event.get("pad")
    finally:
        stuck.close()
        healthy.close()


async def test_redis_restart_mid_stream(private_valkey, make_server):
    url = private_valkey.url
    server = await make_server(redis_url=url)
    hub = server.services.presence.hub
    writer = aioredis.Redis.from_url(url, decode_responses=True)
    client = await SSEClient.open(server.port, "/api/v1/profiles/presence/u7/stream")
    try:
        assert await client.event() is None
        first = await write_presence(writer, "u7", {"status": "online"})
        assert await client.event() == first
        await asyncio.to_thread(private_valkey.restart, crash=True)  # SIGKILL, then at once on the same port
        await writer.aclose()
        writer = aioredis.Redis.from_url(url, decode_responses=True)  # the old pooled connection is dead
        # The stream stayed open; once the hub is back it re-sends the current snapshot.
        await wait_until(lambda: hub.reconnects >= 1 and hub.connected.is_set(), timeout=15)
        resent = await client.event(timeout=10)
        stored = await writer.get("presence:u7")
        assert resent == (json.loads(stored) if stored else None)
        # Changes flow again through the new subscription.
        second = await write_presence(writer, "u7", {"status": "dnd"})
        assert await client.event(timeout=5) == second
        assert hub.listener_count == 1
        assert "presence:u7" in await writer.pubsub_channels("presence:*")
    finally:
        client.close()
        await writer.aclose()
