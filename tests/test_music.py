"""The embedded music proxy (issue 4): statuses, headers, ranges, failures, flow control, plays."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket

import pytest

from runtime import logs
from store.stats import read_stats

from conftest import base_document, scrape, wait_until
from music_upstream import TRACK_HEADERS

ISRC = "USRC17607839"
PATH = f"/api/v1/profiles/p1/music/{ISRC}"
FORWARDED = (
    "Content-Type",
    "ETag",
    "Last-Modified",
    "X-Track-Title",
    "X-Track-Artist",
    "X-Track-Duration",
    "X-Track-Album",
    "X-Track-Artwork",
)


@pytest.fixture
async def music_server(make_server, upstream):
    server = await make_server(
        music_upstream_url=upstream.url,
        music_connect_timeout=1.0,
        music_stall_timeout=1.0,
        music_max_streams=50,
        trusted_proxies=("127.0.0.1/32",),  # so X-Forwarded-For names the visitor
    )
    await server.load(base_document())
    return server


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def plays(server) -> dict:
    await server.services.stats.flush()
    return await read_stats(server.services.db, "p1")


class RawResponse:
    def __init__(self, head: bytes, body: bytes):
        lines = head.decode("latin1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        self.raw_body = body

    def complete(self) -> bool:
        """Did the response end cleanly (all of Content-Length, or the last chunk)?"""
        if "content-length" in self.headers:
            return len(self.raw_body) == int(self.headers["content-length"])
        return self.raw_body.endswith(b"0\r\n\r\n")


async def raw_get(port: int, path: str, headers: dict | None = None, timeout: float = 10) -> RawResponse:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path} HTTP/1.1", "Host: hep.gg", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = await asyncio.wait_for(reader.read(-1), timeout)  # until the server closes
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return RawResponse(head, body)


# ---------------------------------------------------------------- happy path, headers, statuses


async def test_get_streams_the_track_with_allow_listed_headers(music_server, upstream):
    before = await scrape(music_server, "hepgg_music_proxied_bytes_total")
    response = await music_server.fetch(PATH)
    assert response.code == 200
    assert response.body == upstream.body
    for name in FORWARDED:
        assert response.headers[name] == TRACK_HEADERS[name]
    assert response.headers["Content-Length"] == str(len(upstream.body))
    assert response.headers["Accept-Ranges"] == "bytes"
    assert "Set-Cookie" not in response.headers
    assert "X-Internal-Node" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"  # ours, not the worker's
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    [request] = upstream.requests
    assert request["method"] == "GET" and request["isrc"] == ISRC
    assert request["headers"]["Authorization"] == "Bearer music-key-u1"
    assert "Range" not in request["headers"]
    assert "Accept-Encoding" not in request["headers"]  # decompress_response=False: bytes pass through
    assert await scrape(music_server, "hepgg_music_proxied_bytes_total") - before == len(upstream.body)


async def test_isrc_is_case_insensitive_and_sent_upper_case(music_server, upstream):
    response = await music_server.fetch(f"/api/v1/profiles/p1/music/{ISRC.lower()}")
    assert response.code == 200
    assert upstream.requests[0]["isrc"] == ISRC


async def test_head_forwards_headers_without_body(music_server, upstream):
    response = await music_server.fetch(PATH, method="HEAD")
    assert response.code == 200
    assert response.body == b""
    assert response.headers["Content-Length"] == str(len(upstream.body))
    assert response.headers["X-Track-Title"] == "Upstream Title"
    assert "Set-Cookie" not in response.headers
    assert upstream.requests[0]["method"] == "HEAD"


async def test_chunked_upstream_is_relayed_whole(music_server, upstream):
    upstream.mode = "chunked"
    raw = await raw_get(music_server.port, PATH)
    assert raw.status == 200
    assert raw.headers["transfer-encoding"] == "chunked"
    assert "accept-ranges" not in raw.headers  # no length: we cannot serve ranges ourselves
    assert raw.complete()


@pytest.mark.parametrize("status", [201, 204, 400, 401, 403, 404, 410, 429, 500, 502, 503])
async def test_upstream_status_is_passed_through(music_server, upstream, status):
    upstream.mode = f"status:{status}"
    response = await music_server.fetch(PATH)
    assert response.code == status
    if status != 204:
        assert response.body == b"upstream says no"
        assert response.headers["Content-Type"] == "text/plain"


# ---------------------------------------------------------------- ranges


async def test_range_is_forwarded_to_a_range_honouring_upstream(music_server, upstream):
    upstream.mode = "range"
    response = await music_server.fetch(PATH, headers={"Range": "bytes=1000-1999"})
    assert response.code == 206
    assert response.headers["Content-Range"] == f"bytes 1000-1999/{len(upstream.body)}"
    assert response.body == upstream.body[1000:2000]
    assert upstream.requests[0]["headers"]["Range"] == "bytes=1000-1999"


@pytest.mark.parametrize(
    "header, first, last",
    [
        ("bytes=0-1", 0, 1),  # Safari's probe
        ("bytes=1000-1999", 1000, 1999),
        ("bytes=299990-", 299990, 299999),
        ("bytes=-10", 299990, 299999),
        ("bytes=250000-999999999", 250000, 299999),
    ],
)
async def test_range_ignoring_upstream_is_served_as_206_by_the_proxy(music_server, upstream, header, first, last):
    response = await music_server.fetch(PATH, headers={"Range": header})
    assert response.code == 206
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{len(upstream.body)}"
    assert response.headers["Content-Length"] == str(last - first + 1)
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.body == upstream.body[first : last + 1]
    assert upstream.requests[0]["headers"]["Range"] == header


async def test_head_with_range_against_a_range_ignoring_upstream(music_server, upstream):
    response = await music_server.fetch(PATH, method="HEAD", headers={"Range": "bytes=0-1"})
    assert response.code == 206
    assert response.headers["Content-Range"] == f"bytes 0-1/{len(upstream.body)}"
    assert response.headers["Content-Length"] == "2"


async def test_unsatisfiable_range_is_416_with_the_length(music_server, upstream):
    response = await music_server.fetch(PATH, headers={"Range": "bytes=300000-"})
    assert response.code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(upstream.body)}"
    assert response.body == b""


@pytest.mark.parametrize("header", ["bytes=0-1,5-9", "bytes=0-,0-", "bytes=0-0, 2-3", "bytes=-1,0-"])
async def test_several_ranges_are_refused_416_before_any_upstream_work(music_server, upstream, header):
    for method in ("GET", "HEAD"):
        response = await music_server.fetch(PATH, method=method, headers={"Range": header})
        assert (response.code, response.body) == (416, b""), (header, method)
        assert "Content-Range" not in response.headers  # the length is the worker's to say; it was not asked
    assert upstream.requests == []
    assert (await plays(music_server))["plays"] == 0


@pytest.mark.parametrize("header", ["items=0-1", "bytes=5-3", "bytes=a-b", "bytes=-", "bytes=0-1;x", "bytes 0-1"])
async def test_an_invalid_range_is_ignored_the_whole_track(music_server, upstream, header):
    response = await music_server.fetch(PATH, headers={"Range": header})
    assert response.code == 200, header
    assert response.body == upstream.body
    assert "Range" not in upstream.requests[-1]["headers"]  # not a valid bytes range: not forwarded


async def test_the_forwarded_range_is_normalised(music_server, upstream):
    response = await music_server.fetch(PATH, headers={"Range": "BYTES = 1000-1999 ,"})
    assert response.code == 206
    assert upstream.requests[-1]["headers"]["Range"] == "bytes=1000-1999"


# ---------------------------------------------------------------- 400 / 404


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/profiles/p1/music/USRC1760783",  # 11 characters
        "/api/v1/profiles/p1/music/USRC176078390",  # 13
        "/api/v1/profiles/p1/music/USRC-1760783",
        "/api/v1/profiles/p1/music/USRC17607839/x",
        "/api/v1/profiles/p1/music/",
        "/api/v1/profiles/p1/music",
        "/api/v1/profiles//music/USRC17607839",
        "/api/v1/profiles/music/USRC17607839",
    ],
)
async def test_malformed_requests_are_400_with_an_empty_body(music_server, upstream, path):
    for method in ("GET", "HEAD"):
        response = await music_server.fetch(path, method=method)
        assert response.code == 400, (path, method)
        assert response.body == b""
        assert "Content-Type" not in response.headers
    assert upstream.requests == []


@pytest.mark.parametrize(
    "change", ["missing", "private", "suspended", "expired", "owner_suspended", "music_disabled", "no_music"]
)
async def test_invisible_profile_or_no_music_key_is_404_with_an_empty_body(make_server, upstream, change):
    server = await make_server(music_upstream_url=upstream.url)
    document = base_document()
    profile, owner = document["profiles"][0], document["users"][0]
    if change == "private":
        profile["is_public"] = 0
    elif change == "suspended":
        profile["suspended"] = 1
    elif change == "expired":
        profile["expires_at"] = "2020-01-01T00:00:00Z"
    elif change == "owner_suspended":
        owner["suspended"] = True
    elif change == "music_disabled":
        owner["music"]["enabled"] = False
    elif change == "no_music":
        del owner["music"]
    await server.load(document)
    path = "/api/v1/profiles/nobody/music/USRC17607839" if change == "missing" else PATH
    for method in ("GET", "HEAD"):
        response = await server.fetch(path, method=method)
        assert response.code == 404
        assert response.body == b""
    assert upstream.requests == []


async def test_other_methods_are_rejected_with_an_empty_body(music_server):
    response = await music_server.fetch(PATH, method="POST", body=b"")
    assert response.code == 405
    assert response.body == b""


async def test_cors_preflight_allows_range(music_server):
    response = await music_server.fetch(PATH, method="OPTIONS")
    assert response.code == 204
    assert "Range" in response.headers["Access-Control-Allow-Headers"]
    assert "Content-Range" in response.headers["Access-Control-Expose-Headers"]


# ---------------------------------------------------------------- 502 and broken upstreams


async def test_upstream_down_is_502(make_server):
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await make_server(music_upstream_url=f"http://127.0.0.1:{port}", music_connect_timeout=1.0)
    await server.load(base_document())
    response = await server.fetch(PATH)
    assert response.code == 502
    assert response.body == b""


async def test_hanging_upstream_is_502_after_the_stall_timeout(music_server, upstream):
    upstream.mode = "hang"
    started = asyncio.get_running_loop().time()
    response = await music_server.fetch(PATH)
    elapsed = asyncio.get_running_loop().time() - started
    assert response.code == 502
    assert response.body == b""
    assert 0.9 < elapsed < 5


async def test_upstream_closing_after_headers_before_the_first_byte_is_502(music_server, upstream):
    upstream.mode = "reset-before-body"
    response = await music_server.fetch(PATH)
    assert response.code == 502
    assert response.body == b""
    assert "X-Track-Title" not in response.headers  # the failed answer's headers were never sent


async def test_upstream_reset_mid_body_aborts_the_listener_connection(music_server, upstream):
    upstream.mode = "reset"
    raw = await raw_get(music_server.port, PATH)
    assert raw.status == 200
    assert raw.headers["content-length"] == str(len(upstream.body))
    assert 0 < len(raw.raw_body) < len(upstream.body)
    assert not raw.complete()


async def test_upstream_reset_mid_chunked_body_sends_no_last_chunk(music_server, upstream):
    upstream.mode = "chunked-reset"
    raw = await raw_get(music_server.port, PATH)
    assert raw.status == 200
    assert raw.headers["transfer-encoding"] == "chunked"
    assert len(raw.raw_body) > 100_000
    assert not raw.complete()


@pytest.mark.slow  # a stall after the first bytes fails ~5 s past the stall timeout (libcurl's speed window)
async def test_stall_mid_body_aborts_the_listener_connection(music_server, upstream):
    upstream.mode = "hang-body"
    raw = await raw_get(music_server.port, PATH)
    assert raw.status == 200
    assert len(raw.raw_body) == 1000
    assert not raw.complete()


# ---------------------------------------------------------------- flow control and disconnects


async def open_stalled_listener(port: int, path: str = PATH) -> tuple[socket.socket, bytes]:
    """A raw client that sends the request, reads the headers and then stops reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, f"GET {path} HTTP/1.1\r\nHost: hep.gg\r\n\r\n".encode())
    head = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
    return sock, head


@pytest.mark.slow  # fills the kernel's and libcurl's buffers, then watches them stay full
async def test_stalled_listener_pauses_the_upstream_and_memory_stays_bounded(music_server, upstream):
    upstream.mode = "stream"  # 256 MiB on offer
    config = music_server.config
    rss_before = rss_bytes()
    sock, head = await open_stalled_listener(music_server.port)
    assert head.startswith(b"HTTP/1.1 200")
    await wait_until(lambda: upstream.sent > 0)
    # Let the pipe fill: kernel buffers, then libcurl pauses and the worker blocks.
    previous = -1
    while previous != upstream.sent:
        previous = upstream.sent
        await asyncio.sleep(0.5)
    [stream] = music_server.services.music.streams
    assert stream.relay.paused
    assert stream.relay.buffered <= config.music_high_water + config.music_chunk_bytes
    assert upstream.sent < 40 * 1024 * 1024  # kernel socket buffers only, not the 256 MiB track
    assert rss_bytes() - rss_before < 24 * 1024 * 1024
    # Still paused after the stall timeout: paused time is not a stall.
    await asyncio.sleep(config.music_stall_timeout + 0.5)
    assert upstream.sent == previous
    assert len(music_server.services.music.streams) == 1
    # Reading again resumes the transfer.
    loop = asyncio.get_running_loop()
    for _ in range(200):
        await loop.sock_recv(sock, 65536)
    await wait_until(lambda: upstream.sent > previous)
    sock.close()
    await asyncio.wait_for(upstream.closed.wait(), 5)


async def test_listener_disconnect_closes_the_upstream_connection(music_server, upstream):
    upstream.mode = "stream"
    open_before = await scrape(music_server, "hepgg_open_streams", kind="music")
    sock, _ = await open_stalled_listener(music_server.port)
    await wait_until(lambda: upstream.sent > 1_000_000)
    assert await scrape(music_server, "hepgg_open_streams", kind="music") == open_before + 1
    sock.close()
    await asyncio.wait_for(upstream.closed.wait(), 3)
    await wait_until(lambda: not music_server.services.music.streams)
    assert await scrape(music_server, "hepgg_open_streams", kind="music") == open_before
    sent = upstream.sent
    await asyncio.sleep(0.3)
    assert upstream.sent == sent


async def test_listener_disconnect_while_the_upstream_is_silent_closes_it(music_server, upstream):
    upstream.mode = "hang-body"
    sock, _ = await open_stalled_listener(music_server.port)
    await wait_until(lambda: len(music_server.services.music.streams) == 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # RST: the server notices without writing
    await asyncio.wait_for(upstream.closed.wait(), 3)
    await wait_until(lambda: not music_server.services.music.streams)


async def test_a_draining_server_refuses_new_streams_with_an_empty_503_and_retry_after(music_server, upstream):
    music_server.services.lifecycle.draining = True  # what SIGTERM sets before the grace period
    response = await music_server.fetch(PATH)
    assert (response.code, response.body, response.headers.get("Retry-After")) == (503, b"", "1")
    assert upstream.requests == []  # refused before any upstream work


async def test_revoking_the_music_key_stops_playing_audio(music_server, upstream):
    upstream.mode = "stream"
    sock, _ = await open_stalled_listener(music_server.port)
    await wait_until(lambda: upstream.sent > 0)
    await music_server.services.db.users.update_one({"_id": "u1"}, {"$set": {"music.enabled": False}})
    ttl = music_server.config.profile_cache_ttl
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(upstream.closed.wait(), 5)
    assert asyncio.get_running_loop().time() - started < ttl * 1.5 + 0.2
    await wait_until(lambda: not music_server.services.music.streams)
    sock.close()
    response = await music_server.fetch(PATH)
    assert response.code == 404


# ---------------------------------------------------------------- hostile listeners (issue 18)


async def hold_stream(port: int, address: str) -> tuple[socket.socket, bytes]:
    """A listener from `address` (X-Forwarded-For, the peer being a trusted proxy) that never reads the body."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    request = f"GET {PATH} HTTP/1.1\r\nHost: hep.gg\r\nX-Forwarded-For: {address}\r\n\r\n"
    await loop.sock_sendall(sock, request.encode())
    head = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
    return sock, head


@pytest.fixture
async def guarded_music(make_server, upstream):
    server = await make_server(
        music_upstream_url=upstream.url,
        music_max_streams=3,
        music_streams_per_address=2,
        music_queue_timeout=0.5,
        music_pause_limit=1,
        trusted_proxies="127.0.0.1/32",
    )
    await server.load(base_document())
    held: list[socket.socket] = []
    server.held = held
    yield server
    for sock in held:
        sock.close()


async def busy(server, address: str) -> tuple[int, str | None, bytes, float]:
    started = asyncio.get_running_loop().time()
    response = await server.fetch(PATH, headers={"X-Forwarded-For": address})
    elapsed = asyncio.get_running_loop().time() - started
    return response.code, response.headers.get("Retry-After"), response.body, elapsed


@pytest.mark.parametrize("first, second, third", [("10.1.0.1",) * 3, ("2001:db8::1", "2001:db8::2", "2001:db8::ff")])
async def test_one_address_holds_at_most_its_share_of_music_streams(guarded_music, upstream, first, second, third):
    upstream.mode = "hang-body"  # headers and the first bytes, then nothing: each stream stays open
    for address in (first, second):  # an IPv6 /64 is one address
        sock, head = await hold_stream(guarded_music.port, address)
        guarded_music.held.append(sock)
        assert head.startswith(b"HTTP/1.1 200")
    code, retry_after, body, elapsed = await busy(guarded_music, third)
    assert (code, retry_after, body) == (503, "5", b"")
    assert elapsed < 0.5  # refused at once, not queued
    assert len(upstream.requests) == 2
    # Refused before the profile is looked up (a refusal costs no lookup): even a profile that does not exist.
    missing = await guarded_music.fetch(f"/api/v1/profiles/nosuch1/music/{ISRC}", headers={"X-Forwarded-For": third})
    assert (missing.code, missing.headers.get("Retry-After")) == (503, "5")
    missing = await guarded_music.fetch(
        f"/api/v1/profiles/nosuch1/music/{ISRC}", headers={"X-Forwarded-For": "10.9.0.1"}
    )
    assert missing.code == 404  # from an address with room: looked up, not there, and its slot given back
    sock, head = await hold_stream(guarded_music.port, "10.1.0.2")  # another address gets the last slot
    guarded_music.held.append(sock)
    assert head.startswith(b"HTTP/1.1 200")


async def test_a_request_waits_for_a_free_stream_at_most_the_queue_timeout(guarded_music, upstream):
    """Issue 18: with every slot held, other music requests waited in curl's queue without end."""
    upstream.mode = "hang-body"
    for i in range(3):
        sock, head = await hold_stream(guarded_music.port, f"10.2.0.{i}")
        guarded_music.held.append(sock)
        assert head.startswith(b"HTTP/1.1 200")
    code, retry_after, body, elapsed = await busy(guarded_music, "10.2.1.1")
    assert (code, retry_after, body) == (503, "5", b"")
    assert 0.45 < elapsed < 3
    assert len(upstream.requests) == 3  # never handed to curl
    guarded_music.held.pop().close()  # a slot frees up: the next one gets it
    await wait_until(lambda: len(guarded_music.services.music.streams) == 2)
    sock, head = await hold_stream(guarded_music.port, "10.2.1.2")
    guarded_music.held.append(sock)
    assert head.startswith(b"HTTP/1.1 200")


async def test_a_listener_paused_past_the_limit_is_dropped(guarded_music, upstream):
    upstream.mode = "stream"
    sock, head = await hold_stream(guarded_music.port, "10.3.0.1")
    guarded_music.held.append(sock)
    assert head.startswith(b"HTTP/1.1 200")
    music = guarded_music.services.music
    await wait_until(lambda: any(stream.relay.paused for stream in music.streams))
    [stream] = music.streams
    assert stream.relay.buffered <= guarded_music.config.music_high_water + guarded_music.config.music_chunk_bytes
    paused = asyncio.get_running_loop().time()
    await wait_until(lambda: not music.streams, timeout=5)  # pause limit 1 s, checked at least once a second
    assert asyncio.get_running_loop().time() - paused >= 0.9
    await asyncio.wait_for(upstream.closed.wait(), 3)
    loop = asyncio.get_running_loop()
    while data := await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 5):  # what was sent, then the close
        assert data


async def test_shutdown_lets_streams_finish_within_the_grace_then_stops_them(music_server, upstream):
    upstream.mode = "stream"
    sock, _ = await open_stalled_listener(music_server.port)
    await wait_until(lambda: upstream.sent > 0)
    started = asyncio.get_running_loop().time()
    await music_server.services.lifecycle.drain(0.5)  # waits for the stream, then stops it: all within 0.5 s
    assert 0.3 < asyncio.get_running_loop().time() - started < 0.75
    assert not music_server.services.music.streams
    await asyncio.wait_for(upstream.closed.wait(), 3)
    sock.close()


# ---------------------------------------------------------------- only listed tracks


async def test_a_track_the_profile_does_not_list_is_404_without_upstream_work(music_server, upstream):
    for isrc in ("GBAYE0601498", "USRC17607838", "usrc1760783X"):
        for method in ("GET", "HEAD"):
            response = await music_server.fetch(f"/api/v1/profiles/p1/music/{isrc}", method=method)
            assert (response.code, response.body) == (404, b""), (isrc, method)
    assert upstream.requests == []
    assert (await plays(music_server))["plays"] == 0
    response = await music_server.fetch(f"/api/v1/profiles/p1/music/{ISRC.lower()}")  # listed: any case
    assert response.code == 200


async def test_removing_a_track_from_the_profile_stops_serving_it(music_server, upstream):
    assert (await music_server.fetch(PATH)).code == 200
    await music_server.services.db.profiles.update_one({"_id": "p1"}, {"$set": {"content.music": []}})
    music_server.services.sites.invalidate()
    assert (await music_server.fetch(PATH)).code == 404
    assert len(upstream.requests) == 1


# ---------------------------------------------------------------- plays

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Chrome/140.0"


def visitor(n: int, user_agent: str = BROWSER) -> dict[str, str]:
    """Headers of visitor n (the test client at 127.0.0.1 is a trusted proxy: X-Forwarded-For names the visitor)."""
    return {"X-Forwarded-For": f"198.51.100.{n}", "User-Agent": user_agent}


async def test_a_play_is_a_visitor_starting_a_track(music_server, upstream):
    assert (await music_server.fetch(PATH, headers=visitor(1))).code == 200  # 1
    await music_server.fetch(PATH, headers={**visitor(2), "Range": "bytes=0-"})  # 2
    await music_server.fetch(PATH, headers={**visitor(3), "Range": "bytes=0-1"})  # Safari's probe: no
    await music_server.fetch(PATH, headers={**visitor(4), "Range": "bytes=1000-"})  # a seek: no
    await music_server.fetch(PATH, headers={**visitor(5), "Range": "bytes=-5000"})  # a suffix: no
    await music_server.fetch(PATH, method="HEAD", headers=visitor(6))  # no
    upstream.mode = "status:404"
    await music_server.fetch(PATH, headers=visitor(7))  # the worker has no such track: no
    stats = await plays(music_server)
    assert stats["plays"] == 2
    assert stats["plays_by_isrc"] == {ISRC: 2}


async def test_probes_from_byte_zero_are_not_plays(music_server, upstream):
    for n in range(10):
        response = await music_server.fetch(PATH, headers={**visitor(n), "Range": "bytes=0-2"})
        assert response.code == 206 and len(response.body) == 3
    assert (await plays(music_server))["plays"] == 0


async def test_one_visitor_starting_a_track_again_and_again_is_one_play(music_server, upstream):
    for _ in range(10):
        assert (await music_server.fetch(PATH, headers=visitor(1))).code == 200
    for address in ("2001:db8:1:1::1", "2001:db8:1:1::2", "2001:db8:1:1:ffff::9"):  # one IPv6 /64
        await music_server.fetch(PATH, headers={"X-Forwarded-For": address, "User-Agent": BROWSER})
    await music_server.fetch(PATH, headers=visitor(1, user_agent="Other/1.0"))  # another browser: another play
    stats = await plays(music_server)
    assert stats["plays"] == 3
    events = await music_server.services.db.stat_events.count_documents({"kind": "play"})
    assert events == 3


async def test_sockets_that_never_read_count_one_play_per_visitor(music_server, upstream):
    loop = asyncio.get_running_loop()
    socks = []
    try:
        for _ in range(40):  # one visitor, 40 connections that send the request and never read
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", music_server.port))
            request = f"GET {PATH} HTTP/1.1\r\nHost: hep.gg\r\nUser-Agent: {BROWSER}\r\n\r\n"
            await loop.sock_sendall(sock, request.encode())
            socks.append(sock)
        # The 300 KB track fits in the kernel's socket buffers: each connection was handed all of it.
        await wait_until(lambda: len(upstream.requests) == 40 and not music_server.services.music.streams, 30)
        assert (await plays(music_server))["plays"] == 1
    finally:
        for sock in socks:
            sock.close()


async def test_a_short_track_of_unknown_length_is_a_play_when_it_ends_cleanly(music_server, upstream):
    upstream.mode = "raw:close-delimited"  # 1,000 bytes, no Content-Length: read until the worker closes
    raw = await raw_get(music_server.port, PATH, headers=visitor(1))
    assert raw.status == 200 and raw.complete()
    assert (await plays(music_server))["plays"] == 1


async def test_a_track_shorter_than_the_play_threshold_counts_when_whole(music_server, upstream):
    upstream.body = upstream.body[:5000]
    assert (await music_server.fetch(PATH, headers=visitor(1))).code == 200
    assert (await music_server.fetch(PATH, headers={**visitor(2), "Range": "bytes=0-99"})).code == 206  # no
    assert (await plays(music_server))["plays"] == 1


@pytest.mark.slow  # a stall after the first bytes: ~5 s past the stall timeout (libcurl's speed window)
async def test_a_failed_stream_is_not_a_play(music_server, upstream):
    upstream.mode = "hang"
    await music_server.fetch(PATH)
    upstream.mode = "hang-body"  # 1,000 bytes, then silence: fewer than a play's worth
    raw = await raw_get(music_server.port, PATH, headers=visitor(2))
    assert raw.status == 200 and not raw.complete()
    assert (await plays(music_server))["plays"] == 0


# ---------------------------------------------------------------- malformed upstream answers


@pytest.mark.parametrize(
    "answer", ["length-and-chunked", "two-lengths", "bad-length", "gzip-coding", "bad-status-line", "garbage"]
)
async def test_a_malformed_upstream_answer_is_an_empty_502(music_server, upstream, answer, caplog):
    upstream.mode = f"raw:{answer}"
    raw = await raw_get(music_server.port, PATH, headers=visitor(1))
    assert (raw.status, raw.raw_body) == (502, b""), answer
    assert "content-type" not in raw.headers
    assert (await plays(music_server))["plays"] == 0
    assert any(record.message.startswith("502 GET") for record in caplog.records if record.name == "hepgg.access")


async def test_an_upstream_body_short_of_its_length_aborts_the_listener(music_server, upstream):
    upstream.mode = "raw:short-body"
    raw = await raw_get(music_server.port, PATH)
    assert raw.status == 200 and raw.headers["content-length"] == "100"
    assert raw.raw_body == b"0123456789" and not raw.complete()


async def test_refused_requests_are_summarised_in_json_access_logs(make_server, upstream, monkeypatch, caplog):
    monkeypatch.setattr(logs, "REFUSAL_INTERVAL", 0.5)
    caplog.set_level(logging.INFO, logger="hepgg.access")
    server = await make_server(
        music_upstream_url=upstream.url, music_streams_per_address=1, trusted_proxies="127.0.0.1/32", json_logs=True
    )
    await server.load(base_document())
    upstream.mode = "hang-body"
    sock, _ = await hold_stream(server.port, "10.5.0.2")
    try:
        for _ in range(4):
            assert (await server.fetch(PATH, headers={"X-Forwarded-For": "10.5.0.2"})).code == 503

        def records() -> list[dict]:
            return [json.loads(r.getMessage()) for r in caplog.records if r.name == "hepgg.access"]

        await wait_until(lambda: any("refused" in record for record in records()))
        assert [record.get("status") for record in records() if "status" in record] == [503]
        [summary] = [record for record in records() if "refused" in record]
        assert summary["refused"] == {"503": 3} and summary["seconds"] == 0.5
        assert summary["most"] == {"request": f"GET 127.0.0.1{PATH}", "count": 3}
    finally:
        sock.close()


async def test_refused_requests_are_summarised_in_the_access_log(make_server, upstream, monkeypatch, caplog):
    """Issue 18: a line per refusal was most of the log under attack (28 lines/s from one address's music GETs)."""
    monkeypatch.setattr(logs, "REFUSAL_INTERVAL", 0.5)
    caplog.set_level(logging.INFO, logger="hepgg.access")
    server = await make_server(
        music_upstream_url=upstream.url, music_streams_per_address=1, trusted_proxies="127.0.0.1/32"
    )
    await server.load(base_document())
    upstream.mode = "hang-body"
    sock, head = await hold_stream(server.port, "10.5.0.1")
    assert head.startswith(b"HTTP/1.1 200")

    def lines(start: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "hepgg.access" and r.getMessage().startswith(start)]

    async def refused() -> int:
        return (await server.fetch(PATH, headers={"X-Forwarded-For": "10.5.0.1"})).code

    try:
        assert [await refused() for _ in range(6)] == [503] * 6
        assert [(await server.fetch("/api/v1/profiles/p1/music/bad")).code for _ in range(3)] == [400] * 3
        await wait_until(lambda: lines("5 more refused"), timeout=5)
        assert len(lines("503 GET")) == 1  # the first of the spell, as any answer
        assert lines("5 more refused") == [f"5 more refused in the last 0.5s (503 x 5); most: GET 127.0.0.1{PATH} (5)"]
        assert len(lines("400 GET")) == 3  # every other answer keeps its own line
        await asyncio.sleep(2)  # quiet intervals end the spell: the next refusal gets its own line again
        assert await refused() == 503
        await wait_until(lambda: len(lines("503 GET")) == 2, timeout=5)
    finally:
        sock.close()
