"""The SSE connect fast path (presence/fast_path.py): which requests it takes, and that taken streams behave."""

from __future__ import annotations

import asyncio
import json

import pytest
from tornado.httputil import HTTPHeaders

from presence.fast_path import parse_stream_request

from conftest import wait_until
from presence_client import SSEClient

HEAD = b"Host: example.test\r\nAccept: text/event-stream\r\n\r\n"


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"GET /api/v1/profiles/presence/u1/stream HTTP/1.1\r\n" + HEAD, (b"u1", True)),
        (b"GET /api/v1/profiles/presence/u1/stream HTTP/1.0\r\n" + HEAD, (b"u1", False)),
        (b"GET /api/v1/profiles/presence/a%20b%2F/stream?x=1 HTTP/1.1\r\n" + HEAD, (b"a b/", True)),
        (b"GET /api/v1/profiles/presence//stream HTTP/1.1\r\n" + HEAD, (b"", True)),  # the handler rejects it
    ],
)
def test_parse_takes_complete_bodiless_stream_gets(data, expected):
    request = parse_stream_request(data + b"GET / HTTP/1.1\r\n")
    assert request is not None
    assert (request.user_id, request.chunked, request.forwarded_for) == (*expected, None)
    assert request.header_length == data.index(b"\r\n\r\n") + 4


@pytest.mark.parametrize(
    "headers, expected",
    [
        (b"X-Forwarded-For: 203.0.113.9\r\n", "203.0.113.9"),
        (b"x-forwarded-for:\t 10.0.0.1, 203.0.113.9 \r\n", "10.0.0.1, 203.0.113.9"),
        (b"X-Forwarded-For: 10.0.0.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\n", "10.0.0.1,203.0.113.9"),
        (b"Host: x\r\n", None),
    ],
)
def test_parse_reads_x_forwarded_for_as_tornado_does(headers, expected):
    """The fast path must see the header the routed handler would (HTTPHeaders: stripped, lines joined by ",")."""
    request = parse_stream_request(b"GET /api/v1/profiles/presence/u1/stream HTTP/1.1\r\n" + headers + b"\r\n")
    assert request is not None
    assert request.forwarded_for == expected
    parsed = HTTPHeaders()
    for line in headers.decode("latin-1").split("\r\n"):
        parsed.parse_line(line)
    assert parsed.get("X-Forwarded-For") == expected


@pytest.mark.parametrize(
    "data",
    [
        b"GET /api/v1/profiles/presence/u1/stream HTTP/1.1\r\nHost: x\r\n",  # incomplete
        b"POST /api/v1/profiles/presence/u1/stream HTTP/1.1\r\n" + HEAD,
        b"GET /api/v1/profiles/presence/u1 HTTP/1.1\r\n" + HEAD,
        b"GET /api/v1/profiles/presence/u1/stream/ HTTP/1.1\r\n" + HEAD,
        b"GET /api/v1/profiles/presence/a/b/stream HTTP/1.1\r\n" + HEAD,
        b"GET /api/v1/profiles/presence/u1/stream HTTP/2.0\r\n" + HEAD,
        b"GET  /api/v1/profiles/presence/u1/stream HTTP/1.1\r\n" + HEAD,
        b"GET /api/v1/profiles/presence/u1/stream HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        b"GET /api/v1/profiles/presence/u1/stream HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /api/v1/profiles/presence/u1/stream HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        b"GET /api/v1/profiles/presence/u1/stream HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET /api/v1/profiles/presence/u1/stream HTTP/1.1\r\nX: a\x00b\r\n\r\n",
    ],
)
def test_parse_leaves_everything_else_to_tornado(data):
    assert parse_stream_request(data) is None


@pytest.fixture
def taken(app_server):
    """Record the fast path's answer for each new connection of the real server."""
    server = app_server.http_server
    original = server.first_look
    answers: list[bool] = []

    def recording(stream, address):
        answers.append(original(stream, address))
        return answers[-1]

    server.first_look = recording
    yield answers
    server.first_look = original


async def raw_request(port: int, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def first_event(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    hint = await asyncio.wait_for(reader.readuntil(b"\n\n\r\n"), 5)  # every stream opens with `retry:`
    assert b"retry: " in hint, hint
    body = await asyncio.wait_for(reader.readuntil(b"\n\n\r\n"), 5)
    return head, body


async def test_whole_request_is_taken_and_streams_like_the_routed_handler(app_server, taken):
    reader, writer = await raw_request(app_server.port, b"GET /api/v1/profiles/presence/fp1/stream HTTP/1.1\r\n" + HEAD)
    try:
        head, body = await first_event(reader)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Transfer-Encoding: chunked" in head
    assert b"event: presence\ndata: null\n\n" in body
    assert True in taken


async def test_request_arriving_in_pieces_is_served_by_tornado(app_server, taken):
    request = b"GET /api/v1/profiles/presence/fp2/stream HTTP/1.1\r\n" + HEAD
    reader, writer = await raw_request(app_server.port, request[:10])
    try:
        await wait_until(lambda: False in taken)  # the first piece was looked at and left to Tornado
        writer.write(request[10:])
        head, body = await first_event(reader)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"data: null" in body
    assert taken and not any(taken)


async def test_invalid_user_id_still_gets_the_routed_400(app_server, taken):
    reader, writer = await raw_request(app_server.port, b"GET /api/v1/profiles/presence/%20/stream HTTP/1.1\r\n" + HEAD)
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(body) == {"ok": False, "error": "userID required"}
    assert taken and not any(taken)


async def test_fast_path_streams_count_and_shed_like_routed_ones(make_server):
    server = await make_server(sse_max_streams=1)
    kept = await SSEClient.open(server.port, "/api/v1/profiles/presence/fp3/stream")
    try:
        assert server.services.presence.hub.listener_count == 1
        extra = await SSEClient.open(server.port, "/api/v1/profiles/presence/fp3/stream")
        assert extra.status == 200
        assert (await extra.block()).startswith("retry: ")
        assert await extra.block() is None
    finally:
        kept.writer.close()


async def test_a_connection_silent_past_the_header_timeout_is_closed(app_server, taken):
    """Issue 18: silent sockets were held 85 s each; now the header timeout frees their descriptors."""
    app_server.http_server.header_timeout = 0.1
    reader, writer = await asyncio.open_connection("127.0.0.1", app_server.port)
    server = app_server.http_server
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the sweep runs once a second
        assert server.silent_connections == 0
    finally:
        writer.close()
    assert taken == [None]


async def test_a_started_request_head_is_bounded_by_the_idle_timeout(make_server):
    server = await make_server(idle_timeout=1)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        writer.close()


async def test_shutdown_closes_connections_that_never_spoke(app_server):
    reader, writer = await asyncio.open_connection("127.0.0.1", app_server.port)
    try:
        await wait_until(lambda: app_server.http_server.silent_connections == 1)
        await app_server.http_server.close_all_connections()
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
