"""Credits are exact when MongoDB fails between the debit and the delivery's outcome, or a worker dies there.

A send holds its credit (debit and hold in one update), then settles the hold
(delivered) or refunds it (failed). The store is stopped while the delivery is
in flight (a private SecantusDB, tests/private_stores.py) and restarted: the
outcome the worker could not record is retried, and the balance ends exact. A
hold whose worker died is refunded once by the sweepers, however many run.
"""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import timedelta

import pytest
from pymongo.errors import PyMongoError

from contact.credits import Credits, CreditSweeper
from store.changes import _only_uncached_fields
from store.clock import Clock

from conftest import base_document, wait_until
from contact_fakes import contact_settings

SMS_PATH = "/api/v1/profiles/p1/contact/sms"
SMS = {"message": "Hello", "turnstileToken": "good-token"}


async def owner(db) -> dict:
    return await db.users.find_one({"_id": "u1"})


@pytest.fixture
async def server(private_stores, make_server, fakes):  # stores listed first: they outlive the server
    server = await make_server(
        **contact_settings(
            fakes, mongo_uri=private_stores.mongo_uri, redis_url=private_stores.redis_url, delivery_timeout=10.0
        )
    )
    await server.load(base_document())
    return server


@pytest.mark.parametrize("delivered, status, balance", [(False, 502, 5), (True, 200, 4)])
@pytest.mark.slow  # a private MongoDB stopped and restarted, a 4 s delivery, a 5 s sweeper
async def test_store_down_between_debit_and_outcome_then_back_balance_is_exact(
    server, private_stores, fakes, delivered, status, balance
):
    fakes.sms.delay = 4.0  # the delivery is in flight while the store goes down
    fakes.sms.status = 200 if delivered else 500
    send = asyncio.create_task(
        server.fetch(SMS_PATH, json=SMS, headers={"X-Forwarded-For": "198.51.100.1"}, request_timeout=30)
    )
    db = server.services.db
    await wait_until(lambda: len(fakes.sms.requests) == 1, timeout=20)
    held = await owner(db)
    assert held["sms_credits"] == 4 and len(held["credit_holds"]) == 1  # debit and hold, in one update
    await asyncio.to_thread(private_stores.mongo.stop)
    response = await send
    assert response.code == status  # the visitor's answer does not wait for the store
    assert server.services.contact.credits.unrecorded  # the outcome waits for MongoDB
    await asyncio.to_thread(private_stores.mongo.start)

    async def exact() -> bool:
        doc = await owner(db)
        return doc["sms_credits"] == balance and doc["credit_holds"] == []

    await wait_until(exact, timeout=40, interval=0.1, retry_on=(PyMongoError,))  # the sweeper retries every 5 s
    assert not server.services.contact.credits.unrecorded


async def test_a_hold_left_by_a_dead_worker_is_refunded_exactly_once(make_server):
    server = await make_server()
    await server.load(base_document())
    db = server.services.db
    clock = Clock()
    dead_worker = Credits(db, clock)
    stale = await dead_worker.hold("u1", "email")
    assert stale is not None
    clock.offset = timedelta(minutes=10)  # later: the dead worker's hold is past the bound
    fresh = await Credits(db, clock).hold("u1", "email")  # a live send's hold: not to be touched
    sweepers = [CreditSweeper(Credits(db, clock), hold_timeout=timedelta(minutes=5)) for _ in range(4)]
    refunded = await asyncio.gather(*(sweeper.sweep() for sweeper in sweepers))
    assert sum(refunded) == 1
    doc = await owner(db)
    assert doc["email_credits"] == 4  # 5 - 2 held + 1 refunded
    assert [hold["id"] for hold in doc["credit_holds"]] == [fresh.id]
    assert sum(await asyncio.gather(*(sweeper.sweep() for sweeper in sweepers))) == 0  # nothing twice


async def test_a_settle_or_refund_removes_the_hold_once(make_server):
    server = await make_server()
    await server.load(base_document())
    db = server.services.db
    credits = Credits(db, Clock())
    holds = [await credits.hold("u1", "sms") for _ in range(5)]
    assert await credits.hold("u1", "sms") is None  # the balance is 5
    for hold in holds[:2]:
        await credits.settle(hold)
    for hold in holds[2:]:
        await credits.refund(hold)
        await credits.refund(hold)  # a second refund of the same hold gives nothing
    doc = await owner(db)
    assert doc["sms_credits"] == 3 and doc["credit_holds"] == []


async def test_holds_do_not_evict_the_owners_cached_sites(make_server, fakes):
    doc = base_document()
    doc["users"].append(copy.deepcopy(doc["users"][0]) | {"id": "u2"})
    doc["profiles"].append(copy.deepcopy(doc["profiles"][0]) | {"id": "p2", "owner_id": "u2", "domain": "bob.hep.gg"})
    server = await make_server(**contact_settings(fakes), profile_cache_ttl=300)
    await server.load(doc)
    await asyncio.wait_for(server.services.change_watcher.active.wait(), 10)
    sites = server.services.sites
    alice, bob = await sites.by_host("alice.hep.gg"), await sites.by_host("bob.hep.gg")
    for status in (200, 502):  # a settled send and a refunded one: hold pushed, then pulled
        fakes.sms.status = 200 if status == 200 else 500
        response = await server.fetch(SMS_PATH, json=SMS, headers={"X-Forwarded-For": f"198.51.100.{status % 250}"})
        assert response.code == status, response.body
    await server.services.db.users.update_one({"_id": "u2"}, {"$set": {"suspended": True}})  # change streams keep order

    async def bob_changed() -> bool:
        return await sites.by_host("bob.hep.gg") is not bob

    await wait_until(bob_changed, timeout=10)  # u2's change arrived, so u1's hold events did before it
    assert await sites.by_host("alice.hep.gg") is alice


@pytest.mark.parametrize(
    "description, uncached",
    [
        ({"updatedFields": {"sms_credits": 4, "credit_holds.0": {"id": "h"}}}, True),  # $inc + $push
        ({"updatedFields": {"email_credits": 5, "credit_holds": []}}, True),  # $inc + $pull
        ({"updatedFields": {}, "truncatedArrays": [{"field": "credit_holds", "newSize": 0}]}, True),
        ({"updatedFields": {"credit_holds.0": {}, "suspended": True}}, False),
        ({"updatedFields": {"sms.enabled": False}}, False),
        ({"updatedFields": {}, "removedFields": []}, False),
    ],
)
def test_the_eviction_filter_ignores_credit_and_hold_fields_only(description, uncached):
    change = {"operationType": "update", "updateDescription": json.loads(json.dumps(description))}
    assert _only_uncached_fields(change) is uncached
