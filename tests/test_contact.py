"""The contact forms end to end: every row of the spec's three response tables, and the order of checks.

Real server, real MongoDB and Redis, real local fakes for Turnstile, the SMS
API, Discord and SMTP (tests/contact_fakes.py). Servers trust 127.0.0.1 as a
proxy so each request can come from its own X-Forwarded-For address and stay
clear of the 3/minute burst bucket unless a test wants to hit it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from email import message_from_bytes
from email.policy import default as default_policy

import pytest

from contact_fakes import FakeDiscord, FakeSms, FakeSmtp, FakeTurnstile
from tests.conftest import base_document

PATH = "/api/v1/profiles/{pid}/contact/{channel}"
_ips = itertools.count(1)


def fresh_ip() -> str:
    n = next(_ips)
    return f"198.51.{n // 250}.{n % 250 + 1}"


@pytest.fixture
async def fakes():
    turnstile, sms, discord = FakeTurnstile().start(), FakeSms().start(), FakeDiscord().start()
    smtp = FakeSmtp().start()
    yield type("Fakes", (), {"turnstile": turnstile, "sms": sms, "discord": discord, "smtp": smtp})
    smtp.stop()
    for fake in (turnstile, sms, discord):
        await fake.stop()


def contact_settings(fakes, **overrides) -> dict:
    settings = dict(
        turnstile_verify_url=fakes.turnstile.verify_url, turnstile_secret=FakeTurnstile.secret,
        turnstile_timeout=1.0, sms_api_url=fakes.sms.url, smtp_host="127.0.0.1", smtp_port=fakes.smtp.port,
        smtp_from="Hep.gg <no-reply@hep.gg>", discord_api_url=fakes.discord.url, discord_bot_token="bot-token",
        delivery_timeout=2.0, trusted_proxies=("127.0.0.1/32",),
    )
    settings.update(overrides)
    return settings


@pytest.fixture
async def server(make_server, fakes):
    server = await make_server(**contact_settings(fakes))
    await server.load(base_document())
    return server


async def post(server, channel: str, body, *, ip: str | None = None, pid: str = "p1", headers=None):
    headers = dict(headers or {})
    headers["X-Forwarded-For"] = ip or fresh_ip()
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    response = await server.fetch(PATH.format(pid=pid, channel=channel), method="POST", body=raw,
                                  headers={"Content-Type": "application/json", **headers})
    return response, json.loads(response.body)


SMS = {"message": "Hey, loved your site!", "turnstileToken": "good-token"}
EMAIL = {"email": "visitor@example.com", "subject": "Hello", "message": "Great profile!", "turnstileToken": "good-token"}
DISCORD = {"handle": "Jamie", "message": "Pinging you on Discord!", "turnstileToken": "good-token"}


async def credits(server, field: str) -> int:
    return (await server.services.db.users.find_one({"_id": "u1"}))[field]


# ---------------------------------------------------------------- 200 rows

async def test_sms_success_delivers_with_owner_key(server, fakes):
    response, body = await post(server, "sms", SMS)
    assert response.code == 200
    assert body == {"ok": True, "data": {"queued": True}}
    [sent] = fakes.sms.requests
    assert sent.path == "/messages"
    assert sent.headers["Authorization"] == "Bearer sms-key-u1"
    assert sent.json() == {"to": "+15550100", "body": "Hey, loved your site!"}
    assert await credits(server, "sms_credits") == 4
    assert "+15550100" not in response.body.decode()


async def test_turnstile_receives_secret_token_and_client_ip(server, fakes):
    response, _ = await post(server, "discord", DISCORD, ip="203.0.113.7")
    assert response.code == 200
    [check] = fakes.turnstile.requests
    assert check.form() == {"secret": FakeTurnstile.secret, "response": "good-token", "remoteip": "203.0.113.7"}


async def test_email_success_sends_reply_to_visitor_and_hides_owner(server, fakes):
    response, body = await post(server, "email", EMAIL)
    assert response.code == 200
    assert body["ok"] is True and body["data"]["queued"] is True
    message_id = body["data"]["messageId"]
    assert message_id.startswith("<") and message_id.endswith("@hep.gg>")
    assert "owner@example.com" not in response.body.decode()
    [envelope] = fakes.smtp.messages
    assert envelope.mail_from == "no-reply@hep.gg"
    assert envelope.rcpt_tos == ["owner@example.com"]
    mail = message_from_bytes(envelope.original_content, policy=default_policy)
    assert mail["To"] == "owner@example.com"
    assert mail["Reply-To"] == "visitor@example.com"
    assert mail["From"].addresses[0].addr_spec == "no-reply@hep.gg"
    assert mail["Subject"] == "[alice.hep.gg] Hello"
    assert mail["Message-ID"] == message_id
    assert "Great profile!" in mail.get_content()
    assert await credits(server, "email_credits") == 4


async def test_discord_success_posts_one_embed_without_mentions(server, fakes):
    response, body = await post(server, "discord", {**DISCORD, "message": "hi @everyone <@123>"})
    assert response.code == 200
    assert body == {"ok": True, "data": {"queued": True}}
    [sent] = fakes.discord.requests
    assert sent.path == "/channels/1234567890/messages"
    assert sent.headers["Authorization"] == "Bot bot-token"
    assert sent.headers["User-Agent"].startswith("DiscordBot (")
    payload = sent.json()
    assert payload["allowed_mentions"] == {"parse": []}
    [embed] = payload["embeds"]
    assert embed["author"]["name"] == "Jamie"
    assert embed["description"] == "hi @everyone <@123>"
    assert "alice.hep.gg" in embed["footer"]["text"]
    # Discord costs no credits
    assert await credits(server, "sms_credits") == 5 and await credits(server, "email_credits") == 5


async def test_discord_without_handle_is_anonymous(server, fakes):
    response, _ = await post(server, "discord", {"message": "hello", "turnstileToken": "good-token"})
    assert response.code == 200
    assert fakes.discord.requests[0].json()["embeds"][0]["author"]["name"] == "Anonymous visitor"
