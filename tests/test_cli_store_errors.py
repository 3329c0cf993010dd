"""Every CLI command ends with one clear line, never a traceback, when Redis or MongoDB fails (issue 15)."""

from __future__ import annotations

import pymongo
import pytest

from conftest import free_port, run_cli

pytestmark = pytest.mark.slow


def stores(store_urls, *, redis: str | None = None, mongo: str | None = None, command=()) -> list[str]:
    redis_url = ["--redis-url", redis or store_urls.redis_url]
    if list(command[:2]) == ["presence", "clear"]:  # needs Redis only, and takes no MongoDB option
        return redis_url
    return [*redis_url, "--mongo-uri", mongo or store_urls.mongo_uri, "--mongo-db", "cli_errors"]


@pytest.mark.parametrize(
    "command",
    [["reconcile"], ["presence", "set", "u1", "--status", "online"], ["presence", "clear", "u1"]],
    ids=["reconcile", "presence-set", "presence-clear"],
)
def test_redis_down(store_urls, command):
    with pymongo.MongoClient(store_urls.mongo_uri) as client:  # `presence set` asks MongoDB first: u1 exists
        client.cli_errors.users.replace_one({"_id": "u1"}, {"_id": "u1"}, upsert=True)
    down = f"redis://127.0.0.1:{free_port()}/0"
    done = run_cli(*command, *stores(store_urls, redis=down, command=command))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: Redis"), done.stderr
    assert "Connection refused" in done.stderr or "connecting to" in done.stderr  # the error text, not a class


@pytest.mark.parametrize("command", [["stats", "p1"], ["reconcile"], ["seed-demo"]], ids=["stats", "reconcile", "seed"])
def test_mongo_down(store_urls, command):
    down = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"
    done = run_cli(*command, *stores(store_urls, mongo=down), timeout=90)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: MongoDB: ServerSelectionTimeoutError"), done.stderr


def test_a_bad_redis_url_is_a_configuration_error(store_urls):
    done = run_cli("stats", "p1", *stores(store_urls, redis="redis+sentinel://127.0.0.1:26379"))
    assert done.returncode == 2
    assert "configuration error: --redis-url" in done.stderr and "service_name" in done.stderr
