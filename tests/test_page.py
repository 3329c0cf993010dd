"""The host-routed profile page (issue: foundation)."""

from __future__ import annotations

import asyncio
import copy
import re
from datetime import UTC, datetime, timedelta

import pytest

from handlers.page import PAGE_VARIANTS_KEPT
from store.redis_connect import connect

from conftest import base_document, wait_until


def record_calls(monkeypatch, obj, name: str) -> list:
    """Wrap the coroutine method `obj.name` so each call's first argument is recorded; returns the record."""
    calls: list = []
    original = getattr(obj, name)

    async def recording(arg, **kwargs):
        calls.append(arg)
        return await original(arg, **kwargs)

    monkeypatch.setattr(obj, name, recording)
    return calls


BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0 Safari/537.36"


async def test_published_profile_renders_with_head_tags(app_server):
    await app_server.load(base_document())
    response = await app_server.fetch("/", host="Alice.HEP.gg:8888", headers={"User-Agent": BROWSER_UA})
    assert response.code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    html = response.body.decode()
    og = re.search(r'<meta property="og:image" content="([^"]+)"', html).group(1)
    assert og.startswith(f"{app_server.config.public_origin}/api/v1/profiles/p1/og.png")
    assert f'<meta name="twitter:image" content="{og}">' in html
    assert '<meta name="twitter:card" content="summary_large_image">' in html
    assert '<meta property="og:title" content="Alice">' in html
    assert '<meta name="theme-color" content="#7c3aed">' in html
    assert '<link rel="canonical" href="http://alice.hep.gg:8888/">' in html


async def test_host_routing_matrix(make_server):
    server = await make_server(exempt_domains=("hep.lol",), dashboard_url="https://hep.gg/dashboard")
    await server.load(base_document())
    cases = [
        ("alice.hep.gg", 200, None),
        ("ALICE.hep.gg:443", 200, None),
        ("nobody.hep.gg", 404, None),
        ("my-site.example", 302, "https://hep.gg/"),  # unmatched custom domain → apex
        ("hep.gg", 302, "https://hep.gg/dashboard"),  # apex → dashboard
        ("hep.lol", 302, "https://hep.gg/dashboard"),  # exempt root → dashboard
    ]
    for host, code, location in cases:
        response = await server.fetch("/", host=host, headers={"User-Agent": BROWSER_UA})
        assert (host, response.code) == (host, code)
        assert response.headers.get("Location") == location


async def test_single_segment_paths_fall_through_without_profile_lookup(app_server, monkeypatch):
    await app_server.load(base_document())
    looked_up = record_calls(monkeypatch, app_server.services.sites, "by_host")
    response = await app_server.fetch("/abc123", host="alice.hep.gg")
    assert response.code == 404
    assert looked_up == []


async def test_visibility_rules(app_server):
    doc = base_document()
    doc["profiles"] += [
        dict(doc["profiles"][0], id="p2", domain="private.hep.gg", is_public=0),
        dict(doc["profiles"][0], id="p3", domain="banned.hep.gg", suspended=1),
        dict(doc["profiles"][0], id="p4", domain="old.hep.gg", expires_at="2020-01-01T00:00:00Z"),
        dict(doc["profiles"][0], id="p5", domain="later.hep.gg", expires_at="2099-01-01T00:00:00Z"),
        dict(doc["profiles"][0], id="p6", owner_id="u2", domain="owner-banned.hep.gg"),
        dict(doc["profiles"][0], id="p7", domain="custom-private.example", is_public=0),
    ]
    doc["users"].append({"id": "u2", "suspended": True})
    await app_server.load(doc)
    expected = {
        "alice.hep.gg": 200,
        "private.hep.gg": 404,
        "banned.hep.gg": 404,
        "old.hep.gg": 404,
        "later.hep.gg": 200,
        "owner-banned.hep.gg": 404,
        "custom-private.example": 302,
    }
    for host, code in expected.items():
        response = await app_server.fetch("/", host=host)
        assert (host, response.code) == (host, code)


HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


async def test_owner_content_is_escaped(app_server):
    doc = base_document()
    doc["profiles"][0]["content"] = {
        "display_name": HOSTILE,
        "bio": HOSTILE + "</style><style>body{display:none}",
        "avatar_url": 'https://img.example/a.png?x="><script>alert(3)</script>',
        "links": [{"label": HOSTILE, "url": 'https://example.com/?q="><script>alert(4)</script>'}],
        "music": [{"isrc": "USRC17607839", "title": HOSTILE, "artist": HOSTILE}],
    }
    await app_server.load(doc)
    html = (await app_server.fetch("/", host="alice.hep.gg")).body.decode()
    assert "<script>alert" not in html
    assert "<img src=x" not in html  # the tag never appears unescaped
    assert '"><script>' not in html  # no attribute breakout
    assert 'src="https://img.example/a.png?x=&quot;&gt;&lt;script&gt;' in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "</style><style>" not in html


async def test_unsafe_links_and_theme_values_are_refused_by_import(app_server):
    from store.importer import import_document

    doc = base_document()
    doc["profiles"][0]["content"]["links"] = [
        {"label": "x", "url": "javascript:alert(1)"},
        {"label": "y", "url": "data:text/html,<script>"},
    ]
    doc["profiles"][0]["theme"] = {
        "accent": "red;}</style><script>",
        "background": "url(javascript:x)",
        "font": "Comic Sans'; }",
    }
    report = await import_document(app_server.services.db, doc)
    assert not report.ok
    text = "\n".join(report.errors)
    for fragment in ("links[0].url", "links[1].url", "theme.accent", "theme.background", "theme.font"):
        assert fragment in text
    assert await app_server.services.db.profiles.count_documents({}) == 0


async def test_stored_bad_values_never_reach_the_page(app_server):
    """Defence in depth: a document written around the importer still renders safely."""
    await app_server.load(base_document())
    await app_server.services.db.profiles.update_one(
        {"_id": "p1"},
        {
            "$set": {
                "theme.accent": "red}</style><script>alert(1)</script>",
                "content.links": [
                    {"label": "evil", "url": "javascript:alert(1)"},
                    {"label": "ok", "url": "https://ok.example/"},
                ],
            }
        },
    )
    app_server.services.sites.invalidate()
    html = (await app_server.fetch("/", host="alice.hep.gg")).body.decode()
    assert "javascript:" not in html and "<script>alert" not in html
    assert "--accent:#7c3aed" in html  # invalid theme falls back to defaults
    assert 'href="https://ok.example/"' in html


async def test_premium_features_decided_at_render_time(app_server):
    doc = base_document()
    doc["users"][0]["premium_until"] = "2020-01-01T00:00:00Z"  # lapsed, though toggles say otherwise
    doc["profiles"][0]["toggles"].update(presence=True, powered_by=False)
    await app_server.load(doc)
    html = (await app_server.fetch("/", host="alice.hep.gg")).body.decode()
    assert "/api/v1/profiles/presence/u1/stream" not in html and 'class="presence"' not in html
    assert "Powered by Hep.gg" in html

    doc["users"][0]["premium_until"] = "2099-01-01T00:00:00Z"
    await app_server.load(doc)
    html = (await app_server.fetch("/", host="alice.hep.gg")).body.decode()
    assert 'data-stream-url="/api/v1/profiles/presence/u1/stream"' in html
    assert "Powered by Hep.gg" not in html

    doc["profiles"][0]["toggles"].update(presence=False, powered_by=True)
    await app_server.load(doc)
    html = (await app_server.fetch("/", host="alice.hep.gg")).body.decode()
    assert 'class="presence"' not in html and "Powered by Hep.gg" in html


async def test_a_rendered_page_is_reused_until_the_clock_ends_premium(app_server):
    """The page is rendered once per site data and plan state; premium ending by the clock alone
    (same stored rows, same cached Site) still changes it on the next request."""
    doc = base_document()
    doc["users"][0]["premium_until"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    doc["profiles"][0]["toggles"].update(presence=True, powered_by=False)
    await app_server.load(doc)
    first = (await app_server.fetch("/", host="alice.hep.gg")).body
    assert first == (await app_server.fetch("/", host="alice.hep.gg")).body
    site = await app_server.services.sites.by_host("alice.hep.gg")
    assert len(site.memo) == 1 and b'class="presence"' in first

    app_server.services.clock.offset = timedelta(days=2)
    lapsed = (await app_server.fetch("/", host="alice.hep.gg")).body.decode()
    assert await app_server.services.sites.by_host("alice.hep.gg") is site  # not a new lookup: the clock did it
    assert 'class="presence"' not in lapsed and "Powered by Hep.gg" in lapsed

    for port in range(8000, 8020):  # the visitor picks the Host's port: the kept variants stay bounded
        response = await app_server.fetch("/", host=f"alice.hep.gg:{port}")
        assert response.code == 200 and f'href="http://alice.hep.gg:{port}/"' in response.body.decode()
    assert len(site.memo) <= PAGE_VARIANTS_KEPT


async def test_three_templates_render(app_server):
    for template in ("classic", "minimal", "spotlight"):
        await app_server.load(base_document(template=template))
        response = await app_server.fetch("/", host="alice.hep.gg")
        assert response.code == 200
        assert f'class="tpl-{template}"' in response.body.decode()


async def test_every_template_is_compiled_before_the_first_visitor(app_server):
    from runtime.app import TEMPLATES, template_loader

    assert app_server.http_server.request_callback.settings["template_loader"] is template_loader()
    # A fresh one, as `serve` makes before it forks: compiled before any render (the process's own has served
    # other tests' pages, which would compile them anyway).
    compiled = set(template_loader.__wrapped__().templates)
    assert {page.name for page in TEMPLATES.glob("*.html")} <= compiled
    assert {f"partials/{part.name}" for part in (TEMPLATES / "partials").glob("*.html")} <= compiled


async def _stats(server):
    from store.stats import read_stats

    await server.services.stats.flush()
    return await read_stats(server.services.db, "p1")


async def test_views_dedup_per_ip_and_user_agent_and_skip_bots(app_server):
    await app_server.load(base_document())
    for _ in range(3):
        await app_server.fetch(
            "/", host="alice.hep.gg", headers={"User-Agent": BROWSER_UA, "Referer": "https://x.example/"}
        )
    await app_server.fetch("/", host="alice.hep.gg", headers={"User-Agent": BROWSER_UA + " other"})
    for bot in (
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
        "Twitterbot/1.0",
        "facebookexternalhit/1.1",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    ):
        response = await app_server.fetch("/", host="alice.hep.gg", headers={"User-Agent": bot})
        assert response.code == 200
    stats = await _stats(app_server)
    assert stats["views"] == 2
    event = await app_server.services.db.stat_events.find_one({"kind": "view", "referer": "https://x.example/"})
    assert event["user_agent"] == BROWSER_UA


async def test_spoofed_forwarded_for_is_ignored_unless_from_trusted_proxy(make_server):
    untrusted = await make_server()
    await untrusted.load(base_document())
    for i in range(3):
        await untrusted.fetch(
            "/", host="alice.hep.gg", headers={"User-Agent": BROWSER_UA, "X-Forwarded-For": f"10.0.0.{i}"}
        )
    assert (await _stats(untrusted))["views"] == 1

    trusted = await make_server(trusted_proxies=("127.0.0.1/32",), mongo_db=untrusted.config.mongo_db + "b")
    await trusted.load(base_document())
    for i in range(3):
        await trusted.fetch(
            "/", host="alice.hep.gg", headers={"User-Agent": BROWSER_UA, "X-Forwarded-For": f"10.0.0.{i}"}
        )
    assert (await _stats(trusted))["views"] == 3


async def test_views_survive_a_redis_outage(make_server, store_urls):
    server = await make_server()
    await server.load(base_document())
    good_redis = server.services.stats.redis
    server.services.stats.redis = await connect("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    await server.fetch("/", host="alice.hep.gg", headers={"User-Agent": BROWSER_UA})
    await server.services.stats.flush()
    assert server.services.stats.pending == 1  # kept, not dropped
    await server.services.stats.redis.close()
    server.services.stats.redis = good_redis
    assert (await _stats(server))["views"] == 1


async def test_page_served_from_cache_within_staleness_bound(make_server, monkeypatch):
    server = await make_server(profile_cache_ttl=60)
    await server.load(base_document())
    loads = record_calls(monkeypatch, server.services.sites, "_load")
    results = await asyncio.gather(*(server.fetch("/", host="alice.hep.gg") for _ in range(10)))
    assert {r.code for r in results} == {200}
    assert (await server.fetch("/", host="nobody.hep.gg")).code == 404
    assert (await server.fetch("/", host="nobody.hep.gg")).code == 404
    assert len(loads) == 2  # one shared lookup for ten concurrent requests, one for the unknown host


async def test_health_and_readiness(make_server):
    server = await make_server()
    assert (await server.fetch("/healthz")).code == 200
    assert (await server.fetch("/readyz")).code == 200
    broken = await make_server(redis_url="redis://127.0.0.1:1/0")
    response = await broken.fetch("/readyz")
    assert response.code == 503
    assert b'"redis":false' in response.body.replace(b" ", b"")


async def test_api_routes_answer_cors_on_any_host(app_server):
    response = await app_server.fetch(
        "/api/v1/unknown",
        host="alice.hep.gg",
        method="OPTIONS",
        headers={"Origin": "https://alice.hep.gg", "Access-Control-Request-Method": "POST"},
    )
    assert response.code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    response = await app_server.fetch("/api/v1/unknown", host="my-site.example")
    assert response.code == 404 and response.body == b'{"ok":false,"error":"Not found"}'
    assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_change_streams_invalidate_the_cache_before_its_ttl(make_server):
    server = await make_server(profile_cache_ttl=300)
    await server.load(base_document())
    await asyncio.wait_for(server.services.change_watcher.active.wait(), 10)
    assert (await server.fetch("/", host="alice.hep.gg")).code == 200
    await server.services.db.profiles.update_one({"_id": "p1"}, {"$set": {"content.display_name": "Renamed"}})

    async def renamed() -> bool:
        return b"Renamed" in (await server.fetch("/", host="alice.hep.gg")).body

    async def gone() -> bool:
        return (await server.fetch("/", host="alice.hep.gg")).code == 404

    await wait_until(renamed)  # the TTL is 300 s: only the change stream can show it
    await server.services.db.users.update_one({"_id": "u1"}, {"$set": {"suspended": True}})
    await wait_until(gone)


async def test_a_credit_change_does_not_evict_the_owners_sites(make_server):
    """Every contact send moves a credit counter; nothing cached reads it, so the cached site (and its
    rendered page) stays. A later change to another owner shows the credit event was processed."""
    doc = base_document()
    other = copy.deepcopy(doc["users"][0]) | {"id": "u2"}
    doc["users"].append(other)
    doc["profiles"].append(copy.deepcopy(doc["profiles"][0]) | {"id": "p2", "owner_id": "u2", "domain": "bob.hep.gg"})
    server = await make_server(profile_cache_ttl=300)
    await server.load(doc)
    await asyncio.wait_for(server.services.change_watcher.active.wait(), 10)
    sites = server.services.sites
    alice, bob = await sites.by_host("alice.hep.gg"), await sites.by_host("bob.hep.gg")
    await server.services.db.users.update_one({"_id": "u1"}, {"$inc": {"sms_credits": -1}})
    await server.services.db.users.update_one({"_id": "u2"}, {"$set": {"suspended": True}})  # change streams keep order

    async def bob_changed() -> bool:
        return await sites.by_host("bob.hep.gg") is not bob

    await wait_until(bob_changed, timeout=5)  # u2's change arrived, so u1's credit change did before it
    assert await sites.by_host("alice.hep.gg") is alice


@pytest.mark.slow  # 2,000 views through a flush
async def test_stopping_mid_flush_loses_no_view(app_server):
    """SIGTERM while the ticker is writing a batch: the batch in flight still lands."""
    await app_server.load(base_document())
    stats = app_server.services.stats
    for i in range(2000):
        stats.record_view("p1", "u1", app_server.services.clock.now(), f"10.1.{i // 250}.{i % 250}", BROWSER_UA, None)
    # wait until the ticker (every 0.1 s in tests) has taken the batch off the queue but not written it
    await wait_until(lambda: stats.flushing, timeout=5, interval=0.001)
    assert stats.flushed["view"] == 0, "the ticker did not start a flush"
    await asyncio.wait_for(stats.stop(), 15)
    assert (await _stats(app_server))["views"] == 2000


async def test_the_indexes_cover_what_is_read(app_server):
    db = app_server.services.db
    assert "domain_unique" in await db.profiles.index_information()
    assert "by_owner" in await db.profiles.index_information()
    assert "by_profile_time" in await db.stat_events.index_information()  # each profile's events, by time
    assert "views" not in await db.list_collection_names()  # nothing writes there
