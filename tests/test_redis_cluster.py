"""Every Redis path on a real Redis Cluster (3 masters + 3 replicas), keys spread over all masters.

The server is given one node's redis:// URL and nothing else (no flag): it must find out it talks to a
cluster. Each test picks its ids so that their keys land on every master (asserted), so a path that
works for one node only fails here. The failover tests kill a master under load on a private cluster.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from test_contact import DISCORD, PATH
from tornado.httpclient import AsyncHTTPClient

from presence.snapshot import presence_key
from presence.writer import write_presence
from runtime.reconciler import LOCK_KEY, ReconcilerBusy, run_once
from store.redis_connect import connect
from store.stats import read_stats, view_dedup_key

from conftest import base_document, run_cli, wait_until
from contact_fakes import contact_settings
from presence_client import SSEClient

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) ClusterTest/1.0"
# The shared cluster starts in ~7-18 s and each test starts a server: ~100 s for the module at load 12, so all
# of it is in the slow tier (the quick tier stays under 90 s).
pytestmark = pytest.mark.slow

STREAM = "/api/v1/profiles/presence/{}/stream"


def spread(cluster, candidates, key_of, per_master: int = 2) -> list[str]:
    """Ids from `candidates` whose keys give every master at least `per_master` of them."""
    chosen: dict[str, list[str]] = defaultdict(list)
    masters = {node.address for node in cluster.masters()}
    for candidate in candidates:
        owner = cluster.master_of(key_of(candidate)).address
        if len(chosen[owner]) < per_master:
            chosen[owner].append(candidate)
        if len(chosen) == len(masters) and all(len(ids) >= per_master for ids in chosen.values()):
            break
    assert set(chosen) == masters, "the candidates do not reach every master"
    return [candidate for ids in chosen.values() for candidate in ids]


def owners_document(owner_ids: list[str]) -> dict:
    """One premium owner with one published profile (p-<id> at <id>.hep.gg) per id."""
    base = base_document()
    doc: dict = {"users": [], "profiles": []}
    for owner_id in owner_ids:
        user = copy.deepcopy(base["users"][0])
        user["id"] = owner_id
        profile = copy.deepcopy(base["profiles"][0])
        profile.update(id=f"p-{owner_id}", owner_id=owner_id, domain=f"{owner_id}.hep.gg")
        doc["users"].append(user)
        doc["profiles"].append(profile)
    return doc


@pytest.fixture
async def writer(empty_redis_cluster):
    """A cluster client of the test's own: the Discord bot's side."""
    connector = await connect(empty_redis_cluster.url)
    assert connector.mode == "cluster"
    yield connector.client
    await connector.close()


@pytest.fixture
async def server(empty_redis_cluster, make_server, fakes):
    server = await make_server(**contact_settings(fakes, redis_url=empty_redis_cluster.url, profile_cache_ttl=300))
    assert server.services.redis.mode == "cluster"
    return server


# ------------------------------------------------------------------------------------------------ every path


async def test_readyz_checks_the_whole_cluster(server):
    response = await server.fetch("/readyz")
    assert response.code == 200, response.body
    assert json.loads(response.body)["data"]["stores"] == {"mongo": True, "redis": True}


def view_spread(cluster, prefix: str, per_master: int) -> list[str]:
    """Owner ids whose profiles' view-dedup keys (hash tag: the profile id) land on every master."""
    return spread(
        cluster,
        (f"{prefix}{i}" for i in range(300)),
        lambda owner: view_dedup_key(f"p-{owner}", "198.51.100.1", BROWSER_UA),
        per_master,
    )


async def view_pages(server, owners: list[str], ips: list[str]) -> None:
    for owner in owners:
        for ip in ips:
            response = await server.fetch(
                "/", host=f"{owner}.hep.gg", headers={"User-Agent": BROWSER_UA, "X-Forwarded-For": ip}
            )
            assert response.code == 200


async def views_of(server, owners: list[str]) -> list[int]:
    return [(await read_stats(server.services.db, f"p-{owner}"))["views"] for owner in owners]


async def test_views_on_every_master_are_counted_once(server, redis_cluster):
    owners = view_spread(redis_cluster, "view", 2)
    await server.load(owners_document(owners))
    ips = [f"198.51.100.{i}" for i in range(1, 6)]
    stats = server.services.stats
    async with stats.paused():  # one batch: each profile's claim script sees its visitor twice
        await view_pages(server, owners, ips)
        await view_pages(server, owners, ips)
    await stats.flush()
    assert stats.pending == 0
    assert await views_of(server, owners) == [len(ips)] * len(owners)
    await view_pages(server, owners, ips)  # a later batch within 30 s: duplicates, on every master
    await stats.flush()
    assert await views_of(server, owners) == [len(ips)] * len(owners)
    per_master = [int(node.call("DBSIZE")) for node in redis_cluster.masters()]
    assert all(per_master), per_master


async def test_a_failing_claim_on_one_master_holds_back_only_its_profile(server, redis_cluster, writer, caplog):
    """One profile's dedup keys (one slot) fail: its views wait for the next flush, every other master's
    profiles are counted; once the slot answers, the kept views count once each."""
    owners = view_spread(redis_cluster, "fail", 1)
    await server.load(owners_document(owners))
    ips = [f"198.51.100.{i}" for i in range(1, 6)]
    sick = owners[0]
    poisoned = view_dedup_key(f"p-{sick}", ips[2], BROWSER_UA)
    await writer.hset(poisoned, "not", "a dedup key")  # its SET fails (WRONGTYPE), so the profile's claim does
    stats = server.services.stats
    async with stats.paused():
        await view_pages(server, owners, ips)
    await stats.flush()
    assert await views_of(server, owners) == [0] + [len(ips)] * (len(owners) - 1)
    async with stats.paused():
        assert stats.pending == len(ips)  # kept, not dropped
    assert "WRONGTYPE" in caplog.text  # the log names Redis' own error
    await writer.delete(poisoned)
    await stats.flush()
    assert await views_of(server, owners) == [len(ips)] * len(owners)
    assert stats.pending == 0


async def test_presence_cli_writes_users_on_every_master(server, redis_cluster):
    users = spread(redis_cluster, (f"cli{i}" for i in range(200)), presence_key, 1)
    await server.load(owners_document(users))  # `presence set` writes only for users MongoDB knows
    stores = ("--redis-url", redis_cluster.url, "--mongo-uri", server.config.mongo_uri)
    for user in users:
        done = await asyncio.to_thread(
            run_cli, "presence", "set", user, "--status", "dnd", *stores, "--mongo-db", server.config.mongo_db
        )
        assert done.returncode == 0, done.stderr
        response = await server.fetch(f"/api/v1/profiles/presence/{user}")
        assert json.loads(response.body)["data"]["presence"]["status"] == "dnd"


async def test_streams_on_every_master_opened_together_all_get_their_changes(server, redis_cluster, writer):
    users = spread(redis_cluster, (f"sse{i}" for i in range(300)), presence_key, 5)
    # Opened together: one loop turn subscribes them all (one SSUBSCRIBE per slot, per master).
    clients = await asyncio.gather(*(SSEClient.open(server.port, STREAM.format(user)) for user in users))
    try:
        assert [await client.event() for client in clients] == [None] * len(users)
        sharded = set()
        for node in redis_cluster.masters():
            sharded |= set(node.call("PUBSUB", "SHARDCHANNELS", "presence:*"))
        assert sharded == {presence_key(user) for user in users}
        written = [await write_presence(writer, user, {"status": "online"}) for user in users]
        assert [await client.event(timeout=5) for client in clients] == written
    finally:
        for client in clients:
            client.close()


async def test_a_new_stream_gets_the_stored_snapshot_from_any_master(server, redis_cluster, writer):
    users = spread(redis_cluster, (f"snap{i}" for i in range(300)), presence_key, 2)
    written = {user: await write_presence(writer, user, {"status": "idle"}) for user in users}
    for user in users:
        client = await SSEClient.open(server.port, STREAM.format(user))
        try:
            assert await client.event() == written[user]
        finally:
            client.close()
        response = await server.fetch(f"/api/v1/profiles/presence/{user}")
        assert json.loads(response.body)["data"]["presence"] == written[user]


async def test_expiry_reaches_streams_from_every_master(server, redis_cluster, writer):
    users = spread(redis_cluster, (f"exp{i}" for i in range(300)), presence_key, 1)
    clients = [await SSEClient.open(server.port, STREAM.format(user)) for user in users]
    try:
        for client in clients:
            assert await client.event() is None
        written = [await write_presence(writer, user, {"status": "online"}, ttl=1.0) for user in users]
        assert [await client.event() for client in clients] == written
        # Each master's own keyspace notification turns its expired key into `null` on the stream.
        assert [await client.event(timeout=8) for client in clients] == [None] * len(users)
    finally:
        for client in clients:
            client.close()


async def test_contact_limits_exact_for_owners_on_every_master(server, redis_cluster, fakes):
    owners = spread(redis_cluster, (f"own{i}" for i in range(300)), lambda o: f"{{contact:{o}}}:x", 1)
    await server.load(owners_document(owners))
    client = AsyncHTTPClient(force_instance=True, max_clients=64)
    try:
        for owner in owners:
            responses = await asyncio.gather(
                *(
                    client.fetch(
                        server.url + PATH.format(pid=f"p-{owner}", channel="discord"),
                        method="POST",
                        body=json.dumps(DISCORD),
                        headers={"Content-Type": "application/json", "X-Forwarded-For": "203.0.113.9"},
                        raise_error=False,
                    )
                    for _ in range(8)
                )
            )
            assert sorted(r.code for r in responses) == [200] * 3 + [429] * 5, owner
    finally:
        client.close()
    assert len(fakes.discord.requests) == 3 * len(owners)


async def test_reconciler_lock_on_a_cluster(server, writer, store_urls):
    now = server.services.clock.now()
    assert await run_once(server.services.db, server.services.redis.client, now) == []
    await writer.set(LOCK_KEY, "someone-else", px=120_000)  # outlives a slow CLI start on a busy machine
    with pytest.raises(ReconcilerBusy):
        await run_once(server.services.db, server.services.redis.client, now)
    assert await writer.get(LOCK_KEY) == "someone-else"  # not released by a run that did not hold it
    done = await asyncio.to_thread(
        run_cli,
        "reconcile",
        "--redis-url",
        server.services.redis.url,
        "--mongo-uri",
        store_urls.mongo_uri,
        "--mongo-db",
        server.services.db.name,
    )
    assert done.returncode == 3 and "another reconciler is running" in done.stderr
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------------------------------------ failover


class PageLoad:
    """Page views from distinct visitors, as fast as one client goes, until stopped, the hosts in turn;
    counts the 200s."""

    def __init__(self, server, hosts: tuple[str, ...] = ("alice.hep.gg",)):
        self.server, self.hosts = server, hosts
        self.ok = 0
        self.other: list[int] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> PageLoad:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set() and n < 20000:  # bounded
            n += 1
            ip = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
            response = await self.server.fetch(
                "/", host=self.hosts[n % len(self.hosts)], headers={"User-Agent": BROWSER_UA, "X-Forwarded-For": ip}
            )
            if response.code == 200:
                self.ok += 1
            else:
                self.other.append(response.code)

    async def stop(self) -> None:
        self._stop.set()
        await self._task


async def send_discord(server, profile_id: str, ip: str, count: int) -> list[int]:
    client = AsyncHTTPClient(force_instance=True, max_clients=count + 2)
    try:
        responses = await asyncio.gather(
            *(
                client.fetch(
                    server.url + PATH.format(pid=profile_id, channel="discord"),
                    method="POST",
                    body=json.dumps(DISCORD),
                    headers={"Content-Type": "application/json", "X-Forwarded-For": ip},
                    raise_error=False,
                    request_timeout=30,
                )
                for _ in range(count)
            )
        )
    finally:
        client.close()
    return sorted(r.code for r in responses)


async def write_until_back(client, user: str, killed_at: float, within: float) -> float:
    """Write `user`'s presence until a write succeeds; the seconds from `killed_at` until it did."""
    while True:
        try:
            await write_presence(client, user, {"status": "idle"})
            return time.monotonic() - killed_at
        except Exception:
            assert time.monotonic() - killed_at < within, f"writes did not come back within {within} s"
            await asyncio.sleep(0.1)


async def next_event_where(client: SSEClient, wanted: Callable[[Any], bool], timeout: float):
    """The first event for which `wanted` holds, skipping the others (within `timeout` in all)."""
    deadline = time.monotonic() + timeout
    while True:
        event = await client.event(timeout=max(0.1, deadline - time.monotonic()))
        if wanted(event):
            return event


async def next_event_equal(client: SSEClient, expected, timeout: float = 15.0) -> None:
    """Events until `expected` arrives (a moved channel first gets its current snapshot again)."""
    await next_event_where(client, lambda event: event == expected, timeout)


async def next_event_other_than(client: SSEClient, current, timeout: float = 10.0):
    """The next event that is not `current` again (a hub that moves to another node resends each channel's
    snapshot, which may come after the change it already delivered)."""
    return await next_event_where(client, lambda event: event != current, timeout)


async def test_killing_a_master_under_streams_and_page_load(make_redis_cluster, make_server, fakes, caplog):
    cluster = make_redis_cluster()  # on the loop's thread: nodes die with the thread that started them
    server = await make_server(
        **contact_settings(fakes, redis_url=cluster.url, profile_cache_ttl=300, view_flush_interval=0.2)
    )
    owners = spread(cluster, (f"fo{i}" for i in range(300)), lambda o: f"{{contact:{o}}}:x", 1)
    viewed = view_spread(cluster, "fv", 1)  # page load on profiles whose view-dedup keys are on every master
    await server.load(owners_document(owners + viewed))
    users = spread(cluster, (f"fu{i}" for i in range(300)), presence_key, 3)
    writer = await connect(cluster.url)
    listeners = [await SSEClient.open(server.port, STREAM.format(user)) for user in users for _ in range(2)]
    load = PageLoad(server, tuple(f"{owner}.hep.gg" for owner in viewed))
    readiness: list[int] = []
    try:
        for client in listeners:
            assert await client.event() is None
        for owner in owners:  # every owner's burst bucket is spent before the kill
            assert await send_discord(server, f"p-{owner}", "203.0.113.7", 3) == [200] * 3
        await asyncio.to_thread(cluster.wait_replicated)  # replication is asynchronous: see docs/redis.md
        load.start()
        await asyncio.sleep(1.0)

        victim_user = users[0]
        killed_at = time.monotonic()
        killed = cluster.kill_master_of(presence_key(victim_user))

        async def poll_ready() -> None:
            while True:
                readiness.append((await server.fetch("/readyz")).code)
                await asyncio.sleep(0.2)

        poller = asyncio.create_task(poll_ready())
        # Writes to the killed master's slots succeed again within seconds (its replica takes over).
        writes_back = await write_until_back(writer.client, victim_user, killed_at, within=20)
        failover = await asyncio.to_thread(cluster.wait_failover, killed)
        await wait_until(lambda: 200 in readiness[-3:] and readiness[-1] == 200, timeout=20)
        poller.cancel()
        # Every listener, on every master, gets the next change.
        written = {user: await write_presence(writer.client, user, {"status": "dnd"}) for user in users}
        for index, client in enumerate(listeners):
            await next_event_equal(client, written[users[index // 2]])
        delivered = time.monotonic() - killed_at
        await load.stop()
        # No view lost: every page answered 200 (pages never wait for Redis) and every view is counted.
        await server.services.stats.flush()
        assert server.services.stats.pending == 0
        assert load.other == []
        assert sum(await views_of(server, viewed)) == load.ok
        # Contact limits stay exact: the spent buckets are still spent; a new visitor gets exactly three.
        for owner in owners:
            assert await send_discord(server, f"p-{owner}", "203.0.113.7", 4) == [429] * 4, owner
            assert await send_discord(server, f"p-{owner}", "203.0.113.8", 5) == [200] * 3 + [429] * 2, owner
        assert 503 in readiness, "readyz never noticed the failing master"
    finally:
        for client in listeners:
            client.close()
        if not load._stop.is_set() and load._task is not None:
            await load.stop()
        await writer.close()
    print(
        f"\nfailover: writes back after {writes_back:.2f}s, cluster healthy after {failover:.2f}s (from the "
        f"kill), every listener had the next change {delivered:.2f}s after the kill; {load.ok} views counted"
    )
    assert writes_back < 15


async def test_a_stream_follows_its_slot_to_another_master(server, redis_cluster, writer):
    """Resharding: the old master drops the subscription (SUNSUBSCRIBE), the hub moves it, nothing is lost."""
    user = "migrating-user"
    slot = redis_cluster.slot_of(presence_key(user))
    source = redis_cluster.master_of(presence_key(user))
    target = next(node for node in redis_cluster.masters() if node is not source)
    bystanders = [u for u in spread(redis_cluster, (f"by{i}" for i in range(300)), presence_key, 1)]
    clients = {u: await SSEClient.open(server.port, STREAM.format(u)) for u in [user, *bystanders]}
    try:
        for client in clients.values():
            assert await client.event() is None
        before = await write_presence(writer, user, {"status": "online"})
        assert await clients[user].event() == before
        await asyncio.to_thread(redis_cluster.move_slot, slot, target)
        # The stream gets the current snapshot again once its channel is live on the new master...
        assert await clients[user].event(timeout=10) == before
        assert presence_key(user) in target.call("PUBSUB", "SHARDCHANNELS", presence_key(user))
        # ...and the next change, published where the slot now lives.
        after = await write_presence(writer, user, {"status": "dnd"})
        assert await clients[user].event(timeout=5) == after
        for bystander in bystanders:  # the other channels never noticed
            written = await write_presence(writer, bystander, {"status": "idle"})
            assert await clients[bystander].event(timeout=5) == written
    finally:
        for client in clients.values():
            client.close()
        await asyncio.to_thread(redis_cluster.move_slot, slot, source)


async def test_views_follow_their_profile_s_slot_to_another_master(server, redis_cluster):
    """The claim script is sent to the master the client's slot map names (store/redis_keys.claim). After a
    reshard that map is stale: the old master answers MOVED, and the views still count, once each."""
    [owner] = view_spread(redis_cluster, "moving", 1)[:1]
    await server.load(owners_document([owner]))
    tag_key = view_dedup_key(f"p-{owner}", "198.51.100.1", BROWSER_UA)
    slot = redis_cluster.slot_of(tag_key)
    source = redis_cluster.master_of(tag_key)
    target = next(node for node in redis_cluster.masters() if node is not source)
    stats = server.services.stats
    await view_pages(server, [owner], ["198.51.100.1", "198.51.100.2"])
    await stats.flush()  # the server's client now routes this slot to `source`
    try:
        await asyncio.to_thread(redis_cluster.move_slot, slot, target)
        await view_pages(server, [owner], [f"198.51.100.{i}" for i in range(1, 6)])  # 3 new visitors, 2 repeats
        await stats.flush()
        assert stats.pending == 0
        assert await views_of(server, [owner]) == [5]
        assert int(target.call("EXISTS", view_dedup_key(f"p-{owner}", "198.51.100.5", BROWSER_UA))) == 1
    finally:
        await asyncio.to_thread(redis_cluster.move_slot, slot, source)


async def test_a_worker_started_while_its_node_was_down_moves_to_the_cluster_client(make_redis_cluster, make_server):
    cluster = make_redis_cluster()
    named = cluster.replicas_of(cluster.masters()[0])[0]  # the URL's node: a replica, so the cluster stays up
    named.kill()
    server = await make_server(redis_url=f"redis://{named.address}")
    assert server.services.redis.mode == "unknown"  # could not ask: starts on the plain client
    await server.load(base_document())
    assert (await server.fetch("/", host="alice.hep.gg")).code == 200  # pages never wait for Redis
    named.start()  # back: the next probe finds a cluster node and the worker switches clients in place
    await wait_until(lambda: server.services.redis.mode == "cluster", timeout=30)
    writer = await connect(f"redis://{named.address}")
    users = spread(cluster, (f"late{i}" for i in range(300)), presence_key, 1)
    clients = [await SSEClient.open(server.port, STREAM.format(user)) for user in users]
    try:
        for client in clients:
            assert await client.event() is None
        written = [await write_presence(writer.client, user, {"status": "online"}) for user in users]
        assert [await client.event(timeout=10) for client in clients] == written
        assert (await server.fetch("/readyz")).code == 200
    finally:
        for client in clients:
            client.close()
        await writer.close()
