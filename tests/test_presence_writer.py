"""The Discord bot's writer contract: validation, the pipeline, and the `presence` CLI (issue 8)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pymongo
import pytest
import redis.asyncio as aioredis

from presence.snapshot import SnapshotError, validate_snapshot
from presence.writer import write_presence

from conftest import run_cli

NOW = datetime(2026, 5, 29, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
async def redis_client(store_urls, clean_redis):
    client = aioredis.Redis.from_url(store_urls.redis_url, decode_responses=True)
    yield client
    await client.aclose()


def test_valid_snapshot_is_normalised_with_writer_timestamp():
    clean = validate_snapshot(
        {
            "activity": {"type": 2, "name": "Spotify", "startedAt": 1, "endsAt": 2, "details": None},
            "status": "online",
            "updatedAt": "1999-01-01T00:00:00Z",
        },
        NOW,
    )
    assert clean == {
        "status": "online",
        "activity": {"name": "Spotify", "type": 2, "startedAt": 1, "endsAt": 2},
        "updatedAt": "2026-05-29T12:00:00.123Z",
    }
    assert list(clean) == ["status", "activity", "updatedAt"]


@pytest.mark.parametrize(
    "snapshot, message",
    [
        ({"status": "busy"}, "status must be one of online, idle, dnd, offline"),
        ({}, "status must be one of"),
        ("online", "snapshot must be an object"),
        ({"status": "online", "mood": "happy"}, "unknown field(s): mood"),
        ({"status": "online", "activity": []}, "activity must be an object"),
        ({"status": "online", "activity": {"name": "x"}}, "activity.type is required"),
        ({"status": "online", "activity": {"type": 6}}, "activity.type must be an integer from 0 to 5"),
        ({"status": "online", "activity": {"type": True}}, "activity.type must be an integer from 0 to 5"),
        ({"status": "online", "activity": {"type": "2"}}, "activity.type must be an integer from 0 to 5"),
        ({"status": "online", "activity": {"type": 0, "name": 5}}, "activity.name must be a string"),
        ({"status": "online", "activity": {"type": 0, "details": "x" * 513}}, "activity.details must be at most 512"),
        ({"status": "online", "activity": {"type": 0, "startedAt": 1.5}}, "activity.startedAt must be a Unix epoch"),
        ({"status": "online", "activity": {"type": 0, "endsAt": -1}}, "activity.endsAt must be a Unix epoch"),
        ({"status": "online", "activity": {"type": 0, "startedAt": 10, "endsAt": 5}}, "endsAt must not be before"),
        ({"status": "online", "activity": {"type": 0, "url": "x"}}, "unknown field(s): url"),
    ],
)
async def test_bad_snapshot_is_rejected_and_nothing_written(redis_client, snapshot, message):
    with pytest.raises(SnapshotError) as info:
        await write_presence(redis_client, "w1", snapshot)
    assert message in str(info.value)
    assert await redis_client.get("presence:w1") is None


@pytest.mark.parametrize("user_id", ["", "   ", "x" * 129, "a\nb", None])
async def test_bad_user_id_is_rejected(redis_client, user_id):
    with pytest.raises(SnapshotError):
        await write_presence(redis_client, user_id, {"status": "online"})


async def test_write_is_one_transaction_of_set_and_publish(redis_client):
    pubsub = redis_client.pubsub()
    await pubsub.subscribe("presence:w2")
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    written = await write_presence(redis_client, "w2", {"status": "idle"}, ttl=42)
    message = await pubsub.get_message(timeout=2)
    assert json.loads(message["data"]) == written
    assert json.loads(await redis_client.get("presence:w2")) == written
    assert 40_000 < await redis_client.pttl("presence:w2") <= 42_000
    await pubsub.aclose()


@pytest.mark.slow  # the CLI as a subprocess
def test_cli_set_and_clear(store_urls, clean_redis, tmp_path):
    url = store_urls.redis_url
    mongo = ("--mongo-uri", store_urls.mongo_uri, "--mongo-db", f"cli_presence_{tmp_path.name}")
    with pymongo.MongoClient(store_urls.mongo_uri) as client:
        client[mongo[3]].users.insert_one({"_id": "cli-user"})
    result = run_cli(
        "presence",
        "set",
        "cli-user",
        "--redis-url",
        url,
        *mongo,
        "--status",
        "online",
        "--activity-name",
        "Spotify",
        "--type",
        "2",
        "--details",
        "Song",
        "--state",
        "Artist",
        "--started-at",
        "1716900000000",
        "--ends-at",
        "1716900210000",
        "--large-image",
        "spotify:abc",
        "--large-text",
        "Album",
    )
    assert result.returncode == 0, result.stderr
    written = json.loads(result.stdout)
    assert written["activity"] == {
        "name": "Spotify",
        "type": 2,
        "details": "Song",
        "state": "Artist",
        "startedAt": 1716900000000,
        "endsAt": 1716900210000,
        "largeImage": "spotify:abc",
        "largeText": "Album",
    }
    import redis

    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        assert json.loads(client.get("presence:cli-user")) == written
        assert 290 < client.ttl("presence:cli-user") <= 300
        result = run_cli("presence", "clear", "cli-user", "--redis-url", url)
        assert result.returncode == 0, result.stderr
        assert client.get("presence:cli-user") is None
    finally:
        client.close()


@pytest.mark.slow  # the CLI as a subprocess
def test_cli_set_refuses_a_user_mongodb_does_not_know(store_urls, clean_redis, tmp_path):
    mongo = ("--mongo-uri", store_urls.mongo_uri, "--mongo-db", f"cli_presence_{tmp_path.name}")
    result = run_cli("presence", "set", "nobody", "--redis-url", store_urls.redis_url, *mongo, "--status", "online")
    assert result.returncode == 1
    assert result.stderr.startswith("error: no user 'nobody' in MongoDB") and "nothing was written" in result.stderr
    assert "Traceback" not in result.stderr
    import redis

    client = redis.Redis.from_url(store_urls.redis_url)
    try:
        assert client.get("presence:nobody") is None
        assert run_cli("presence", "clear", "nobody", "--redis-url", store_urls.redis_url).returncode == 0
    finally:
        client.close()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--status", "busy"], "status must be one of"),
        (["--status", "online", "--type", "9"], "activity.type must be an integer from 0 to 5"),
        (["--status", "online", "--type", "0", "--started-at", "soon"], "--started-at must be a whole number"),
    ],
)
@pytest.mark.slow
def test_cli_rejects_bad_snapshot(store_urls, clean_redis, args, message):
    result = run_cli("presence", "set", "cli-bad", "--redis-url", store_urls.redis_url, *args)
    assert result.returncode == 1
    assert message in result.stderr and "nothing was written" in result.stderr
    import redis

    client = redis.Redis.from_url(store_urls.redis_url)
    try:
        assert client.get("presence:cli-bad") is None
    finally:
        client.close()
