"""Sentinel, TLS and the URL forms: the connector's other shapes, on real servers.

`redis+sentinel://` (3 redis-sentinel processes watching a primary and a replica): commands, the presence
hub and page views follow a failover. `rediss://` to a TLS-only redis-server: commands and the hub's own
connection use the URL's TLS settings (the hub used to decide TLS from a class name). The URL grammar and
its errors are unit-tested here too.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis
from test_redis_cluster import STREAM, PageLoad, next_event_equal, next_event_other_than, write_until_back

from presence.writer import write_presence
from runtime.config import ConfigError, load_config
from store.redis_connect import RedisUrlError, check_url, connect, parse_sentinel_url
from store.stats import read_stats

from conftest import base_document, wait_until
from presence_client import SSEClient

# ------------------------------------------------------------------------------------------------ URL forms


def test_sentinel_url_forms():
    spec = parse_sentinel_url("redis+sentinel://app:s3cret@s1:26380,s2,[::1]:26381/mymaster/2?socket_timeout=3")
    assert spec.sentinels == (("s1", 26380), ("s2", 26379), ("::1", 26381))
    assert spec.service == "mymaster" and not spec.tls
    assert spec.data_options["db"] == 2 and spec.data_options["socket_timeout"] == 3.0
    assert (spec.data_options["username"], spec.data_options["password"]) == ("app", "s3cret")
    assert spec.sentinel_options == {}
    tls = parse_sentinel_url("rediss+sentinel://s1/mymaster?sentinel_password=x&ssl_ca_certs=/ca.pem")
    assert tls.tls and tls.data_options["ssl"] and tls.data_options["ssl_ca_certs"] == "/ca.pem"
    assert tls.sentinel_options == {"password": "x", "ssl": True, "ssl_ca_certs": "/ca.pem"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://s1:26379", "service_name"),
        ("redis+sentinel:///mymaster", "sentinel host"),
        ("redis+sentinel://s1:notaport/mymaster", "invalid port"),
        ("redis+sentinel://s1/mymaster/zero", "service_name/db"),
        ("http://localhost:6379", "redis://, rediss://, unix://"),
        ("redis://localhost:6379/?socket_timeout=soon", "socket_timeout"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url, message):
    with pytest.raises(RedisUrlError, match=message):
        check_url(url)
    with pytest.raises(ConfigError, match="--redis-url"):
        load_config(environ={}, redis_url=url)


def test_redis_sharded_pubsub_is_accepted_and_ignored():
    assert load_config(environ={}, redis_sharded_pubsub="yes").redis_sharded_pubsub is True  # old configs still load


# ------------------------------------------------------------------------------------------------ TLS


@pytest.mark.slow  # starts a TLS Redis of its own
async def test_rediss_url_carries_tls_to_commands_and_the_hub(redis_tls, make_server):
    url = f"rediss://127.0.0.1:{redis_tls.port}/0?ssl_ca_certs={redis_tls.tls_ca}"
    server = await make_server(redis_url=url)
    writer = await connect(url)
    client = await SSEClient.open(server.port, STREAM.format("tls1"))
    try:
        assert server.services.redis.mode == "single"
        assert await client.event() is None  # the hub subscribed over TLS, read the snapshot over TLS
        written = await write_presence(writer.client, "tls1", {"status": "online"})
        assert await client.event() == written
        assert (await server.fetch("/readyz")).code == 200
    finally:
        client.close()
        await writer.close()


@pytest.mark.slow  # starts a TLS Redis of its own
async def test_rediss_url_with_an_untrusted_certificate_is_refused(redis_tls, make_server, caplog):
    server = await make_server(redis_url=f"rediss://127.0.0.1:{redis_tls.port}/0")  # the system CAs only
    assert (await server.fetch("/readyz")).code == 503
    await wait_until(lambda: "certificate verify failed" in caplog.text, timeout=10)
    response = await server.fetch("/api/v1/profiles/presence/tls2")
    assert json.loads(response.body)["data"]["presence"] is None  # Redis unusable: null, never a 500


# ------------------------------------------------------------------------------------------------ Sentinel


@pytest.mark.slow
async def test_sentinel_failover_under_streams_and_page_load(redis_sentinel, make_server):
    server = await make_server(
        redis_url=redis_sentinel.url, view_flush_interval=0.2, profile_cache_ttl=300, trusted_proxies=("127.0.0.1/32",)
    )
    assert server.services.redis.mode == "sentinel"
    await server.load(base_document())
    writer = await connect(redis_sentinel.url)
    users = [f"sen{i}" for i in range(6)]
    listeners = [await SSEClient.open(server.port, STREAM.format(user)) for user in users for _ in range(2)]
    load = PageLoad(server)
    try:
        for client in listeners:
            assert await client.event() is None
        first = {user: await write_presence(writer.client, user, {"status": "online"}) for user in users}
        for index, client in enumerate(listeners):
            assert await client.event() == first[users[index // 2]]
        assert (await server.fetch("/readyz")).code == 200
        load.start()
        await asyncio.sleep(1.0)
        killed_at = time.monotonic()
        killed = redis_sentinel.kill_primary()
        writes_back = await write_until_back(writer.client, users[0], killed_at, within=30)
        await asyncio.to_thread(redis_sentinel.wait_failover, killed)
        written = {user: await write_presence(writer.client, user, {"status": "dnd"}) for user in users}
        for index, client in enumerate(listeners):
            await next_event_equal(client, written[users[index // 2]], timeout=20)
        delivered = time.monotonic() - killed_at
        await load.stop()
        await server.services.stats.flush()
        assert server.services.stats.pending == 0
        assert load.other == []
        assert (await read_stats(server.services.db, "p1"))["views"] == load.ok

        async def ready() -> bool:
            return (await server.fetch("/readyz")).code == 200

        await wait_until(ready, timeout=5)
    finally:
        for client in listeners:
            client.close()
        if load._task is not None and not load._stop.is_set():
            await load.stop()
        await writer.close()
    print(
        f"\nsentinel failover: writes back after {writes_back:.2f}s, listeners had the next change after {delivered:.2f}s"
    )
    assert writes_back < 20


@pytest.mark.slow
async def test_a_graceful_sentinel_failover_moves_the_hub_and_expiry_events(redis_sentinel, make_server):
    """SENTINEL FAILOVER: the old primary lives on as a replica. The hub must end up on the new primary
    (sentinels kill the old primary's clients when they reconfigure it), where expiries happen now."""
    server = await make_server(redis_url=redis_sentinel.url)
    writer = await connect(redis_sentinel.url)
    client = await SSEClient.open(server.port, STREAM.format("graceful"))
    try:
        assert await client.event() is None
        old = redis_sentinel.primary()
        redis_sentinel.sentinels[0].call("SENTINEL", "FAILOVER", redis_sentinel.service)
        await wait_until(lambda: redis_sentinel.primary_address() not in (None, old.address), timeout=30)
        # Until the old primary is a replica, a write may still land on it and be lost (two primaries for a
        # moment: Redis's own failover window, not ours). Write once it is.
        # The sentinels close the old primary's clients while they reconfigure it: a probe cut then is "not yet".
        await wait_until(lambda: old.call("ROLE")[0] == "slave", timeout=30, retry_on=(redis.ConnectionError,))
        # Writes reach the new primary once redis-py's pool has asked the sentinels again.
        written = await wait_until(
            lambda: write_presence(writer.client, "graceful", {"status": "online"}, ttl=1.5),
            timeout=20,
            interval=0.2,
            message="writes did not follow the failover",
            retry_on=(Exception,),
        )
        await next_event_equal(client, written, timeout=15)
        # Expired on the new primary: its notification arrived. The hub may resend `written` first: the old
        # primary's clients are killed when it is reconfigured, and a hub that reconnects resends snapshots.
        assert await next_event_other_than(client, written, timeout=10) is None
    finally:
        client.close()
        await writer.close()
