"""The operators' locust load test, run for real: locust (its own process, gevent) against a real server.

The server is the test app with the contact third parties as local fakes (the
Turnstile fake answering as Cloudflare does for its always-pass test secret)
and a local music worker; the load test's presence publisher writes to the
server's Redis. Assertions read locust's own CSV report.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
import time

import pytest

from loadtest.publisher import PresencePublisher
from loadtest.seed import loadtest_document
from loadtest.sse import SseParser, sent_time, stamped_snapshot, updated_at
from loadtest.targets import host_list, parse_page, with_isrc
from store.importer import import_document

from conftest import ROOT, base_document, wait_until
from contact_fakes import FakeTurnstile, contact_settings
from music_upstream import Upstream

CLOUDFLARE_TEST_SECRET = "1x0000000000000000000000000000000AA"  # Cloudflare's documented "always passes"
CLOUDFLARE_TEST_SITEKEY = "1x00000000000000000000AA"
RUN_SECONDS = 12


class CloudflareTestTurnstile(FakeTurnstile):
    """Siteverify as Cloudflare answers for its test secrets: the always-pass secret accepts any token."""

    secret = CLOUDFLARE_TEST_SECRET

    async def answer(self, handler) -> None:
        form = {k: v[0].decode() for k, v in handler.request.body_arguments.items()}
        ok = form.get("secret") == self.secret and bool(form.get("response"))
        handler.finish({"success": ok, "error-codes": [] if ok else ["invalid-input-secret"]})


async def run_locust(csv_prefix, host: str, *options: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEPGG_", "LOCUST_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "loadtest" / "locustfile.py"),
        "--headless",
        "--host",
        host,
        "--csv",
        str(csv_prefix),
        "-t",
        f"{RUN_SECONDS}s",
        "--loglevel",
        "WARNING",
        *options,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), RUN_SECONDS + 25)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode, output.decode(errors="replace")


def read_stats(csv_prefix) -> dict[tuple[str, str], dict]:
    with open(f"{csv_prefix}_stats.csv", newline="") as f:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}


async def test_targets_are_read_from_the_real_page(app_server):
    await app_server.load(base_document())
    page = await app_server.fetch("/", host="alice.hep.gg")
    site = parse_page("alice.hep.gg", page.body.decode())
    assert site.og_path.startswith("/api/v1/profiles/p1/og.png?v=")
    assert site.snapshot_path == "/api/v1/profiles/presence/u1"
    assert site.stream_path == "/api/v1/profiles/presence/u1/stream"
    assert site.presence_user == "u1"
    assert site.music_paths == ["/api/v1/profiles/p1/music/USRC17607839"]
    assert site.contact_paths == {c: f"/api/v1/profiles/p1/contact/{c}" for c in ("email", "sms", "discord")}
    assert with_isrc(site.music_paths[0], "GBAYE0601498") == "/api/v1/profiles/p1/music/GBAYE0601498"


async def test_publisher_writes_what_the_snapshot_endpoint_serves(app_server, store_urls):
    publisher = PresencePublisher(store_urls.redis_url, ttl=30)
    try:
        # No stream is open, so the hub has not subscribed: nobody receives the PUBLISH, the SET stays.
        assert publisher.write("u1", stamped_snapshot(1767225600.123456, 7)) == 0
    finally:
        publisher.close()
    answer = json.loads((await app_server.fetch("/api/v1/profiles/presence/u1")).body)
    snapshot = answer["data"]["presence"]
    assert sent_time(snapshot) == 1767225600.123456
    assert snapshot["activity"]["startedAt"] == 1767225600123
    assert abs(updated_at(snapshot) - time.time()) < 5  # the writer's clock, as presence/writer.py sets it


def test_sse_parser_handles_split_chunks_comments_and_retry_hints():
    parser = SseParser()
    assert parser.feed(b"event: presence\nda") == []
    assert parser.feed(b'ta: {"status":"idle"}\n\n: ping\n\nevent: presence\ndata: null\n\nretry: 5000\n\n') == [
        *SseParser().feed(b'event: presence\ndata: {"status":"idle"}\n\n'),
        *SseParser().feed(b"event: presence\ndata: null\n\n"),
        *SseParser().feed(b"retry: 5000\n\n"),
    ]
    messages = SseParser().feed(b'event: presence\ndata: {"a":1}\n\nretry: 5000\n\n')
    assert [(m.event, m.json() if m.data else None, m.retry) for m in messages] == [
        ("presence", {"a": 1}, None),
        ("retry", None, 5000),
    ]
    assert (
        sent_time({"status": "online", "activity": {"name": "Spotify", "type": 2, "details": "sent=1.5 seq=1"}}) is None
    )  # only the load test's own activity carries a stamp


async def test_seed_document_imports_and_matches_the_locust_hosts(make_config, clean_redis):
    from common.lifecycle import Lifecycle
    from runtime.services import open_stores

    config = make_config()
    lifecycle = Lifecycle()
    try:
        stores = await open_stores(config, config.mongo_uri, config.redis_url, lifecycle)
        document = loadtest_document(3, "hep.gg", "lt-", "worker-key", "USRC17607839", 100)
        report = await import_document(stores.db, document)
        assert report.ok, report.errors
    finally:
        assert not await lifecycle.close(timeout_each=15)
    assert [p["domain"] for p in document["profiles"]] == host_list("", "hep.gg", "", "lt-", 3)
    assert host_list("a, b", "Hep.GG.", "Shop.Example") == ["a.hep.gg", "b.hep.gg", "shop.example"]


@pytest.mark.slow
async def test_locustfile_runs_every_user_class_without_failures(make_server, fakes, store_urls, tmp_path):
    turnstile = CloudflareTestTurnstile().start()
    upstream = Upstream().start()
    try:
        server = await make_server(
            **contact_settings(
                fakes,
                turnstile_verify_url=turnstile.verify_url,
                turnstile_secret=CLOUDFLARE_TEST_SECRET,
                turnstile_sitekey=CLOUDFLARE_TEST_SITEKEY,
                music_upstream_url=upstream.url,
            )
        )
        document = base_document()
        document["users"][0].update(sms_credits=1, email_credits=1)  # the second allowed send is a 402
        await server.load(document)

        held: list[int] = []  # SSE streams open on the server, sampled through the run

        async def sample() -> None:
            while True:
                held.append(server.services.presence.hub.listener_count)
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        out = tmp_path / "out"
        code, output = await run_locust(
            out,
            server.url,
            "-u",
            "10",
            "-r",
            "10",
            "--slugs",
            "alice",
            "--base-domain",
            "hep.gg",
            "--redis-url",
            store_urls.redis_url,
            "--publish-interval",
            "0.5",
            "--music-kbps",
            "4000",
            "--wait-scale",
            "0.2",
            "--og-share",
            "0.5",
            "--forwarded-for",
            "--page-weight",
            "2",
            "--sse-weight",
            "3",
            "--music-weight",
            "2",
            "--contact-weight",
            "2",
            "--sse-hold-seconds",
            "3",
        )
        sampler.cancel()
        stats = read_stats(out)
        assert code == 0, output
        # Locust closed what it held at the stop: the server sees every SSE stream and music stream go.
        hub, music = server.services.presence.hub, server.services.music
        await wait_until(
            lambda: hub.listener_count == 0 and not music.streams, timeout=2, message="streams outlived locust"
        )
    finally:
        await upstream.stop()
        await turnstile.stop()

    assert "Traceback" not in output, output
    total = stats[("", "Aggregated")]
    assert int(total["Failure Count"]) == 0, output

    def count(kind: str, name: str) -> int:
        row = stats.get((kind, name))
        return int(row["Request Count"]) if row else 0

    for kind, name in [
        ("GET", "page"),
        ("GET", "og.png"),
        ("GET", "presence snapshot"),
        ("GET", "presence stream"),
        ("SSE", "first event"),
        ("SSE", "fan-out latency"),
        ("GET", "music"),
        ("MUSIC", "time to first byte"),
        ("MUSIC", "stream"),
        ("REDIS", "publish presence"),
    ]:
        assert count(kind, name) > 0, (kind, name, sorted(stats))

    # Three listeners reconnecting every 3 s: each closed its stream before opening the next.
    assert 1 <= max(held) <= 3 and count("SSE", "first event") >= 9, (max(held), count("SSE", "first event"))

    # Fan-out: every stream held through the run got most of the ~24 stamped publishes, each in well under 1 s.
    fan_out = stats[("SSE", "fan-out latency")]
    assert count("SSE", "fan-out latency") >= 3 * count("REDIS", "publish presence") // 2
    assert 0 <= float(fan_out["Average Response Time"]) < 500
    assert float(fan_out["Average Content Size"]) > 50  # the snapshot JSON

    # Music: whole 300,000-byte tracks (the listen limit is 30 s, a track takes ~0.6 s at 4,000 kbit/s).
    music = stats[("MUSIC", "stream")]
    assert float(music["Average Content Size"]) == len(upstream.body)
    assert float(music["Average Response Time"]) >= 500  # paced, not read at loopback speed
    assert 0 < float(stats[("MUSIC", "time to first byte")]["Average Response Time"]) < 2000

    # Contact: sends that passed Turnstile (the fakes got them), and the expected refusals under their own names.
    delivered = sum(count("POST", f"contact {c}") for c in ("sms", "email", "discord"))
    refused = [
        name for kind, name in stats if kind == "POST" and name.endswith(("[429 rate-limited]", "[402 out of credits]"))
    ]
    assert delivered > 0 and refused, sorted(stats)
    assert len(turnstile.requests) >= delivered
    assert all(r.form()["response"] == "XXXX.DUMMY.TOKEN.XXXX" for r in turnstile.requests)
