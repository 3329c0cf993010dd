"""Bad input gets the documented answer: never a 5xx, never a traceback, the connection handled.

Garbage Host headers, oversized headers and bodies, invalid UTF-8, non-JSON and
wrong-typed JSON for every contact form, ids with path tricks, and hypothesis
fuzzing of ISRC, userID, profileID and shortid path segments. Raw sockets send
what an HTTP client would normalise or refuse to send. What the HTTP layer
itself refuses (Tornado) is answered `HTTP/1.1 400 Bad Request` with no body
and the connection closed; headers over 64 KiB close the connection unanswered.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import base_document
from contact_fakes import contact_settings

BARE_400 = b"HTTP/1.1 400 Bad Request\r\n\r\n"
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes


async def exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send bytes as they are; return everything the server sent until it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(-1), timeout)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


async def request(
    port: int,
    target: bytes | str,
    host: bytes | str | None = b"alice.hep.gg",
    method: bytes = b"GET",
    headers: bytes = b"",
    body: bytes = b"",
) -> Raw:
    target = target.encode() if isinstance(target, str) else target
    lines = method + b" " + target + b" HTTP/1.1\r\n"
    if host is not None:
        lines += b"Host: " + (host.encode() if isinstance(host, str) else host) + b"\r\n"
    if body:
        lines += b"Content-Length: %d\r\n" % len(body)
    data = await exchange(port, lines + headers + b"Connection: close\r\n\r\n" + body)
    return parse(data)


def parse(data: bytes) -> Raw:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    return Raw(status, headers, body, data)


def assert_sane(answer: Raw) -> None:
    assert 0 < answer.status < 500, answer.raw[:300]
    for leak in (b"Traceback", b'File "', b"Error:", b"tornado.", b"pymongo", b"redis."):
        assert leak not in answer.body, answer.body[:300]


def envelope(answer: Raw) -> str:
    assert answer.headers["content-type"] == "application/json; charset=utf-8"
    body = json.loads(answer.body)
    assert set(body) == {"ok", "error"} and body["ok"] is False
    return body["error"]


@pytest.fixture
async def server(make_server, fakes, upstream):
    server = await make_server(
        **contact_settings(fakes), music_upstream_url=upstream.url, music_connect_timeout=1.0, music_stall_timeout=1.0
    )
    await server.load(base_document())
    return server


# ---------------------------------------------------------------- Host headers

HOST_VARIANTS = [
    (b"alice.hep.gg", 200, None),
    (b"ALICE.Hep.GG:8888", 200, None),
    (b"alice.hep.gg.", 200, None),  # the FQDN form names the same host
    (b"nobody.hep.gg.", 404, None),  # a slot, not a custom domain
    (b"hep.gg.", 302, "https://hep.gg/dashboard"),  # still the apex
    (b"hep.gg", 302, "https://hep.gg/dashboard"),
    (b"", 302, "https://hep.gg/"),  # RFC 9112 allows an empty Host: no profile there
    (b"127.0.0.1", 302, "https://hep.gg/"),
    (b"127.0.0.1:8888", 302, "https://hep.gg/"),
    (b"[::1]:8888", 302, "https://hep.gg/"),
    (b"x" * 300 + b".hep.gg", 404, None),
    (b"a" * 60_000 + b".example", 302, "https://hep.gg/"),
    (b"alice.hep.gg:0", 200, None),
    (b"alice.hep.gg:port", 302, "https://hep.gg/"),  # Tornado's ABNF lets it pass; not a slot host
]


async def test_host_variants_get_the_documented_page_answer(server):
    for host, status, location in HOST_VARIANTS:
        answer = await request(server.port, "/", host=host)
        assert_sane(answer)
        assert (answer.status, answer.headers.get("location")) == (status, location), host[:80]
        assert answer.headers["x-content-type-options"] == "nosniff"


MALFORMED_HOSTS = [
    None,  # HTTP/1.1 without Host
    b"bad host",
    b"alice.hep.gg, evil.example",
    "alicé.hep.gg".encode(),
    "alicé.hep.gg".encode("latin1"),
    b"alice.hep.gg/x",
    b"alice.hep.gg\\",
    b"@evil.example",
    b"alice.hep.gg\x01",
]


async def test_malformed_host_is_a_bare_400_and_the_connection_closes(server):
    for host, target in itertools.product(
        MALFORMED_HOSTS, (b"/", b"/api/v1/profiles/presence/u1", b"/api/v1/profiles/p1/og.png")
    ):
        assert (
            await exchange(
                server.port,
                b"GET "
                + target
                + b" HTTP/1.1\r\n"
                + (b"Host: " + host + b"\r\n" if host is not None else b"")
                + b"Connection: close\r\n\r\n",
            )
            == BARE_400
        )


async def test_two_host_headers_are_refused(server):
    data = b"GET / HTTP/1.1\r\nHost: alice.hep.gg\r\nHost: evil.example\r\n\r\n"
    assert await exchange(server.port, data) == BARE_400


async def test_http_1_0_without_host_is_an_unmatched_host(server):
    answer = parse(await exchange(server.port, b"GET / HTTP/1.0\r\n\r\n"))
    assert answer.status == 302 and answer.headers["location"] == "https://hep.gg/"


async def test_api_answers_on_any_host(server):
    for host in (b"evil.example", b"127.0.0.1", b""):
        answer = await request(server.port, "/api/v1/profiles/presence/u1", host=host)
        assert answer.status == 200
        assert json.loads(answer.body) == {"ok": True, "data": {"presence": None}}


# ---------------------------------------------------------------- oversized input


async def test_headers_over_64_kib_close_the_connection_and_the_server_carries_on(server):
    for data in (
        b"GET / HTTP/1.1\r\nHost: alice.hep.gg\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: alice.hep.gg\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: alice.hep.gg\r\n" + b"X-Many: 1\r\n" * 7_000 + b"\r\n",
    ):
        assert await exchange(server.port, data) == b""
    answer = await request(server.port, "/")
    assert answer.status == 200


async def test_contact_body_over_16_kib_is_413_in_the_envelope(server):
    body = json.dumps({"message": "x" * 20_000, "turnstileToken": "good-token"}).encode()
    answer = await request(
        server.port,
        "/api/v1/profiles/p1/contact/sms",
        method=b"POST",
        body=body,
        headers=b"Content-Type: application/json\r\nX-Forwarded-For: 192.0.2.1\r\n",
    )
    assert answer.status == 413
    assert envelope(answer) == "Request body too large"


BAD_FRAMING = [
    b"Content-Length: 2000000\r\n",  # over the server's 1 MiB
    b"Content-Length: 99999999999999999999\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Length: abc\r\n",
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
]


async def test_bad_or_oversized_body_framing_is_a_bare_400(server):
    for headers in BAD_FRAMING:
        data = b"POST /api/v1/profiles/p1/contact/sms HTTP/1.1\r\nHost: hep.gg\r\n" + headers + b"\r\n"
        assert await exchange(server.port, data) == BARE_400, headers


async def test_chunked_body_over_the_limit_is_cut_off_with_a_bare_400(server):
    chunk = b"x" * 65_536
    body = (b"%x\r\n%b\r\n" % (len(chunk), chunk)) * 20 + b"0\r\n\r\n"  # 1.25 MiB
    data = b"POST /api/v1/profiles/p1/contact/sms HTTP/1.1\r\nHost: hep.gg\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    # The server answers the bare 400 and closes while body bytes are still unread, so the kernel may
    # reset the connection before the answer reaches us: either way nothing past 1 MiB is read.
    assert await exchange(server.port, data) in (BARE_400, b"")
    assert (await request(server.port, "/")).status == 200


# ---------------------------------------------------------------- invalid UTF-8

INVALID_UTF8 = [
    ("/api/v1/profiles/%ff%fe/og.png", 404, lambda a: a.body == b"Not found"),
    ("/api/v1/profiles/p%c3%28/og.png", 404, lambda a: a.body == b"Not found"),
    ("/api/v1/profiles/%ff/music/USRC17607839", 404, lambda a: a.body == b""),
    ("/api/v1/profiles/p1/music/USRC1760783%ff", 400, lambda a: a.body == b""),
    ("/api/v1/profiles/presence/%ff", 400, lambda a: envelope(a) == "userID invalid"),
    ("/api/v1/profiles/presence/%ff/stream", 400, lambda a: envelope(a) == "userID invalid"),
    ("/%ff%fe", 404, lambda a: a.headers["content-type"] == "text/html; charset=utf-8"),
    ("/api/v1/%ff", 404, lambda a: envelope(a) == "Not found"),
    ("/api/v1/profiles/presence/u1?x=%ff%fe", 200, lambda a: json.loads(a.body)["ok"] is True),
]


async def test_invalid_utf8_in_paths_and_queries(server):
    for target, status, check in INVALID_UTF8:
        answer = await request(server.port, target)
        assert_sane(answer)
        assert answer.status == status, target
        assert check(answer), target


async def test_invalid_utf8_profile_id_on_a_contact_form_is_profile_not_found(server):
    answer = await request(server.port, "/api/v1/profiles/%ff/contact/sms", method=b"POST", body=b"{}")
    assert answer.status == 404
    assert envelope(answer) == "Profile not found"


async def test_raw_non_ascii_bytes_in_the_request_line_are_handled(server):
    answer = await request(server.port, b"/\xff\xfe\x80")
    assert_sane(answer)
    assert answer.status == 404
    answer = await request(server.port, b"/api/v1/profiles/p1/music/\xff\xfe")
    assert answer.status == 400 and answer.body == b""


# ---------------------------------------------------------------- contact bodies

NOT_JSON = [b"", b"not json", b"{", b"\xff\xfe{}", b'{"message": "\xff"}', b"\x00", b"{'message': 'hi'}"]
NOT_AN_OBJECT = [b"null", b"[]", b'"hello"', b"123", b"true", b'[{"message": "hi"}]']
WRONG_TYPES = [
    ({"message": 5}, "Message must be a string"),
    ({"message": ["hi"]}, "Message must be a string"),
    ({"message": {"text": "hi"}}, "Message must be a string"),
    ({"message": True}, "Message must be a string"),
    ({"message": None}, "Message is required"),
    ({"message": " \t\n "}, "Message is required"),
    ({"message": "\x00\x01\x02"}, "Message is required"),
    ({}, "Message is required"),
    ({"message": "hi", "turnstileToken": 5}, "Anti-spam check failed"),
    ({"message": "hi", "turnstileToken": ["good-token"]}, "Anti-spam check failed"),
    ({"message": "hi", "turnstileToken": None}, "Anti-spam check failed"),
    ({"message": "hi"}, "Anti-spam check failed"),
    ({"message": "hi", "turnstileToken": "good" + "x" * 3000}, "Anti-spam check failed"),
]
CHANNEL_FIELDS = {
    "email": [
        ({"email": 5}, "A valid email address is required"),
        ({"email": ["a@b.co"]}, "A valid email address is required"),
        ({"email": "a@b.co\r\nBcc: x@y.co"}, "A valid email address is required"),
        ({"email": "a@b.co", "subject": 5}, "Subject must be a string"),
        ({"email": "a@b.co", "subject": "a\r\nBcc: x@y.co"}, "Subject must be a single line of text"),
    ],
    "discord": [
        ({"handle": 5}, "Handle must be a string"),
        ({"handle": {"a": 1}}, "Handle must be a string"),
        ({"handle": "a\nb"}, "Handle must be a single line of text"),
    ],
    "sms": [],
}
_ips = iter(range(1, 100_000))


async def post_contact(server, channel: str, body: bytes, content_type: bytes = b"application/json") -> Raw:
    n = next(_ips)  # each post from its own address (127.0.0.1 is a trusted proxy): no burst limit
    return await request(
        server.port,
        f"/api/v1/profiles/p1/contact/{channel}",
        host=b"hep.gg",
        method=b"POST",
        body=body,
        headers=b"Content-Type: " + content_type + b"\r\nX-Forwarded-For: 198.18.%d.%d\r\n" % (n // 250, n % 250 + 1),
    )


async def test_non_json_bodies_are_400_request_body_must_be_json(server):
    for channel, body in itertools.product(("sms", "email", "discord"), NOT_JSON):
        answer = await post_contact(server, channel, body)
        assert answer.status == 400, body
        assert envelope(answer) in ("Request body must be JSON", "Request body must be a JSON object"), body
    for channel, body in itertools.product(("sms", "email", "discord"), NOT_AN_OBJECT):
        answer = await post_contact(server, channel, body)
        assert answer.status == 400
        assert envelope(answer) == "Request body must be a JSON object", body


def wrong_typed_cases():
    for channel in ("sms", "email", "discord"):
        base = {"email": "visitor@example.com"} if channel == "email" else {}
        for fields, message in WRONG_TYPES:
            yield channel, {**base, **fields}, message
        for fields, message in CHANNEL_FIELDS[channel]:
            yield channel, {"message": "hi", "turnstileToken": "good-token", **fields}, message


async def test_wrong_typed_json_gets_the_documented_message(server, fakes):
    for channel, body, message in wrong_typed_cases():
        answer = await post_contact(server, channel, json.dumps(body).encode())
        assert answer.status == 400, body
        assert envelope(answer) == message, body
    assert fakes.sms.requests == [] and fakes.discord.requests == [] and fakes.smtp.messages == []


async def test_other_content_types_are_refused_in_the_envelope(server):
    for content_type in (
        b"multipart/form-data",
        b"multipart/form-data; boundary=x",
        b"application/x-www-form-urlencoded",
        b"text/plain; charset=utf-16",
    ):
        answer = await post_contact(server, "sms", b"--x\r\ngarbage", content_type=content_type)
        assert answer.status == 400, content_type
        assert envelope(answer) in ("Bad request", "Request body must be JSON")


# ---------------------------------------------------------------- path tricks

TRICKS = [
    "..",
    "%2e%2e",
    "%2E%2E%2F%2E%2E",
    "%2f",
    "p1%2f..",
    "p1%00",
    "%00",
    "p1%0d%0aX-Injected:%201",
    "..%5c..%5c",
    "p1;x",
    "p1%20",
    "~p1",
    "P1",
    "a" * 10_000,
]


async def test_profile_ids_with_path_tricks_are_not_found(server):
    for trick in TRICKS:
        og = await request(server.port, f"/api/v1/profiles/{trick}/og.png")
        assert_sane(og)
        assert (og.status, og.body) == (404, b"Not found"), trick
        contact = await request(server.port, f"/api/v1/profiles/{trick}/contact/sms", method=b"POST", body=b"{}")
        assert_sane(contact)
        assert contact.status == 404
        assert envelope(contact) in ("Profile not found", "Not found")  # "Not found": the route itself did not match
        music = await request(server.port, f"/api/v1/profiles/{trick}/music/USRC17607839", method=b"HEAD")
        assert music.status in (400, 404) and music.body == b""
        for answer in (og, contact, music):
            assert "x-injected" not in answer.headers


async def test_static_paths_never_leave_the_static_directory(server):
    for target in (
        "/_static/../conftest.py",
        "/_static/%2e%2e/tests/conftest.py",
        "/_static/..%2fhandlers/base.py",
        "/_static/%2e%2e%2f%2e%2e%2fetc/passwd",
        "/_static//etc/passwd",
    ):
        answer = await request(server.port, target)
        assert answer.status in (403, 404), target
        assert b"import" not in answer.body and b"root:" not in answer.body


async def test_multi_segment_targets_get_our_404_page(server):
    # Absolute-form targets are routed on their own host: tests/test_http_conformance.py.
    for target, method in (("/a/b", b"GET"), ("/a/b", b"POST"), ("*", b"GET")):
        answer = await request(server.port, target, method=method, body=b"x" if method == b"POST" else b"")
        assert answer.status == 404, target
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
        assert answer.headers["x-content-type-options"] == "nosniff"


# ---------------------------------------------------------------- hypothesis fuzzing


def expected_isrc_status(isrc: str) -> int:
    """400 unless 12 ASCII letters or digits (written out, not the server's pattern); then 200 only for the
    track the profile lists (any case), 404 for any other."""
    if len(isrc) != 12 or not all(ch.isascii() and ch.isalnum() for ch in isrc):
        return 400
    return 200 if isrc.upper() == "USRC17607839" else 404


@FUZZ
@given(
    isrc=st.text(max_size=40)
    | st.from_regex(r"\A[A-Za-z0-9]{12}\Z")
    | st.sampled_from(["USRC17607839", "usrc17607839", "UsRc17607839"])
    | st.tuples(st.just("USRC17607839"), st.sampled_from(["\n", "\r\n", " ", "\x00", "\t"])).map("".join)
)
async def test_fuzzed_isrc_is_400_empty_unless_it_matches_the_pattern(server, isrc):
    answer = await request(server.port, f"/api/v1/profiles/p1/music/{quote(isrc, safe='')}", method=b"HEAD")
    assert_sane(answer)
    assert answer.status == expected_isrc_status(isrc), isrc
    if answer.status == 400:
        assert answer.body == b"" and "content-type" not in answer.headers


def expected_user_id_error(user_id: str) -> str | None:
    if not user_id.strip():
        return "userID required"
    if len(user_id) > 128 or CONTROL.search(user_id):
        return "userID invalid"
    return None


@FUZZ
@given(user_id=st.text(max_size=140) | st.text(st.characters(max_codepoint=0x7F), min_size=120, max_size=140))
async def test_fuzzed_user_id_snapshot_is_200_null_or_the_documented_400(server, user_id):
    answer = await request(server.port, f"/api/v1/profiles/presence/{quote(user_id, safe='')}", host=b"hep.gg")
    assert_sane(answer)
    error = expected_user_id_error(user_id)
    if error is None:
        assert answer.status == 200, user_id
        assert json.loads(answer.body) == {"ok": True, "data": {"presence": None}}
    else:
        assert answer.status == 400, user_id
        assert envelope(answer) == error


@FUZZ
@given(user_id=st.text(max_size=140).filter(lambda u: expected_user_id_error(u) is not None))
async def test_fuzzed_invalid_user_id_stream_is_the_documented_400(server, user_id):
    answer = await request(server.port, f"/api/v1/profiles/presence/{quote(user_id, safe='')}/stream")
    assert answer.status == 400, user_id
    assert envelope(answer) == expected_user_id_error(user_id)


@FUZZ
@given(raw=st.binary(min_size=1, max_size=80))
async def test_fuzzed_profile_id_bytes_are_not_found(server, raw):
    segment = quote(raw, safe="")
    og = await request(server.port, f"/api/v1/profiles/{segment}/og.png")
    assert_sane(og)
    assert og.status == 404 and og.body == b"Not found", raw
    contact = await request(server.port, f"/api/v1/profiles/{segment}/contact/discord", method=b"POST", body=b"{}")
    assert contact.status == 404, raw
    assert envelope(contact) == "Profile not found"


@FUZZ
@given(shortid=st.text(min_size=1, max_size=60).filter(lambda s: s not in ("favicon.ico", "robots.txt")))
async def test_fuzzed_shortid_falls_through_with_404(server, shortid):
    answer = await request(server.port, "/" + quote(shortid, safe=""))
    assert_sane(answer)
    assert answer.status == 404, shortid
    assert answer.headers["content-type"] == "text/html; charset=utf-8"


async def test_preflights_answer_for_any_id(server):
    for target in (
        "/api/v1/profiles/presence/%ff",
        "/api/v1/profiles/presence/",
        "/api/v1/profiles/%ff/contact/sms",
        "/api/v1/profiles/%ff/music/x",
    ):
        answer = await request(server.port, target, method=b"OPTIONS")
        assert answer.status == 204, target
        assert answer.headers["access-control-allow-origin"] == "*"
