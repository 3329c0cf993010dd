"""openapi.yaml is the contract: it is valid OpenAPI 3.1, and live answers of the real server conform.

Every endpoint is called for its success and for each class of error it can
answer, and each answer is judged by schemathesis' own checks (documented
status, content type, required headers and their schemas, body schema via
jsonschema-rs), the same checks tests/test_schemathesis.py runs on generated
requests. Third parties are the real local fakes (contact_fakes, music_upstream).
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import jsonschema_rs
import pytest
import requests
import schemathesis
import yaml
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.definitions import OPENAPI_31

from presence.writer import write_presence

from conftest import base_document
from contact_fakes import contact_settings

SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"
SPEC = yaml.safe_load(SPEC_PATH.read_text())
SCHEMA = schemathesis.openapi.from_path(SPEC_PATH)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
ISRC = "USRC17607839"
SNAPSHOT = {
    "status": "online",
    "activity": {
        "name": "Spotify",
        "type": 2,
        "details": "Song Title",
        "state": "Artist Name",
        "startedAt": 1716900000000,
        "endsAt": 1716900210000,
        "largeImage": "https://i.scdn.co/image/x",
        "largeText": "Album Name",
    },
}


def as_schemathesis(response) -> Response:
    """A Tornado HTTPResponse in the shape schemathesis' checks read."""
    headers: dict[str, list[str]] = {}
    for name, value in response.headers.get_all():
        headers.setdefault(name.lower(), []).append(value)
    request = response.request
    sent = requests.Request(
        request.method, request.url, headers=dict(request.headers), data=request.body or None
    ).prepare()
    return Response(
        status_code=response.code,
        headers=headers,
        content=response.body or b"",
        request=sent,
        elapsed=response.request_time or 0.0,
        verify=True,
        message=response.reason or "",
    )


def conform(response, path: str, method: str, *, expect: int, **case) -> None:
    """The answer has the expected status and passes every contract check for its operation
    (a documented 5xx, provoked on purpose, is exempt from not_a_server_error only)."""
    assert response.code == expect, (response.code, response.body[:300])
    checks = CHECKS if expect < 500 else CHECKS[1:]
    SCHEMA[path][method].Case(**case).validate_response(as_schemathesis(response), checks=checks)


def component_validator(name: str) -> jsonschema_rs.Validator:
    return jsonschema_rs.validator_for({**SPEC["components"]["schemas"][name], "components": SPEC["components"]})


# ---------------------------------------------------------------- the document itself


def test_openapi_yaml_is_valid_openapi_3_1():
    errors = [f"{e.instance_path}: {e.message}" for e in jsonschema_rs.validator_for(OPENAPI_31).iter_errors(SPEC)]
    assert errors == []
    assert SPEC["openapi"] == "3.1.0"


def test_every_route_of_the_server_is_documented():
    documented = {(op.ok().method.upper(), op.ok().path) for op in SCHEMA.get_all_operations()}
    expected = {
        ("GET", "/"),
        ("HEAD", "/"),
        ("GET", "/{shortid}"),
        ("HEAD", "/{shortid}"),
        ("GET", "/api/v1/profiles/{profileID}/og.png"),
        ("HEAD", "/api/v1/profiles/{profileID}/og.png"),
        ("GET", "/api/v1/profiles/presence/{userID}"),
        ("HEAD", "/api/v1/profiles/presence/{userID}"),
        ("OPTIONS", "/api/v1/profiles/presence/{userID}"),
        ("GET", "/api/v1/profiles/presence/{userID}/stream"),
        ("HEAD", "/api/v1/profiles/presence/{userID}/stream"),
        ("OPTIONS", "/api/v1/profiles/presence/{userID}/stream"),
        ("GET", "/api/v1/profiles/{profileID}/music/{isrc}"),
        ("HEAD", "/api/v1/profiles/{profileID}/music/{isrc}"),
        ("OPTIONS", "/api/v1/profiles/{profileID}/music/{isrc}"),
        *{
            (m, f"/api/v1/profiles/{{profileID}}/contact/{c}")
            for c in ("sms", "email", "discord")
            for m in ("POST", "OPTIONS")
        },
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
    }
    assert documented == expected


def test_error_envelope_schema_rejects_what_is_not_the_envelope():
    validator = component_validator("ErrorEnvelope")
    assert validator.is_valid({"ok": False, "error": "Not found"})
    for bad in (
        {"ok": True, "error": "x"},
        {"ok": False},
        {"ok": False, "error": ""},
        {"ok": False, "error": "x", "trace": "..."},
    ):
        assert not validator.is_valid(bad), bad


# ---------------------------------------------------------------- live server


def contract_document() -> dict:
    """base_document (alice.hep.gg, owner u1 with everything) plus p2 whose owner set nothing up
    and has no credits: the 'not active' and 'out of credits' rows."""
    document = base_document()
    document["users"].append(
        {
            "id": "u2",
            "premium_until": None,
            "sms_credits": 0,
            "email_credits": 0,
            "sms": {"enabled": True, "key": "k2", "phone": "+15550199", "phone_verified": True},
        }
    )
    profile = json.loads(json.dumps(document["profiles"][0]))
    profile.update(id="p2", owner_id="u2", domain="bob.hep.gg")
    document["profiles"].append(profile)
    return document


@pytest.fixture
async def server(make_server, fakes, upstream):
    server = await make_server(
        **contact_settings(fakes), music_upstream_url=upstream.url, music_connect_timeout=1.0, music_stall_timeout=1.0
    )
    await server.load(contract_document())
    return server


# ---------------------------------------------------------------- page


@pytest.mark.parametrize(
    "host, expect",
    [
        ("alice.hep.gg", 200),
        ("ALICE.hep.gg:8888", 200),
        ("hep.gg", 302),
        ("example.com", 302),
        ("nobody.hep.gg", 404),
    ],
)
async def test_page(server, host, expect):
    response = await server.fetch("/", host=host)
    conform(response, "/", "GET", expect=expect, headers={"Host": host})
    head = await server.fetch("/", host=host, method="HEAD")
    conform(head, "/", "HEAD", expect=expect, headers={"Host": host})


async def test_shortid_falls_through_with_404(server):
    response = await server.fetch("/a1B2c3", host="alice.hep.gg")
    conform(response, "/{shortid}", "GET", expect=404, path_parameters={"shortid": "a1B2c3"})
    head = await server.fetch("/a1B2c3", host="alice.hep.gg", method="HEAD")
    conform(head, "/{shortid}", "HEAD", expect=404, path_parameters={"shortid": "a1B2c3"})


# ---------------------------------------------------------------- og


async def test_og_image_200_304_head_and_404(server):
    path = "/api/v1/profiles/{profileID}/og.png"
    response = await server.fetch("/api/v1/profiles/p1/og.png")
    conform(response, path, "GET", expect=200, path_parameters={"profileID": "p1"})
    assert response.body.startswith(b"\x89PNG")
    etag = response.headers["ETag"]
    again = await server.fetch("/api/v1/profiles/p1/og.png", headers={"If-None-Match": etag})
    conform(again, path, "GET", expect=304, path_parameters={"profileID": "p1"}, headers={"If-None-Match": etag})
    head = await server.fetch("/api/v1/profiles/p1/og.png", method="HEAD")
    conform(head, path, "HEAD", expect=200, path_parameters={"profileID": "p1"})
    for profile_id in ("nobody", "bad%20id"):
        missing = await server.fetch(f"/api/v1/profiles/{profile_id}/og.png")
        conform(missing, path, "GET", expect=404, path_parameters={"profileID": profile_id})
        assert missing.body == b"Not found"


# ---------------------------------------------------------------- presence


async def test_presence_snapshot_null_then_set_and_400s(server):
    path = "/api/v1/profiles/presence/{userID}"
    response = await server.fetch("/api/v1/profiles/presence/u1")
    conform(response, path, "GET", expect=200, path_parameters={"userID": "u1"})
    assert json.loads(response.body) == {"ok": True, "data": {"presence": None}}
    await write_presence(server.services.redis.client, "u1", SNAPSHOT)
    response = await server.fetch("/api/v1/profiles/presence/u1")
    conform(response, path, "GET", expect=200, path_parameters={"userID": "u1"})
    assert json.loads(response.body)["data"]["presence"]["activity"] == SNAPSHOT["activity"]
    for raw in ("%20", "x" * 129, "a%01b"):
        response = await server.fetch(f"/api/v1/profiles/presence/{raw}")
        conform(response, path, "GET", expect=400, path_parameters={"userID": raw})
    response = await server.fetch("/api/v1/profiles/presence/u1", method="OPTIONS")
    conform(response, path, "OPTIONS", expect=204, path_parameters={"userID": "u1"})


async def read_first_event(port: int, path: str) -> tuple[int, dict[str, list[str]], bytes]:
    """Status, headers and the first event (a chunk) of a stream that never ends by itself."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: alice.hep.gg\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        event = b"retry: "
        while event.startswith(b"retry: "):  # the stream opens with a reconnection hint (presence/sse.py)
            size = int((await asyncio.wait_for(reader.readline(), 5)).strip(), 16)
            event = (await asyncio.wait_for(reader.readexactly(size + 2), 5))[:-2]
    finally:
        writer.close()
    lines = head.decode("latin1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(lines[0].split()[1]), headers, event


async def test_presence_stream_first_event_conforms(server):
    await write_presence(server.services.redis.client, "u1", SNAPSHOT)
    status, headers, event = await read_first_event(server.port, "/api/v1/profiles/presence/u1/stream")
    assert status == 200
    assert headers["connection"] == ["keep-alive"]
    sent = requests.Request("GET", f"{server.url}/api/v1/profiles/presence/u1/stream").prepare()
    response = Response(
        status_code=status,
        headers=headers,
        content=event,
        request=sent,
        elapsed=0.0,
        verify=True,
        message="OK",
        stream_cut_short=True,
    )
    operation = SCHEMA["/api/v1/profiles/presence/{userID}/stream"]["GET"]
    operation.Case(path_parameters={"userID": "u1"}).validate_response(response, checks=CHECKS)
    assert event.startswith(b"event: presence\ndata: ")
    data = json.loads(event.split(b"data: ", 1)[1])
    assert component_validator("PresenceSnapshot").is_valid(data)
    assert data["status"] == "online"


async def test_presence_stream_400_and_preflight(server):
    path = "/api/v1/profiles/presence/{userID}/stream"
    response = await server.fetch("/api/v1/profiles/presence//stream")
    conform(response, path, "GET", expect=400, path_parameters={"userID": ""})
    assert json.loads(response.body) == {"ok": False, "error": "userID required"}
    head = await server.fetch("/api/v1/profiles/presence/u1/stream", method="HEAD")
    conform(head, path, "HEAD", expect=200, path_parameters={"userID": "u1"})
    response = await server.fetch("/api/v1/profiles/presence/u1/stream", method="OPTIONS")
    conform(response, path, "OPTIONS", expect=204, path_parameters={"userID": "u1"})


# ---------------------------------------------------------------- music

MUSIC = "/api/v1/profiles/{profileID}/music/{isrc}"


def music_case(profile_id: str = "p1", isrc: str = ISRC, **headers) -> dict:
    return {"path_parameters": {"profileID": profile_id, "isrc": isrc}, "headers": headers or None}


async def test_music_success_range_and_head(server, upstream):
    response = await server.fetch(f"/api/v1/profiles/p1/music/{ISRC}")
    conform(response, MUSIC, "GET", expect=200, **music_case())
    assert response.headers["X-Track-Title"] == "Upstream Title"
    response = await server.fetch(f"/api/v1/profiles/p1/music/{ISRC}", headers={"Range": "bytes=0-1"})
    conform(response, MUSIC, "GET", expect=206, **music_case(Range="bytes=0-1"))
    response = await server.fetch(f"/api/v1/profiles/p1/music/{ISRC}", headers={"Range": "bytes=999999999-"})
    conform(response, MUSIC, "GET", expect=416, **music_case(Range="bytes=999999999-"))
    response = await server.fetch(f"/api/v1/profiles/p1/music/{ISRC}", headers={"Range": "bytes=0-1,4-5"})
    conform(response, MUSIC, "GET", expect=416, **music_case(Range="bytes=0-1,4-5"))
    response = await server.fetch(f"/api/v1/profiles/p1/music/{ISRC}", method="HEAD")
    conform(response, MUSIC, "HEAD", expect=200, **music_case())
    response = await server.fetch(f"/api/v1/profiles/p1/music/{ISRC}", method="OPTIONS")
    conform(response, MUSIC, "OPTIONS", expect=204, **music_case())


async def test_music_errors_have_empty_bodies(server, upstream):
    for profile_id, isrc, expect in (
        ("p1", "USRC1760783", 400),
        ("p1", "USRC-1760783", 400),
        ("nobody", ISRC, 404),
        ("p2", ISRC, 404),
        ("p1", "GBAYE0601498", 404),  # a track the profile does not list
    ):
        response = await server.fetch(f"/api/v1/profiles/{profile_id}/music/{isrc}")
        conform(response, MUSIC, "GET", expect=expect, **music_case(profile_id, isrc))
        assert response.body == b""
    upstream.mode = "reset-before-body"
    response = await server.fetch(f"/api/v1/profiles/p1/music/{ISRC}")
    conform(response, MUSIC, "GET", expect=502, **music_case())
    assert response.body == b""


async def test_music_upstream_status_passes_through(server, upstream):
    upstream.mode = "status:410"
    response = await server.fetch(f"/api/v1/profiles/p1/music/{ISRC}")
    conform(response, MUSIC, "GET", expect=410, **music_case())


# ---------------------------------------------------------------- contact

CONTACT = "/api/v1/profiles/{profileID}/contact/{channel}"
FORMS = {
    "sms": {"message": "Hey, loved your site!", "turnstileToken": "good-token"},
    "email": {
        "email": "visitor@example.com",
        "subject": "Hello",
        "message": "Great profile!",
        "turnstileToken": "good-token",
    },
    "discord": {"handle": "Jamie", "message": "Pinging you on Discord!", "turnstileToken": "good-token"},
}
_ip = iter(range(1, 10_000))


async def contact(server, channel: str, body, *, expect: int, profile_id: str = "p1", ip: str | None = None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await server.fetch(
        CONTACT.format(profileID=profile_id, channel=channel),
        method="POST",
        body=raw,
        headers={"Content-Type": "application/json", "X-Forwarded-For": ip or f"198.51.100.{next(_ip) % 250 + 1}"},
    )
    case_body = json.loads(raw) if raw.strip().startswith(b"{") else raw
    conform(
        response,
        CONTACT.replace("{channel}", channel),
        "POST",
        expect=expect,
        path_parameters={"profileID": profile_id},
        body=case_body,
        media_type="application/json",
    )
    return json.loads(response.body)


@pytest.mark.parametrize("channel", ["sms", "email", "discord"])
async def test_contact_success_and_each_error_class(server, fakes, channel):
    body = await contact(server, channel, FORMS[channel], expect=200)
    assert body["data"]["queued"] is True
    await contact(server, channel, b"not json", expect=400)
    await contact(server, channel, {**FORMS[channel], "message": " "}, expect=400)
    await contact(server, channel, {**FORMS[channel], "turnstileToken": "refused"}, expect=400)
    body = await contact(server, channel, FORMS[channel], expect=400 if channel != "sms" else 402, profile_id="p2")
    assert body["error"] in (
        "This email contact form is not active",
        "This Discord contact form is not active",
        "The owner is out of SMS credits",
    )
    await contact(server, channel, FORMS[channel], expect=404, profile_id="nobody")
    await contact(server, channel, json.dumps({**FORMS[channel], "message": "x" * 17_000}).encode(), expect=413)
    response = await server.fetch(CONTACT.format(profileID="p1", channel=channel), method="OPTIONS")
    conform(response, CONTACT.replace("{channel}", channel), "OPTIONS", expect=204, path_parameters={"profileID": "p1"})


async def test_contact_429_has_retry_after(server):
    for _ in range(3):
        await contact(server, "discord", {"message": "hi"}, expect=400, ip="203.0.113.9")
    await contact(server, "discord", FORMS["discord"], expect=429, ip="203.0.113.9")


async def test_contact_delivery_failures(server, fakes):
    fakes.sms.status = 500
    await contact(server, "sms", FORMS["sms"], expect=502)
    fakes.discord.replies = [(500, {"message": "boom"})]
    await contact(server, "discord", FORMS["discord"], expect=502)
    fakes.smtp.reject_rcpt = "550 5.1.1 mailbox unavailable"
    await contact(server, "email", FORMS["email"], expect=502)
    fakes.smtp.reject_rcpt = "450 4.2.0 try later"
    await contact(server, "email", FORMS["email"], expect=503)


# ---------------------------------------------------------------- operations and the API fallback


async def test_health_ready_metrics(server):
    for path in ("/healthz", "/readyz", "/metrics"):
        conform(await server.fetch(path), path, "GET", expect=200)


async def test_unknown_api_paths_answer_the_error_envelope(server):
    for path in ("/api/v1/nothing", "/api/v1/profiles/p1/contact/fax", "/api/v2/profiles/p1/og.png"):
        response = await server.fetch(path)
        assert response.code == 404
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert component_validator("ErrorEnvelope").is_valid(json.loads(response.body))


async def test_malformed_request_is_the_documented_bare_400(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: bad host\r\n\r\n")
        answer = await asyncio.to_thread(sock.recv, 1024)
    assert answer == b"HTTP/1.1 400 Bad Request\r\n\r\n"
