"""Owner plans: lapse, restore, slots, manual unpublish, concurrent reconcilers (issue: plans)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from runtime.reconciler import run_once
from store.models import Owner
from store.plans import allowance, decide

from conftest import base_document, run_cli, wait_until

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def owner_doc(premium_until=None, slots=(), approved=True) -> dict:
    return {
        "_id": "u1",
        "premium_until": premium_until,
        "approved": approved,
        "slots": [{"expires_at": s} for s in slots],
    }


def profile(pid: str, day: int, public=1, held_at=None) -> dict:
    doc = {"_id": pid, "is_public": public, "created_at": datetime(2026, 1, day, tzinfo=UTC)}
    if held_at is not None:
        doc["plan_unpublished_at"] = held_at
    return doc


def test_allowance():
    assert allowance(Owner.from_doc(owner_doc()), T0) == 1
    assert allowance(Owner.from_doc(owner_doc(premium_until=T0 + timedelta(days=1))), T0) == 2
    assert allowance(Owner.from_doc(owner_doc(premium_until=T0 - timedelta(days=1))), T0) == 1
    slots = (T0 + timedelta(days=3), T0 - timedelta(days=3), T0 + timedelta(days=30))
    assert allowance(Owner.from_doc(owner_doc(premium_until=T0 + timedelta(days=1), slots=slots)), T0) == 4
    assert allowance(Owner.from_doc(owner_doc(approved=False)), T0) == 0


def test_decide_unpublishes_newest_first_and_republishes_oldest_held_first():
    lapsed = Owner.from_doc(owner_doc(premium_until=T0 - timedelta(seconds=1)))
    changes = decide(lapsed, [profile("a", 1), profile("b", 3), profile("c", 2)], T0)
    assert [(c.profile_id, c.action, c.reason) for c in changes] == [
        ("b", "unpublish", "premium lapsed"),
        ("c", "unpublish", "premium lapsed"),
    ]
    premium = Owner.from_doc(owner_doc(premium_until=T0 + timedelta(days=30)))
    held = [profile("a", 1), profile("b", 3, 0, T0), profile("c", 2, 0, T0), profile("m", 1, 0)]
    assert [(c.profile_id, c.action) for c in decide(premium, held, T0)] == [("c", "republish")]


async def _load_owner(server, *, premium_until, profiles: int, slots=()):
    doc = base_document()
    doc["users"][0]["premium_until"] = premium_until
    doc["users"][0]["slots"] = [{"expires_at": s} for s in slots]
    first = doc["profiles"][0]
    doc["profiles"] = [
        dict(first, id=f"p{i}", domain=f"site{i}.hep.gg", created_at=f"2026-01-0{i}T00:00:00Z")
        for i in range(1, profiles + 1)
    ]
    await server.load(doc)
    return doc


async def _published(server) -> list[str]:
    return sorted([d["_id"] async for d in server.services.db.profiles.find({"is_public": 1}, {"_id": 1})])


async def _reconcile(server, now):
    changes = await run_once(server.services.db, server.services.redis.client, now)
    server.services.sites.invalidate()
    return [(c.profile_id, c.action) for c in changes]


async def test_lapse_with_two_and_three_profiles_then_restore(make_server):
    server = await make_server(reconcile_interval=0)
    premium_until = "2026-06-01T00:00:00Z"
    await _load_owner(server, premium_until=premium_until, profiles=3)
    assert await _reconcile(server, T0 - timedelta(days=1)) == [("p3", "unpublish")]  # premium: 2 allowed
    assert await _published(server) == ["p1", "p2"]
    assert await _reconcile(server, T0 + timedelta(seconds=1)) == [("p2", "unpublish")]  # lapsed: 1 allowed
    assert await _published(server) == ["p1"]
    # the data is kept, the reason recorded, and the pages 404 at once
    held = await server.services.db.profiles.find_one({"_id": "p2"})
    assert held["plan_unpublished_reason"] == "premium lapsed" and held["content"]["display_name"] == "Alice"
    assert (await server.fetch("/", host="site2.hep.gg")).code == 404
    assert (await server.fetch("/", host="site1.hep.gg")).code == 200
    assert await _reconcile(server, T0 + timedelta(seconds=2)) == []  # idempotent

    await server.services.db.users.update_one({"_id": "u1"}, {"$set": {"premium_until": T0 + timedelta(days=30)}})
    # allowance 2 again: one returns, the one held longest (p3, held since before the lapse) first
    assert await _reconcile(server, T0 + timedelta(days=1)) == [("p3", "republish")]
    assert await _published(server) == ["p1", "p3"]
    assert (await server.fetch("/", host="site3.hep.gg")).code == 200
    await server.services.db.users.update_one(
        {"_id": "u1"}, {"$push": {"slots": {"expires_at": T0 + timedelta(days=30)}}}
    )
    assert await _reconcile(server, T0 + timedelta(days=1)) == [("p2", "republish")]  # a bought slot: p2 too


async def test_bought_slot_expiring_and_premium_with_slots(make_server):
    server = await make_server(reconcile_interval=0)
    await _load_owner(
        server, premium_until="2026-07-01T00:00:00Z", profiles=4, slots=["2026-06-10T00:00:00Z", "2026-06-20T00:00:00Z"]
    )
    assert await _reconcile(server, T0) == []  # 2 premium + 2 slots
    assert await _reconcile(server, datetime(2026, 6, 11, tzinfo=UTC)) == [("p4", "unpublish")]
    changes = await _reconcile(server, datetime(2026, 7, 2, tzinfo=UTC))  # premium and 2nd slot gone
    assert changes == [("p3", "unpublish"), ("p2", "unpublish")]
    reasons = {d["_id"]: d["plan_unpublished_reason"] async for d in server.services.db.profiles.find({"is_public": 0})}
    assert reasons == {"p4": "profile slot expired", "p3": "premium lapsed", "p2": "premium lapsed"}


async def test_manual_unpublish_is_never_republished(make_server):
    server = await make_server(reconcile_interval=0)
    doc = await _load_owner(server, premium_until="2026-06-01T00:00:00Z", profiles=2)
    doc["profiles"][1]["is_public"] = 0  # the owner unpublished p2 themselves
    await server.load(doc)
    await server.services.db.users.update_one({"_id": "u1"}, {"$set": {"premium_until": T0 + timedelta(days=60)}})
    assert await _reconcile(server, T0) == []
    assert await _published(server) == ["p1"]


async def test_two_reconcilers_at_once_change_each_profile_once(make_server):
    server = await make_server(reconcile_interval=0)
    await _load_owner(server, premium_until="2020-01-01T00:00:00Z", profiles=3)
    results = await asyncio.gather(
        *(run_once(server.services.db, server.services.redis.client, T0) for _ in range(2)), return_exceptions=True
    )
    outcomes = sorted(type(r).__name__ for r in results)
    assert outcomes == ["ReconcilerBusy", "list"]
    applied = next(r for r in results if isinstance(r, list))
    assert sorted(c.profile_id for c in applied) == ["p2", "p3"]
    assert await server.services.db.plan_changes.count_documents({}) == 2
    # the lock was released: the next run works and finds nothing to do
    assert await run_once(server.services.db, server.services.redis.client, T0) == []


async def test_scheduled_reconciler_inside_serve(make_server):
    server = await make_server(reconcile_interval=0.2)
    await _load_owner(server, premium_until="2020-01-01T00:00:00Z", profiles=2)

    async def reconciled() -> bool:
        return await _published(server) == ["p1"]

    await wait_until(reconciled, timeout=5)


@pytest.mark.slow  # the CLI as a subprocess
def test_reconcile_command_prints_changes(tmp_path, store_urls):
    doc = base_document()
    doc["users"][0]["premium_until"] = "2026-06-01T00:00:00Z"
    doc["profiles"].append(dict(doc["profiles"][0], id="p2", domain="b.hep.gg", created_at="2026-02-01T00:00:00Z"))
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    env = {
        "HEPGG_MONGO_URI": store_urls.mongo_uri,
        "HEPGG_REDIS_URL": store_urls.redis_url,
        "HEPGG_MONGO_DB": f"cli_reconcile_{tmp_path.name}",
    }
    assert run_cli("import", str(path), env=env).returncode == 0
    out = run_cli("reconcile", "--now", "2026-06-02T00:00:00Z", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["changes"] == [
        {"profile": "p2", "owner": "u1", "action": "unpublish", "reason": "premium lapsed"}
    ]
    assert json.loads(run_cli("reconcile", "--now", "2026-06-02T00:00:00Z", env=env).stdout)["changes"] == []
