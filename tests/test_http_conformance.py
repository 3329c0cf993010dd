"""HTTP conformance and the page's own URL (issue 19, items 10 and 11).

- HEAD answers wherever GET does, with GET's headers and no body (RFC 9110 §9.3.2), and is not a view;
  a 405 names the allowed methods (§15.5.6).
- An absolute-form target (`GET http://alice.hep.gg/ HTTP/1.1`) is routed as its origin form on the
  target's host, for every route; the Host header is then ignored (RFC 9112 §3.2.2).
- The canonical URL and og:url use the scheme a trusted proxy reports (X-Forwarded-Proto) and the
  port in canonical form (default ports omitted, leading zeros gone); the page memo is keyed by it.
"""

from __future__ import annotations

import json
import re

import pytest
from test_bad_input import exchange, parse, request

from handlers.page import PAGE_VARIANTS_KEPT
from store.stats import read_stats

from conftest import base_document

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) Chrome/140.0"
UA_HEADER = b"User-Agent: " + BROWSER_UA.encode() + b"\r\n"


@pytest.fixture
async def server(make_server, upstream):
    server = await make_server(trusted_proxies=("127.0.0.1/32",), music_upstream_url=upstream.url)
    await server.load(base_document())
    return server


async def views(server) -> int:
    await server.services.stats.flush()
    return (await read_stats(server.services.db, "p1"))["views"]


def canonical(html: bytes) -> tuple[str, str]:
    text = html.decode()
    link = re.search(r'<link rel="canonical" href="([^"]*)">', text).group(1)
    og_url = re.search(r'<meta property="og:url" content="([^"]*)">', text).group(1)
    return link, og_url


# ---------------------------------------------------------------- HEAD


async def test_head_on_the_page_is_gets_head_without_a_body_and_not_a_view(server):
    get = await request(server.port, "/", headers=UA_HEADER + b"X-Forwarded-For: 203.0.113.1\r\n")
    head = await request(server.port, "/", method=b"HEAD", headers=UA_HEADER + b"X-Forwarded-For: 203.0.113.2\r\n")
    assert (get.status, head.status) == (200, 200)
    assert head.body == b""
    for name in ("content-type", "content-security-policy", "cache-control", "x-content-type-options"):
        assert head.headers[name] == get.headers[name], name
    assert int(head.headers["content-length"]) == len(get.body)
    assert await views(server) == 1  # the GET only


@pytest.mark.parametrize(
    "target, host, status",
    [
        ("/x1Yz", b"alice.hep.gg", 404),  # a shortid: the uploader's
        ("/", b"nobody.hep.gg", 404),
        ("/", b"hep.gg", 302),
        ("/", b"custom.example", 302),
        ("/api/v1/profiles/presence/u1", b"hep.gg", 200),
        ("/api/v1/profiles/presence/%ff", b"hep.gg", 400),
        ("/api/v1/profiles/p1/og.png", b"hep.gg", 200),
        ("/api/v1/profiles/p1/music/USRC17607839", b"hep.gg", 200),
        ("/healthz", b"hep.gg", 200),
        ("/readyz", b"hep.gg", 200),
        ("/metrics", b"hep.gg", 200),
        ("/api/v1/nothing", b"hep.gg", 404),
    ],
)
async def test_head_answers_wherever_get_does_with_the_same_status(server, target, host, status):
    get = await request(server.port, target, host=host)
    head = await request(server.port, target, host=host, method=b"HEAD")
    assert (get.status, head.status) == (status, status), target
    assert head.body == b""
    assert head.headers.get("content-type") == get.headers.get("content-type")


async def test_head_on_the_stream_is_its_head_and_opens_no_stream(server):
    hub = server.services.presence.hub
    head = await request(server.port, "/api/v1/profiles/presence/u1/stream", host=b"hep.gg", method=b"HEAD")
    assert head.status == 200 and head.body == b""
    assert head.headers["content-type"] == "text/event-stream"
    assert head.headers["access-control-allow-origin"] == "*"
    assert hub.listener_count == 0
    bad = await request(server.port, "/api/v1/profiles/presence/%20/stream", host=b"hep.gg", method=b"HEAD")
    assert bad.status == 400


@pytest.mark.parametrize(
    "target, method, allow",
    [
        ("/", b"POST", "GET, HEAD"),
        ("/", b"DELETE", "GET, HEAD"),
        ("/x1Yz", b"PUT", "GET, HEAD"),
        ("/api/v1/profiles/p1/music/USRC17607839", b"POST", "GET, HEAD, OPTIONS"),
        ("/api/v1/profiles/p1/og.png", b"POST", "GET, HEAD"),
        ("/api/v1/profiles/presence/u1", b"DELETE", "GET, HEAD, OPTIONS"),
        ("/api/v1/profiles/presence/u1/stream", b"POST", "GET, HEAD, OPTIONS"),
        ("/api/v1/profiles/p1/contact/sms", b"GET", "POST, OPTIONS"),
    ],
)
async def test_a_405_names_the_allowed_methods(server, target, method, allow):
    answer = await request(server.port, target, method=method, body=b"x" if method in (b"POST", b"PUT") else b"")
    assert answer.status == 405, target
    assert answer.headers["allow"] == allow


# ---------------------------------------------------------------- absolute-form targets


async def test_an_absolute_form_target_is_the_page_of_its_host(server):
    answer = await request(server.port, "http://alice.hep.gg/", host=b"evil.example", headers=UA_HEADER)
    assert answer.status == 200
    assert canonical(answer.body) == ("http://alice.hep.gg/", "http://alice.hep.gg/")
    assert await views(server) == 1
    answer = await request(server.port, "HTTP://ALICE.hep.gg:0080/?utm=x", host=b"alice.hep.gg")
    assert answer.status == 200
    assert canonical(answer.body)[0] == "http://alice.hep.gg/"


@pytest.mark.parametrize(
    "target, status, check",
    [
        ("http://hep.gg/", 302, lambda a: a.headers["location"] == "https://hep.gg/dashboard"),
        ("http://nobody.hep.gg/", 404, lambda a: a.headers["content-type"].startswith("text/html")),
        ("http://evil.example/", 302, lambda a: a.headers["location"] == "https://hep.gg/"),
        ("http://alice.hep.gg/x1Yz", 404, lambda a: True),
        ("http://alice.hep.gg/a/b", 404, lambda a: True),
        (
            "http://hep.gg/api/v1/profiles/presence/u1",
            200,
            lambda a: json.loads(a.body) == {"ok": True, "data": {"presence": None}},
        ),
        ("https://hep.gg/api/v1/profiles/p1/og.png", 200, lambda a: a.headers["content-type"] == "image/png"),
        ("http://hep.gg/api/v1/profiles/p1/music/USRC17607839", 200, lambda a: len(a.body) == 300_000),
        ("http://hep.gg/api/v1/nothing", 404, lambda a: json.loads(a.body)["ok"] is False),
        ("http://hep.gg/healthz", 200, lambda a: True),
        ("http://127.0.0.1/", 302, lambda a: a.headers["location"] == "https://hep.gg/"),
        ("http://[::1]:8080/", 302, lambda a: True),
    ],
)
async def test_absolute_form_routes_every_route(server, target, status, check):
    answer = await request(server.port, target, host=b"alice.hep.gg")
    assert answer.status == status, target
    assert check(answer), target


async def test_the_stream_answers_an_absolute_form_target(server):
    data = b"GET http://hep.gg/api/v1/profiles/presence/u1/stream HTTP/1.0\r\nHost: x.example\r\n\r\n"
    reader_writer = await exchange_first_event(server.port, data)
    assert reader_writer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"event: presence\ndata: null\n\n" in reader_writer


async def exchange_first_event(port: int, data: bytes) -> bytes:
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        received = b""
        # A stream opens with its `retry:` block; the first event is the block after an `event:` line.
        while b"\n\n" not in received.partition(b"\r\n\r\n")[2].partition(b"event:")[2]:
            chunk = await asyncio.wait_for(reader.read(4096), 10)
            assert chunk, received
            received += chunk
        return received
    finally:
        writer.close()


@pytest.mark.parametrize(
    "target",
    ["ftp://alice.hep.gg/", "http:///", "http://user@alice.hep.gg/", "http://alice.hep.gg/#frag", "alice.hep.gg/", "x"],
)
async def test_a_target_that_is_neither_a_path_nor_an_http_url_is_400(server, target):
    answer = await request(server.port, target, headers=UA_HEADER)
    assert answer.status == 400, target
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert await views(server) == 0


async def test_star_is_our_404_page(server):
    answer = parse(await exchange(server.port, b"OPTIONS * HTTP/1.1\r\nHost: hep.gg\r\nConnection: close\r\n\r\n"))
    assert answer.status == 404
    assert answer.headers["x-content-type-options"] == "nosniff"


# ---------------------------------------------------------------- the canonical origin


@pytest.mark.parametrize(
    "host, proto, expected",
    [
        (b"alice.hep.gg", None, "http://alice.hep.gg/"),
        (b"alice.hep.gg", b"https", "https://alice.hep.gg/"),
        (b"alice.hep.gg", b"HTTPS", "https://alice.hep.gg/"),
        (b"alice.hep.gg", b"http, https", "https://alice.hep.gg/"),  # a list: the nearest proxy's value
        (b"alice.hep.gg", b"gopher", "http://alice.hep.gg/"),  # not a scheme we serve: the connection's
        (b"alice.hep.gg:443", b"https", "https://alice.hep.gg/"),
        (b"alice.hep.gg:80", b"https", "https://alice.hep.gg:80/"),
        (b"alice.hep.gg:00000000000080", None, "http://alice.hep.gg/"),
        (b"ALICE.Hep.GG.:08888", None, "http://alice.hep.gg:8888/"),
        (b"alice.hep.gg:8888", None, "http://alice.hep.gg:8888/"),
        (b"alice.hep.gg:0", None, "http://alice.hep.gg/"),  # not a port: none named
        (b"alice.hep.gg:99999", None, "http://alice.hep.gg/"),
        (b"alice.hep.gg:", None, "http://alice.hep.gg/"),
    ],
)
async def test_the_canonical_url_is_the_trusted_scheme_and_a_canonical_port(server, host, proto, expected):
    headers = b"X-Forwarded-Proto: " + proto + b"\r\n" if proto else b""
    answer = await request(server.port, "/", host=host, headers=headers)
    assert answer.status == 200, host
    assert canonical(answer.body) == (expected, expected)


async def test_x_forwarded_proto_from_an_untrusted_peer_is_ignored(make_server):
    server = await make_server()  # no trusted proxies
    await server.load(base_document())
    answer = await request(server.port, "/", headers=b"X-Forwarded-Proto: https\r\n")
    assert canonical(answer.body) == ("http://alice.hep.gg/", "http://alice.hep.gg/")


async def test_port_spellings_share_one_rendered_page_and_ports_cannot_grow_the_memo(server):
    for spelling in (b"alice.hep.gg", b"alice.hep.gg:80", b"ALICE.HEP.GG:0080", b"alice.hep.gg.:000080"):
        assert (await request(server.port, "/", host=spelling)).status == 200
    site = await server.services.sites.by_host("alice.hep.gg")
    assert len(site.memo) == 1
    for port in range(9000, 9030):
        answer = await request(server.port, "/", host=b"alice.hep.gg:%d" % port)
        assert canonical(answer.body)[0] == f"http://alice.hep.gg:{port}/"
    assert len(site.memo) <= PAGE_VARIANTS_KEPT
    answer = await request(server.port, "/", host=b"alice.hep.gg")
    assert canonical(answer.body)[0] == "http://alice.hep.gg/"
