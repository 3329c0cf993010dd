"""Views and plays are counted exactly once, whatever fails (issue 19, item 4).

Against the real MongoDB and Redis: a corrupt `profile_stats` document (a
counter that is not a number) must neither block nor inflate the other
profiles' counters, a write whose reply is lost must not be applied twice on
retry, one profile's `plays_by_isrc` cannot grow without bound, and a profile
whose Redis de-duplication fails holds back only its own events.
"""

from __future__ import annotations

import logging

import pytest
from pymongo.errors import AutoReconnect

from store import stats as stats_module
from store.stats import PARK_AFTER, play_dedup_key, read_stats, view_dedup_key

from conftest import base_document

UA = "Mozilla/5.0 (X11; Linux x86_64) Chrome/140.0"


def three_profiles() -> dict:
    document = base_document()
    for n in (2, 3):
        profile = dict(document["profiles"][0], id=f"p{n}", domain=f"p{n}.hep.gg")
        document["profiles"].append(profile)
    return document


@pytest.fixture
async def server(make_server):
    server = await make_server(view_flush_interval=300)  # the test flushes by hand
    await server.load(three_profiles())
    return server


def view(server, profile_id: str, n: int) -> None:
    server.services.stats.record_view(profile_id, "u1", server.services.clock.now(), f"203.0.113.{n}", UA, None)


async def events(server, profile_id: str, kind: str = "view") -> int:
    return await server.services.db.stat_events.count_documents({"profile_id": profile_id, "kind": kind})


async def test_a_corrupt_stats_document_blocks_and_inflates_nothing(server, caplog):
    db, stats = server.services.db, server.services.stats
    for n in range(3):  # every profile has a stats document
        for profile_id in ("p1", "p2", "p3"):
            view(server, profile_id, n)
    await stats.flush()
    assert [(await read_stats(db, p))["views"] for p in ("p1", "p2", "p3")] == [3, 3, 3]
    await db.profile_stats.update_one({"_id": "p2"}, {"$set": {"views": "not a number"}})

    visitors = iter(range(10, 1000))
    for _ in range(PARK_AFTER + 3):  # enough flushes for p2's unit to be parked and the next one to start
        for profile_id in ("p1", "p2", "p3"):
            for _ in range(5):
                view(server, profile_id, next(visitors))
        await stats.flush()

    p1, p3 = await read_stats(db, "p1"), await read_stats(db, "p3")
    accepted = 3 + 5 * (PARK_AFTER + 3)
    assert (p1["views"], p3["views"]) == (accepted, accepted)
    assert (await events(server, "p1"), await events(server, "p3")) == (accepted, accepted)
    assert (await db.profile_stats.find_one({"_id": "p2"}))["views"] == "not a number"  # left for the operator
    waiting = stats.pending  # p2's newer events: in a unit in flight, or waiting behind it
    assert waiting > 0 and await events(server, "p2") + waiting >= accepted
    [parked] = await db.stats_parked.find({"profile_id": "p2"}).to_list()
    assert parked["increments"] == {"views": 5}  # the first unit after the corruption, set aside with its count
    assert any("parked unit" in r.message for r in caplog.records if r.levelno == logging.ERROR)
    # More flushes change nothing for the healthy profiles.
    for _ in range(3):
        await stats.flush()
    assert (await read_stats(db, "p1"))["views"] == accepted


def intercept_profile_stats_writes(monkeypatch, server, hook) -> None:
    """Run `hook(write, requests)` around every bulk_write on profile_stats (the real write is `write()`)."""
    cls = type(server.services.db.profile_stats)
    original = cls.bulk_write

    async def bulk_write(self, requests, *args, **kwargs):
        write = lambda: original(self, requests, *args, **kwargs)  # noqa: E731
        return await (hook(write, requests) if self.name == "profile_stats" else write())

    monkeypatch.setattr(cls, "bulk_write", bulk_write)


def increments(requests) -> bool:
    return any("$inc" in getattr(request, "_doc", {}) for request in requests)


async def test_a_lost_reply_is_not_applied_twice(server, monkeypatch):
    db, stats = server.services.db, server.services.stats
    lost = {"replies": 0}

    async def reply_lost(write, requests):
        result = await write()
        if increments(requests) and lost["replies"] < 3:
            lost["replies"] += 1
            raise AutoReconnect("connection closed before the reply")  # the write happened; we can't know
        return result

    intercept_profile_stats_writes(monkeypatch, server, reply_lost)
    for n in range(7):
        view(server, "p1", n)
    for _ in range(5):
        await stats.flush()
    monkeypatch.undo()
    assert lost["replies"] == 3
    assert (await read_stats(db, "p1"))["views"] == 7
    assert stats.pending == 0


async def test_a_profile_document_is_upserted_once_per_process_not_per_flush(server, monkeypatch):
    """A busy profile's flushes are its events and one conditional $inc each; the upsert that creates its
    profile_stats document happens on the first flush only (it was one more write every tick)."""
    stats = server.services.stats
    writes: list[str] = []

    async def count(write, requests):
        writes.append("apply" if increments(requests) else "upsert")
        return await write()

    intercept_profile_stats_writes(monkeypatch, server, count)
    for n in range(5):
        view(server, "p1", n)
        await stats.flush()
    monkeypatch.undo()
    assert writes == ["upsert"] + ["apply"] * 5
    assert (await read_stats(server.services.db, "p1"))["views"] == 5


async def test_views_recorded_while_a_unit_is_retried_wait_and_count_once(server, monkeypatch):
    db, stats = server.services.db, server.services.stats
    for n in range(4):
        view(server, "p1", n)
    failing = {"on": True}

    async def maybe_down(write, requests):
        if failing["on"]:
            raise AutoReconnect("store down")
        return await write()

    intercept_profile_stats_writes(monkeypatch, server, maybe_down)
    await stats.flush()
    for n in range(4, 10):
        view(server, "p1", n)
    await stats.flush()
    failing["on"] = False
    await stats.flush()  # the first unit
    await stats.flush()  # the second
    monkeypatch.undo()
    assert (await read_stats(db, "p1"))["views"] == 10
    assert await events(server, "p1") == 10


async def test_plays_by_isrc_keeps_at_most_the_cap_of_distinct_tracks(server, monkeypatch):
    monkeypatch.setattr(stats_module, "MAX_ISRC_KEYS", 3)
    stats = server.services.stats
    now = server.services.clock.now()
    for round_ in range(2):
        for n in range(5):
            stats.record_play("p1", "u1", now, f"USRC1760000{n}", f"203.0.113.{round_ * 10 + n}", UA)
        await stats.flush()
    result = await read_stats(server.services.db, "p1")
    assert result["plays"] == 10
    assert len(result["plays_by_isrc"]) == 3
    assert sum(result["plays_by_isrc"].values()) == 6  # the first three tracks, twice each


async def test_one_claim_per_profile_dedups_within_a_batch_and_a_failing_claim_holds_back_only_its_profile(
    server, caplog
):
    """A batch's dedup is one claim script per profile (views and plays of a profile share its hash tag).
    A duplicate inside the batch counts once. A claim that fails part-way (here: one of p2's keys holds a
    hash, so its SET fails) keeps that profile's events for the next flush and counts the others; the
    keys the failed script had already set hold their events' ids, so the retry counts those once."""
    db, stats, redis = server.services.db, server.services.stats, server.services.redis.client
    now = server.services.clock.now()
    poisoned = view_dedup_key("p2", "203.0.113.3", UA)
    await redis.hset(poisoned, "not", "a dedup key")
    for n in range(1, 6):
        for profile_id in ("p1", "p2", "p3"):
            view(server, profile_id, n)
            view(server, profile_id, n)  # the same visitor again, in the same batch
    stats.record_play("p2", "u1", now, "USRC17600001", "203.0.113.1", UA)
    stats.record_play("p2", "u1", now, "USRC17600001", "203.0.113.1", UA)
    await stats.flush()
    assert [(await read_stats(db, p))["views"] for p in ("p1", "p2", "p3")] == [5, 0, 5]
    async with stats.paused():
        assert stats.pending == 12  # p2's ten views and two plays, kept: none counted, none dropped
    assert "stats dedup failed for 12 events" in caplog.text
    # The script stopped at the fourth key: the three before it were set, to their events' ids.
    assert await redis.get(view_dedup_key("p2", "203.0.113.2", UA)) is not None
    assert await redis.get(view_dedup_key("p2", "203.0.113.4", UA)) is None
    await redis.delete(poisoned)
    await stats.flush()
    p2 = await read_stats(db, "p2")
    assert (p2["views"], p2["plays"]) == (5, 1)
    assert await redis.ttl(play_dedup_key("p2", "USRC17600001", "203.0.113.1", UA)) > 0
    assert stats.pending == 0
    for n in range(1, 6):  # later batches: still duplicates within the 30 s
        view(server, "p2", n)
    await stats.flush()
    assert (await read_stats(db, "p2"))["views"] == 5


@pytest.mark.parametrize("scan", [None, 700])
async def test_a_backlog_is_written_in_bounded_rounds_in_one_flush(server, monkeypatch, scan):
    """A queue longer than a round (a burst past what MongoDB takes, or what an outage left) is written in
    rounds of at most a unit per profile, each unit at most MAX_UNIT_EVENTS: one unit of all of it had to fit
    in one operation's timeout, and a unit that timed out was retried whole and never got smaller. With a
    round's scan shorter than the queue (700), the events past it wait for the next round, none dropped."""
    if scan is not None:
        monkeypatch.setattr(stats_module, "MAX_ROUND_SCAN", scan)
    db, stats = server.services.db, server.services.stats
    p1_views = 2 * stats_module.MAX_UNIT_EVENTS + 500
    for n in range(p1_views):
        stats.record_view("p1", "u1", server.services.clock.now(), f"10.1.{n // 256}.{n % 256}", UA, None)
    for n in range(300):
        view(server, "p2", n)
    await stats.flush()
    assert stats.pending == 0
    assert (await read_stats(db, "p1"))["views"] == p1_views
    assert (await read_stats(db, "p2"))["views"] == 300
    assert await events(server, "p1") == p1_views
    p1_units = (await db.profile_stats.find_one({"_id": "p1"}))["applied"]
    assert len(p1_units) == (3 if scan is None else 4)  # 1,000 + 1,000 + 500; or 700 + 700 + 700 + 400
    assert len((await db.profile_stats.find_one({"_id": "p2"}))["applied"]) == 1
