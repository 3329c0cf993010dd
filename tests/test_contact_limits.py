"""The contact rate limiter: exact under concurrency, across processes, fail closed, proxy aware.

Limits are checked through real servers (and a real `hepgg_server.py serve`
process with two workers) sharing the session's Redis, and the Lua script is
exercised directly for the buckets a test cannot reach in real time (daily
refill, the 30/day bucket).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import pytest
from prometheus_client import REGISTRY
from redis.crc import key_slot
from test_contact import DISCORD, PATH
from tornado.httpclient import AsyncHTTPClient

from contact.limiter import DAY, ContactLimiter, RefusalMemo, Rule, Rules
from store.redis_connect import connect

from conftest import ROOT, base_document, free_port, wait_until_serving
from contact_fakes import contact_settings


async def burst(urls: list[str], count: int, headers: dict | None = None) -> list[int]:
    """`count` concurrent Discord sends, spread round-robin over `urls`, on a client that does not queue."""
    client = AsyncHTTPClient(force_instance=True, max_clients=count + 4)
    try:
        responses = await asyncio.gather(
            *(
                client.fetch(
                    urls[i % len(urls)] + PATH.format(pid="p1", channel="discord"),
                    method="POST",
                    body=json.dumps(DISCORD),
                    headers={"Content-Type": "application/json", **(headers or {})},
                    raise_error=False,
                    request_timeout=20,
                )
                for i in range(count)
            )
        )
    finally:
        client.close()
    return sorted(response.code for response in responses)


async def test_twelve_concurrent_requests_from_one_ip_exactly_three_pass(make_server, fakes):
    server = await make_server(**contact_settings(fakes, trusted_proxies=()))
    await server.load(base_document())
    assert await burst([server.url], 12) == [200] * 3 + [429] * 9
    assert len(fakes.discord.requests) == 3


async def test_two_servers_sharing_redis_still_pass_exactly_three(make_server, fakes):
    one = await make_server(**contact_settings(fakes, trusted_proxies=()))
    two = await make_server(**contact_settings(fakes, trusted_proxies=()))
    await one.load(base_document())
    assert await burst([one.url, two.url], 12) == [200] * 3 + [429] * 9


@pytest.mark.slow
async def test_serve_process_with_two_workers_and_a_test_server_share_the_limits(make_server, fakes):
    local = await make_server(**contact_settings(fakes, trusted_proxies=()))
    await local.load(base_document())
    config = local.config
    port = free_port()
    argv = [
        sys.executable,
        str(ROOT / "hepgg_server.py"),
        "serve",
        "--port",
        str(port),
        "--processes",
        "2",
        "--mongo-uri",
        config.mongo_uri,
        "--redis-url",
        config.redis_url,
        "--mongo-db",
        config.mongo_db,
        "--turnstile-verify-url",
        config.turnstile_verify_url,
        "--turnstile-secret",
        config.turnstile_secret,
        "--discord-api-url",
        config.discord_api_url,
        "--discord-bot-token",
        "bot-token",
        "--log-level",
        "warning",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEPGG_")}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await asyncio.to_thread(wait_until_serving, proc, port)
        codes = await burst([f"http://127.0.0.1:{port}", local.url], 12)
        assert codes == [200] * 3 + [429] * 9
        assert len(fakes.discord.requests) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=20)
    assert proc.returncode == 0, stderr.decode()[-2000:]


async def test_redis_unreachable_fails_closed_with_503(make_server, fakes):
    server = await make_server(**contact_settings(fakes, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    await server.load(base_document())
    before = REGISTRY.get_sample_value("hepgg_rate_limit_decisions_total", {"channel": "sms", "outcome": "error"}) or 0
    for channel in ("sms", "email", "discord"):
        response = await server.fetch(PATH.format(pid="p1", channel=channel), json=DISCORD)
        assert response.code == 503
        assert json.loads(response.body) == {
            "ok": False,
            "error": "Contact forms are temporarily unavailable, please try again later",
        }
    assert fakes.turnstile.requests == [] and fakes.discord.requests == []
    after = REGISTRY.get_sample_value("hepgg_rate_limit_decisions_total", {"channel": "sms", "outcome": "error"})
    assert after == before + 1


async def test_spoofed_forwarded_for_from_untrusted_peer_changes_nothing(make_server, fakes):
    server = await make_server(**contact_settings(fakes, trusted_proxies=()))
    await server.load(base_document())
    for i in range(3):
        response = await server.fetch(
            PATH.format(pid="p1", channel="discord"), json=DISCORD, headers={"X-Forwarded-For": f"10.0.0.{i}"}
        )
        assert response.code == 200
    response = await server.fetch(
        PATH.format(pid="p1", channel="discord"), json=DISCORD, headers={"X-Forwarded-For": "10.0.0.99"}
    )
    assert response.code == 429
    assert {r.form()["remoteip"] for r in fakes.turnstile.requests} == {"127.0.0.1"}


async def test_forwarded_for_from_trusted_proxy_is_the_client(make_server, fakes):
    server = await make_server(**contact_settings(fakes, trusted_proxies=("127.0.0.1/32",)))
    await server.load(base_document())
    for _ in range(3):
        response = await server.fetch(
            PATH.format(pid="p1", channel="discord"), json=DISCORD, headers={"X-Forwarded-For": "192.0.2.1"}
        )
        assert response.code == 200
    response = await server.fetch(
        PATH.format(pid="p1", channel="discord"), json=DISCORD, headers={"X-Forwarded-For": "192.0.2.1"}
    )
    assert response.code == 429
    response = await server.fetch(
        PATH.format(pid="p1", channel="discord"), json=DISCORD, headers={"X-Forwarded-For": "192.0.2.2"}
    )
    assert response.code == 200
    assert fakes.turnstile.requests[-1].form()["remoteip"] == "192.0.2.2"


# ---------------------------------------------------------------- the Lua script itself


@pytest.fixture
async def redis_client(store_urls, clean_redis):
    """The limiter's own input: a started connector (the limiter reads its client at each call)."""
    connector = await connect(store_urls.redis_url)
    yield connector
    await connector.close()


def test_keys_of_one_call_share_a_cluster_slot():
    keys = ContactLimiter.keys("owner-1", "profile-9", "2001:db8::1", "sms")
    assert len({key_slot(key.encode()) for key in keys}) == 1
    assert all(key.startswith("{contact:owner-1}") for key in keys)
    other_profile = ContactLimiter.keys("owner-1", "profile-2", "192.0.2.1", "email")
    assert key_slot(other_profile[0].encode()) == key_slot(keys[0].encode())


async def test_daily_ip_bucket_is_30(redis_client):
    limiter = ContactLimiter(redis_client, Rules(burst=Rule("burst", 1000, 60)))
    decisions = [await limiter.admit("u1", "p1", "192.0.2.1", "discord") for _ in range(31)]
    assert [d.allowed for d in decisions] == [True] * 30 + [False]
    assert decisions[-1].refused == ("daily",) and decisions[-1].retry_after is None
    assert (await limiter.admit("u1", "p1", "192.0.2.2", "discord")).allowed  # another IP, same owner


async def test_refused_request_takes_no_token_from_the_other_buckets(redis_client):
    limiter = ContactLimiter(redis_client, Rules(burst=Rule("burst", 1, 60), daily=Rule("daily", 5, DAY)))
    assert (await limiter.admit("u1", "p1", "192.0.2.1", "sms")).allowed
    for _ in range(5):
        refused = await limiter.admit("u1", "p1", "192.0.2.1", "sms")
        assert refused.refused == ("burst",)
    _, daily_key, owner_key = ContactLimiter.keys("u1", "p1", "192.0.2.1", "sms")
    assert float(await redis_client.client.hget(daily_key, "t")) == 4  # only the allowed call spent one
    assert not await redis_client.client.exists(owner_key)  # admission only checks the owner's bucket
    assert (await limiter.take_owner_token("u1", "sms")).allowed
    assert float(await redis_client.client.hget(owner_key, "t")) == 49


async def test_admission_never_spends_the_owner_token(redis_client):
    limiter = ContactLimiter(redis_client)
    for i in range(60):  # more than the owner's 50 SMS a day, from as many visitors
        assert (await limiter.admit("u1", "p1", f"192.0.2.{i}", "sms")).allowed
    assert not await redis_client.client.exists(ContactLimiter.keys("u1", "p1", "", "sms")[2])
    for _ in range(50):
        assert (await limiter.take_owner_token("u1", "sms")).allowed
    refused = await limiter.take_owner_token("u1", "sms")
    assert refused.refused == ("owner",) and refused.retry_after is None
    assert (await limiter.admit("u1", "p1", "192.0.2.200", "sms")).refused == ("owner",)


async def test_the_last_owner_token_goes_to_one_of_two_admitted_sends(redis_client):
    owner = {c: Rule("owner", 1, DAY) for c in ("sms", "email", "discord")}
    limiter = ContactLimiter(redis_client, Rules(owner=owner))
    other_process = ContactLimiter(redis_client, Rules(owner=owner))
    assert (await limiter.admit("u1", "p1", "192.0.2.1", "email")).allowed
    assert (await other_process.admit("u1", "p1", "192.0.2.2", "email")).allowed  # the token is still there
    takes = await asyncio.gather(limiter.take_owner_token("u1", "email"), other_process.take_owner_token("u1", "email"))
    assert sorted(take.allowed for take in takes) == [False, True]
    [refused] = [take for take in takes if not take.allowed]
    assert refused.refused == ("owner",)
    # The refusing process remembers it: the next admission there is refused without Redis.
    loser = limiter if not takes[0].allowed else other_process
    calls = await limiter_calls(redis_client.client)
    assert (await loser.admit("u1", "p1", "192.0.2.3", "email")).refused == ("owner",)
    assert await limiter_calls(redis_client.client) == calls


async def test_buckets_refill_on_the_redis_clock_and_expire(redis_client):
    limiter = ContactLimiter(redis_client, Rules(burst=Rule("burst", 2, 1.0)))
    assert (await limiter.admit("u1", "p1", "192.0.2.1", "discord")).allowed
    assert (await limiter.admit("u1", "p1", "192.0.2.1", "discord")).allowed
    refused = await limiter.admit("u1", "p1", "192.0.2.1", "discord")
    assert not refused.allowed and refused.retry_after == 1
    burst_key = ContactLimiter.keys("u1", "p1", "192.0.2.1", "discord")[0]
    seconds, micros = await redis_client.client.time()
    stamp = int(await redis_client.client.hget(burst_key, "ts"))
    assert abs(stamp - (seconds * 1_000_000 + micros)) < 2_000_000  # written from Redis TIME
    assert 0 < await redis_client.client.pttl(burst_key) <= 2_000  # gone once it would be full again
    await asyncio.sleep(0.55)  # one token per 0.5 s
    assert (await limiter.admit("u1", "p1", "192.0.2.1", "discord")).allowed


async def test_metrics_count_decisions_and_deliveries(make_server, fakes):
    server = await make_server(**contact_settings(fakes, trusted_proxies=()))
    await server.load(base_document())

    def sample(name, labels):
        return REGISTRY.get_sample_value(name, labels) or 0

    allowed = sample("hepgg_rate_limit_decisions_total", {"channel": "discord", "outcome": "allowed"})
    refused = sample("hepgg_rate_limit_decisions_total", {"channel": "discord", "outcome": "burst"})
    delivered = sample("hepgg_contact_deliveries_total", {"channel": "discord", "outcome": "ok"})
    failed = sample("hepgg_contact_deliveries_total", {"channel": "discord", "outcome": "failed"})
    fakes.discord.replies = [(500, {})]
    assert await burst([server.url], 4) == [200, 200, 429, 502]
    assert sample("hepgg_rate_limit_decisions_total", {"channel": "discord", "outcome": "allowed"}) == allowed + 3
    assert sample("hepgg_rate_limit_decisions_total", {"channel": "discord", "outcome": "burst"}) == refused + 1
    assert sample("hepgg_contact_deliveries_total", {"channel": "discord", "outcome": "ok"}) == delivered + 2
    assert sample("hepgg_contact_deliveries_total", {"channel": "discord", "outcome": "failed"}) == failed + 1


# ---------------------------------------------------------------- refusals remembered in the process


async def limiter_calls(redis_client) -> int:
    stats = await redis_client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))


async def test_a_known_refusal_is_answered_without_redis(redis_client):
    limiter = ContactLimiter(redis_client, Rules(burst=Rule("burst", 1, 60)))
    assert (await limiter.admit("u1", "p1", "192.0.2.1", "discord")).allowed
    first = await limiter.admit("u1", "p1", "192.0.2.1", "discord")
    calls = await limiter_calls(redis_client.client)
    again = [await limiter.admit("u1", "p1", "192.0.2.1", "discord") for _ in range(50)]
    assert await limiter_calls(redis_client.client) == calls  # none of the 50 reached Redis
    assert first.refused == ("burst",) and all(d.refused == ("burst",) for d in again)
    assert first.retry_after == 60 and all(55 <= d.retry_after <= 60 for d in again)
    assert (await limiter.admit("u1", "p1", "192.0.2.2", "discord")).allowed  # another visitor asks Redis
    assert await limiter_calls(redis_client.client) == calls + 1


async def test_a_remembered_refusal_ends_when_the_bucket_refills(redis_client):
    limiter = ContactLimiter(redis_client, Rules(burst=Rule("burst", 1, 0.4)))
    assert (await limiter.admit("u1", "p1", "192.0.2.1", "sms")).allowed
    assert not (await limiter.admit("u1", "p1", "192.0.2.1", "sms")).allowed
    assert len(limiter.memo) == 1
    await asyncio.sleep(0.45)
    assert (await limiter.admit("u1", "p1", "192.0.2.1", "sms")).allowed


async def test_an_empty_owner_bucket_of_one_channel_refuses_only_that_channel(redis_client):
    limiter = ContactLimiter(
        redis_client,
        Rules(
            owner={"sms": Rule("owner", 1, DAY), "email": Rule("owner", 100, DAY), "discord": Rule("owner", 100, DAY)}
        ),
    )
    assert (await limiter.admit("u1", "p1", "192.0.2.1", "sms")).allowed
    assert (await limiter.take_owner_token("u1", "sms")).allowed
    refused = await limiter.admit("u1", "p1", "192.0.2.1", "sms")
    assert refused.refused == ("owner",) and refused.retry_after is None
    assert (await limiter.admit("u1", "p1", "192.0.2.9", "sms")).refused == ("owner",)  # any visitor: from memory
    assert (await limiter.admit("u1", "p1", "192.0.2.1", "email")).allowed  # same visitor, other channel


def test_the_memo_stays_bounded_under_a_flood_of_addresses():
    memo = RefusalMemo(capacity=1_000)
    for i in range(10_000):
        memo.remember(f"k{i}", 60, now=0.0)
    assert len(memo) <= 1_000
    assert memo.refusing(["k9999"], now=1.0) == [(0, 59.0)]  # the newest are kept
    memo.remember("late", 60, now=120.0)  # every earlier refusal has expired by then: pruned, not halved
    assert len(memo) <= 1_000 and memo.refusing(["k9999"], now=120.0) == []
