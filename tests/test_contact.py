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
from pymongo.errors import ConnectionFailure

from conftest import base_document
from contact_fakes import FakeSmtp, FakeTurnstile, contact_settings

PATH = "/api/v1/profiles/{pid}/contact/{channel}"
_ips = itertools.count(1)


def fresh_ip() -> str:
    n = next(_ips)
    return f"198.51.{n // 250}.{n % 250 + 1}"


@pytest.fixture
async def server(make_server, fakes):
    server = await make_server(**contact_settings(fakes))
    await server.load(base_document())
    return server


async def post(server, channel: str, body, *, ip: str | None = None, pid: str = "p1", headers=None):
    headers = dict(headers or {})
    headers["X-Forwarded-For"] = ip or fresh_ip()
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    response = await server.fetch(
        PATH.format(pid=pid, channel=channel),
        method="POST",
        body=raw,
        headers={"Content-Type": "application/json", **headers},
    )
    return response, json.loads(response.body)


SMS = {"message": "Hey, loved your site!", "turnstileToken": "good-token"}
EMAIL = {
    "email": "visitor@example.com",
    "subject": "Hello",
    "message": "Great profile!",
    "turnstileToken": "good-token",
}
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


# ---------------------------------------------------------------- 400 rows: input


@pytest.mark.parametrize(
    "channel,body,error",
    [
        ("sms", {"turnstileToken": "good-token"}, "Message is required"),
        ("sms", {"message": "   \n ", "turnstileToken": "good-token"}, "Message is required"),
        ("sms", {"message": 42, "turnstileToken": "good-token"}, "Message must be a string"),
        ("sms", {"message": "x" * 481, "turnstileToken": "good-token"}, "Message must be at most 480 characters"),
        ("email", {**EMAIL, "email": "not-an-address"}, "A valid email address is required"),
        ("email", {**EMAIL, "email": None}, "A valid email address is required"),
        ("email", {**EMAIL, "message": ""}, "Message is required"),
        ("email", {**EMAIL, "message": "x" * 5001}, "Message must be at most 5000 characters"),
        ("email", {**EMAIL, "subject": "s" * 151}, "Subject must be at most 150 characters"),
        ("discord", {**DISCORD, "message": None}, "Message is required"),
        ("discord", {**DISCORD, "message": "x" * 2001}, "Message must be at most 2000 characters"),
        ("discord", {**DISCORD, "handle": "h" * 65}, "Handle must be at most 64 characters"),
        ("discord", {**DISCORD, "handle": ["Jamie"]}, "Handle must be a string"),
    ],
)
async def test_invalid_input_is_400_without_calling_anyone(server, fakes, channel, body, error):
    response, answer = await post(server, channel, body)
    assert response.code == 400
    assert answer == {"ok": False, "error": error}
    assert fakes.turnstile.requests == []  # validation comes before Turnstile
    assert fakes.sms.requests == [] and fakes.discord.requests == [] and fakes.smtp.messages == []


@pytest.mark.parametrize(
    "raw,error",
    [
        (b"not json", "Request body must be JSON"),
        (b"", "Request body must be a JSON object"),
        (b"[1, 2]", "Request body must be a JSON object"),
        (b'"message"', "Request body must be a JSON object"),
        (b"\xff\xfe", "Request body must be JSON"),
    ],
)
async def test_body_must_be_a_json_object(server, raw, error):
    response, answer = await post(server, "sms", raw)
    assert (response.code, answer) == (400, {"ok": False, "error": error})


async def test_body_over_16_kib_is_refused(server, fakes):
    response, answer = await post(server, "discord", {**DISCORD, "pad": "x" * 16 * 1024})
    assert (response.code, answer) == (413, {"ok": False, "error": "Request body too large"})
    assert fakes.turnstile.requests == []


async def test_sms_limit_is_exactly_480(server, fakes):
    response, _ = await post(server, "sms", {"message": "é" * 480, "turnstileToken": "good-token"})
    assert response.code == 200
    assert fakes.sms.requests[0].json()["body"] == "é" * 480


# ---------------------------------------------------------------- 400 rows: Turnstile


@pytest.mark.parametrize("channel,base", [("sms", SMS), ("email", EMAIL), ("discord", DISCORD)])
@pytest.mark.parametrize("token", [None, "", "bad-token", "garbage", "http500", 12345])
async def test_failed_turnstile_is_generic_400(server, fakes, channel, base, token):
    body = {k: v for k, v in base.items() if k != "turnstileToken"}
    if token is not None:
        body["turnstileToken"] = token
    response, answer = await post(server, channel, body)
    assert (response.code, answer) == (400, {"ok": False, "error": "Anti-spam check failed"})
    assert fakes.sms.requests == [] and fakes.discord.requests == [] and fakes.smtp.messages == []
    assert await credits(server, "sms_credits") == 5 and await credits(server, "email_credits") == 5


async def test_a_resent_send_delivers_once_because_its_token_is_redeemed(server, fakes):
    """What makes deploy/nginx.conf's retry of a contact POST safe: a send that reaches a second replica carries
    the token the first one already redeemed, and siteverify refuses it (`timeout-or-duplicate`)."""
    sms = {**SMS, "turnstileToken": "once-resent"}
    first, _ = await post(server, "sms", sms)
    again, answer = await post(server, "sms", sms)
    assert (first.code, again.code, answer) == (200, 400, {"ok": False, "error": "Anti-spam check failed"})
    assert len(fakes.sms.requests) == 1 and await credits(server, "sms_credits") == 4


async def test_turnstile_timeout_fails_closed(server, fakes):
    response, answer = await post(server, "discord", {**DISCORD, "turnstileToken": "slow"})
    assert (response.code, answer["error"]) == (400, "Anti-spam check failed")
    assert response.request_time < 2.5  # --turnstile-timeout is 1 s here
    assert fakes.discord.requests == []


async def test_turnstile_unreachable_fails_closed(make_server, fakes):
    server = await make_server(**contact_settings(fakes, turnstile_verify_url="http://127.0.0.1:9/siteverify"))
    await server.load(base_document())
    response, answer = await post(server, "discord", DISCORD)
    assert (response.code, answer["error"]) == (400, "Anti-spam check failed")
    assert fakes.discord.requests == []


async def test_oversized_token_is_refused_without_a_call(server, fakes):
    response, answer = await post(server, "discord", {**DISCORD, "turnstileToken": "good" + "x" * 2045})
    assert (response.code, answer["error"]) == (400, "Anti-spam check failed")
    assert fakes.turnstile.requests == []
    response, _ = await post(server, "discord", {**DISCORD, "turnstileToken": "good" + "x" * 2044})  # 2,048: allowed
    assert response.code == 200


# ---------------------------------------------------------------- 400 rows: owner set-up


def owner_doc(**user_overrides) -> dict:
    doc = base_document()
    doc["users"][0].update(user_overrides)
    return doc


@pytest.mark.parametrize(
    "channel,base,user",
    [
        ("sms", SMS, {"sms": {"enabled": False, "key": "k", "phone": "+15550100", "phone_verified": True}}),
        ("sms", SMS, {"sms": {"enabled": True, "key": "k", "phone": "+15550100", "phone_verified": False}}),
        ("sms", SMS, {"sms": {"enabled": True, "key": None, "phone": "+15550100", "phone_verified": True}}),
        ("sms", SMS, {"sms": {"enabled": True, "key": "k", "phone": None, "phone_verified": True}}),
        ("email", EMAIL, {"email": {"enabled": True, "key": "k", "address": "owner@example.com", "verified": False}}),
        ("email", EMAIL, {"email": {"enabled": False, "key": "k", "address": "owner@example.com", "verified": True}}),
        ("email", EMAIL, {"email": {"enabled": True, "key": None, "address": "owner@example.com", "verified": True}}),
        ("discord", DISCORD, {"discord": {"channel_id": "1234567890", "bot_present": False}}),
        ("discord", DISCORD, {"discord": {"channel_id": None, "bot_present": True}}),
    ],
)
async def test_channel_not_set_up_is_400_not_active(server, fakes, channel, base, user):
    await server.load(owner_doc(**user))
    response, answer = await post(server, channel, base)
    name = {"sms": "SMS", "email": "email", "discord": "Discord"}[channel]
    # One message whatever is missing: nothing about phones, keys, bots or addresses leaks.
    assert (response.code, answer) == (400, {"ok": False, "error": f"This {name} contact form is not active"})
    assert fakes.sms.requests == [] and fakes.discord.requests == [] and fakes.smtp.messages == []
    assert await credits(server, "sms_credits") == 5 and await credits(server, "email_credits") == 5


async def test_channel_missing_entirely_or_toggled_off_is_not_active(server, fakes):
    doc = base_document(toggles={"contact_sms": False, "contact_email": True, "contact_discord": True})
    del doc["users"][0]["discord"]
    await server.load(doc)
    await server.services.db.users.update_one({"_id": "u1"}, {"$unset": {"discord": 1}})
    server.services.sites.invalidate()
    for channel, body, name in (("sms", SMS, "SMS"), ("discord", DISCORD, "Discord")):
        response, answer = await post(server, channel, body)
        assert (response.code, answer["error"]) == (400, f"This {name} contact form is not active")


# ---------------------------------------------------------------- 402 rows


@pytest.mark.parametrize(
    "channel,base,field,name",
    [
        ("sms", SMS, "sms_credits", "SMS"),
        ("email", EMAIL, "email_credits", "email"),
    ],
)
async def test_out_of_credits_is_402(server, fakes, channel, base, field, name):
    await server.load(owner_doc(**{field: 0}))
    response, answer = await post(server, channel, base)
    assert (response.code, answer) == (402, {"ok": False, "error": f"The owner is out of {name} credits"})
    assert fakes.sms.requests == [] and fakes.smtp.messages == []
    assert await credits(server, field) == 0


async def test_discord_never_needs_credits(server, fakes):
    await server.load(owner_doc(sms_credits=0, email_credits=0))
    response, _ = await post(server, "discord", DISCORD)
    assert response.code == 200


# ---------------------------------------------------------------- 404 rows


@pytest.mark.parametrize("channel,base", [("sms", SMS), ("email", EMAIL), ("discord", DISCORD)])
@pytest.mark.parametrize("change", ["unknown", "private", "suspended", "owner_suspended", "expired", "bad_id"])
async def test_profile_not_found_not_public_or_suspended_is_404(server, fakes, channel, base, change):
    pid = "p1"
    if change == "unknown":
        pid = "nobody"
    elif change == "bad_id":
        pid = "p1%20x"
    elif change == "private":
        await server.load(base_document(is_public=0))
    elif change == "suspended":
        await server.load(base_document(suspended=1))
    elif change == "expired":
        await server.load(base_document(expires_at="2020-01-01T00:00:00Z"))
    else:
        await server.load(owner_doc(suspended=True))
    response, answer = await post(server, channel, base, pid=pid)
    assert (response.code, answer) == (404, {"ok": False, "error": "Profile not found"})
    assert fakes.turnstile.requests == []
    assert await server.services.redis.client.keys("*contact*") == []  # no bucket spent on a hidden profile


async def test_other_methods_and_channels_answer_in_the_envelope(server):
    response = await server.fetch(PATH.format(pid="p1", channel="sms"))
    assert response.code == 405 and json.loads(response.body) == {"ok": False, "error": "Method not allowed"}
    response, answer = await post(server, "fax", SMS)
    assert (response.code, answer["ok"]) == (404, False)
    response = await server.fetch(PATH.format(pid="p1", channel="sms"), method="OPTIONS")
    assert response.code == 204 and response.headers["Access-Control-Allow-Origin"] == "*"


# ---------------------------------------------------------------- 429 rows


@pytest.mark.parametrize("channel,base", [("sms", SMS), ("email", EMAIL), ("discord", DISCORD)])
async def test_burst_is_3_per_minute_with_retry_after(server, fakes, channel, base):
    for _ in range(3):
        response, _ = await post(server, channel, base, ip="203.0.113.9")
        assert response.code == 200
    response, answer = await post(server, channel, base, ip="203.0.113.9")
    assert (response.code, answer) == (429, {"ok": False, "error": "Too many messages, please try again later"})
    assert 1 <= int(response.headers["Retry-After"]) <= 20  # one token back every 20 s
    assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]
    assert len(fakes.turnstile.requests) == 3  # throttled before Turnstile
    response, _ = await post(server, channel, base, ip="203.0.113.10")  # another visitor is unaffected
    assert response.code == 200


async def test_ip_buckets_are_shared_by_the_three_forms(server):
    for channel, body in (("sms", SMS), ("email", EMAIL), ("discord", DISCORD)):
        response, _ = await post(server, channel, body, ip="203.0.113.11")
        assert response.code == 200
    response, _ = await post(server, "discord", DISCORD, ip="203.0.113.11")
    assert response.code == 429


@pytest.mark.slow  # 50 deliveries
async def test_owner_daily_cap_sms_50_without_retry_after(server, fakes):
    await server.load(owner_doc(sms_credits=100))
    for _ in range(50):
        response, _ = await post(server, "sms", SMS)
        assert response.code == 200
    response, answer = await post(server, "sms", SMS)
    assert (response.code, answer["error"]) == (429, "Too many messages, please try again later")
    assert "Retry-After" not in response.headers  # only the burst bucket sends it
    response, _ = await post(server, "email", EMAIL)  # email has its own owner bucket
    assert response.code == 200
    assert len(fakes.sms.requests) == 50


@pytest.mark.slow  # 100 deliveries a channel
async def test_owner_daily_cap_email_and_discord_100(server):
    await server.load(owner_doc(email_credits=200))
    for channel, body in (("email", EMAIL), ("discord", DISCORD)):
        for batch in range(10):
            answers = await asyncio.gather(*(post(server, channel, body) for _ in range(10)))
            assert [response.code for response, _ in answers] == [200] * 10, (channel, batch)
        response, _ = await post(server, channel, body)
        assert response.code == 429


@pytest.mark.slow  # the owner's daily cap sent in full
async def test_refused_forms_never_spend_the_owners_daily_cap(server, fakes):
    # 50 bodies of {} and 50 valid forms with a refused token, from 17 addresses each (at most 3 a
    # minute per address, so every one reaches validation or Turnstile): the owner's 50 SMS a day stay.
    await server.load(owner_doc(sms_credits=100))
    ips = [fresh_ip() for _ in range(17)]
    for i in range(50):
        response, _ = await post(server, "sms", {}, ip=ips[i % 17])
        assert response.code == 400
    ips = [fresh_ip() for _ in range(17)]
    for i in range(50):
        response, answer = await post(server, "sms", {**SMS, "turnstileToken": "bad"}, ip=ips[i % 17])
        assert (response.code, answer["error"]) == (400, "Anti-spam check failed")
    response, _ = await post(server, "sms", SMS, ip=ips[0])  # the per-address buckets count every attempt
    assert response.code == 429
    for _ in range(50):  # a real visitor (each a new one) is served the owner's whole day
        response, _ = await post(server, "sms", SMS)
        assert response.code == 200
    response, _ = await post(server, "sms", SMS)
    assert response.code == 429
    assert len(fakes.sms.requests) == 50


# ---------------------------------------------------------------- 502 rows and refunds


async def test_sms_api_error_is_502_and_refunds(server, fakes):
    fakes.sms.status = 500
    response, answer = await post(server, "sms", SMS)
    assert (response.code, answer) == (502, {"ok": False, "error": "SMS delivery failed"})
    assert len(fakes.sms.requests) == 1
    assert await credits(server, "sms_credits") == 5


async def test_sms_api_unreachable_or_slow_is_502_and_refunds(make_server, fakes):
    server = await make_server(**contact_settings(fakes, sms_api_url="http://127.0.0.1:9"))
    await server.load(base_document())
    response, answer = await post(server, "sms", SMS)
    assert (response.code, answer["error"]) == (502, "SMS delivery failed")
    assert await credits(server, "sms_credits") == 5
    slow = await make_server(**contact_settings(fakes, delivery_timeout=0.5))
    fakes.sms.delay = 2
    response, answer = await post(slow, "sms", SMS)
    assert (response.code, answer["error"]) == (502, "SMS delivery failed")
    assert response.request_time < 1.8
    assert await credits(server, "sms_credits") == 5


async def test_discord_error_is_502(server, fakes):
    fakes.discord.replies = [(403, {"message": "Missing Access", "code": 50001})]
    response, answer = await post(server, "discord", DISCORD)
    assert (response.code, answer) == (502, {"ok": False, "error": "Discord delivery failed"})


async def test_discord_short_429_is_retried_once(server, fakes):
    fakes.discord.replies = [(429, {"message": "You are being rate limited.", "retry_after": 0.2, "global": False})]
    response, _ = await post(server, "discord", DISCORD)
    assert response.code == 200
    assert len(fakes.discord.requests) == 2


async def test_discord_second_429_or_long_retry_after_is_502(server, fakes):
    fakes.discord.replies = [(429, {"retry_after": 0.1}), (429, {"retry_after": 0.1})]
    response, _ = await post(server, "discord", DISCORD)
    assert response.code == 502 and len(fakes.discord.requests) == 2
    fakes.discord.requests.clear()
    fakes.discord.replies = [(429, {"retry_after": 30})]
    response, answer = await post(server, "discord", DISCORD)
    assert (response.code, answer["error"]) == (502, "Discord delivery failed")
    assert len(fakes.discord.requests) == 1 and response.request_time < 1.5


# ---------------------------------------------------------------- email pipeline rejections pass through


async def test_smtp_rejection_passes_through_without_owner_address(server, fakes):
    fakes.smtp.reject_rcpt = "550 5.1.1 <owner@example.com>: Recipient address rejected: mailbox unavailable"
    response, answer = await post(server, "email", EMAIL)
    assert response.code == 502
    assert answer == {
        "ok": False,
        "error": "Email rejected by the mail server: 550 5.1.1 <address>: "
        "Recipient address rejected: mailbox unavailable",
    }
    assert "owner@example.com" not in response.body.decode().lower()
    assert await credits(server, "email_credits") == 5


async def test_smtp_rejection_text_loses_every_address_and_the_owners_name(server, fakes, caplog):
    owner = "jane.doe-smith@corp.example.com"
    await server.load(owner_doc(email={"enabled": True, "key": "k", "address": owner, "verified": True}))
    fakes.smtp.reject_rcpt = (
        "550 5.1.1 <jane.doe-smith@corp.example.co> unknown; JANE DOE at corp.example.com, "
        "ask postmaster@corp.example.com or jane@corp \u202eevil"
    )
    response, answer = await post(server, "email", EMAIL)
    assert response.code == 502
    assert answer["error"] == (
        "Email rejected by the mail server: 550 5.1.1 <address> unknown; <redacted> <redacted> at "
        "<redacted>.<redacted>.com, ask <address> or <address> evil"
    )
    for part in ("jane", "doe", "smith", "corp", "@", "\u202e"):
        assert part not in answer["error"].lower()
    assert any("jane.doe-smith@corp.example.co" in record.getMessage() for record in caplog.records)  # the log has it
    assert await credits(server, "email_credits") == 5


async def test_smtp_temporary_rejection_is_503(server, fakes):
    fakes.smtp.reject_data = "451 4.7.1 Greylisted, try again later"
    response, answer = await post(server, "email", EMAIL)
    assert (response.code, answer["error"]) == (
        503,
        "Email rejected by the mail server: 451 4.7.1 Greylisted, try again later",
    )
    assert await credits(server, "email_credits") == 5


async def test_smtp_unreachable_is_502(make_server, fakes):
    server = await make_server(**contact_settings(fakes, smtp_port=9))
    await server.load(base_document())
    response, answer = await post(server, "email", EMAIL)
    assert (response.code, answer) == (502, {"ok": False, "error": "Email delivery failed"})
    assert await credits(server, "email_credits") == 5


@pytest.mark.slow  # a refused SMTP login ends only when the relay hangs up (2 s)
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")  # the local relay has no TLS
async def test_smtp_auth_when_user_is_set(make_server, fakes):
    smtp = FakeSmtp(require_auth=("relay-user", "relay-pass")).start()
    try:
        good = await make_server(
            **contact_settings(fakes, smtp_port=smtp.port, smtp_user="relay-user", smtp_password="relay-pass")
        )
        await good.load(base_document())
        response, _ = await post(good, "email", EMAIL)
        assert response.code == 200 and len(smtp.messages) == 1
        bad = await make_server(
            **contact_settings(fakes, smtp_port=smtp.port, smtp_user="relay-user", smtp_password="wrong")
        )
        response, answer = await post(bad, "email", EMAIL)
        assert (response.code, answer["error"]) == (502, "Email delivery failed")
        assert "relay" not in response.body.decode()
        assert len(smtp.messages) == 1
    finally:
        smtp.stop()


# ---------------------------------------------------------------- header injection


@pytest.mark.parametrize(
    "field,value,error",
    [
        ("subject", "Hi\r\nBcc: victim@example.net", "Subject must be a single line of text"),
        ("subject", "Hi\nX-Spam: no", "Subject must be a single line of text"),
        ("subject", "Hi\u2028there", "Subject must be a single line of text"),
        ("email", "visitor@example.com\r\nBcc: victim@example.net", "A valid email address is required"),
        ("email", "visitor@example.com, victim@example.net", "A valid email address is required"),
        ("email", "Visitor <visitor@example.com>", "A valid email address is required"),
    ],
)
async def test_header_injection_is_refused(server, fakes, field, value, error):
    response, answer = await post(server, "email", {**EMAIL, field: value})
    assert (response.code, answer["error"]) == (400, error)
    assert fakes.smtp.messages == []


@pytest.mark.parametrize(
    "address",
    [
        "=?utf-8?q?boss=40corp.com=2C_attacker=40evil.com?=@evil.com",  # decoded: two mailboxes
        "=?utf-8?b?Ym9zc0Bjb3JwLmNvbSwgYXR0YWNrZXJAZXZpbC5jb20=?=@evil.com",
        "=?us-ascii?q?visitor?=@example.com",  # one mailbox, but not the one sent
    ],
)
async def test_reply_to_cannot_be_smuggled_through_encoded_words(server, fakes, address):
    response, answer = await post(server, "email", {**EMAIL, "email": address})
    assert (response.code, answer["error"]) == (400, "A valid email address is required")
    assert fakes.turnstile.requests == [] and fakes.smtp.messages == []
    assert await credits(server, "email_credits") == 5


async def test_reply_to_is_exactly_the_visitors_address(server, fakes):
    address = "first.last+tag_x=y?z@mail.example.co.uk"
    response, _ = await post(server, "email", {**EMAIL, "email": address})
    assert response.code == 200
    mail = message_from_bytes(fakes.smtp.messages[0].original_content, policy=default_policy)
    assert [(a.display_name, a.addr_spec) for a in mail["Reply-To"].addresses] == [("", address)]


async def test_message_body_cannot_smuggle_smtp_commands(server, fakes):
    evil = "hello\r\n.\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nSubject: x\r\n\r\nspam"
    response, _ = await post(server, "email", {**EMAIL, "message": evil})
    assert response.code == 200
    [envelope] = fakes.smtp.messages
    assert envelope.rcpt_tos == ["owner@example.com"]
    assert (
        "RCPT TO:<victim@example.net>"
        in message_from_bytes(envelope.original_content, policy=default_policy).get_content()
    )


async def test_discord_handle_must_be_one_line(server, fakes):
    response, answer = await post(server, "discord", {**DISCORD, "handle": "Jamie\n@everyone"})
    assert (response.code, answer["error"]) == (400, "Handle must be a single line of text")


# ---------------------------------------------------------------- bodies no channel can carry


LONE_SURROGATE = "a\\ud800b"  # a JSON escape that decodes to a lone surrogate (not Unicode text)


@pytest.mark.parametrize(
    "channel,raw,error",
    [
        ("sms", b"[" * 3000 + b"]" * 3000, "Request body is nested too deeply"),
        ("discord", b'{"message": "hi", "x": ' + b"[" * 17 + b"]" * 17 + b"}", "Request body is nested too deeply"),
        ("sms", '{"message": "hi", "turnstileToken": "%s"}' % LONE_SURROGATE, "Request body must be Unicode text"),
        ("email", json.dumps({**EMAIL, "subject": "X"}).replace('"X"', '"%s"' % LONE_SURROGATE), None),
        ("email", json.dumps({**EMAIL, "message": "X"}).replace('"X"', '"%s"' % LONE_SURROGATE), None),
        ("discord", json.dumps({**DISCORD, "message": "X"}).replace('"X"', '"%s"' % LONE_SURROGATE), None),
        ("discord", json.dumps({**DISCORD, "handle": "X"}).replace('"X"', '"%s"' % LONE_SURROGATE), None),
        ("sms", '{"%s": 1, "message": "hi", "turnstileToken": "good-token"}' % LONE_SURROGATE, None),
    ],
)
async def test_bodies_no_channel_can_carry_are_400_before_turnstile_and_credits(server, fakes, channel, raw, error):
    response, answer = await post(server, channel, raw)
    assert (response.code, answer) == (400, {"ok": False, "error": error or "Request body must be Unicode text"})
    assert fakes.turnstile.requests == []
    assert fakes.sms.requests == [] and fakes.discord.requests == [] and fakes.smtp.messages == []
    assert await credits(server, "sms_credits") == 5 and await credits(server, "email_credits") == 5


async def test_nesting_up_to_the_bound_and_surrogate_pairs_are_fine(server, fakes):
    raw = '{"message": "hi \\ud83d\\ude00", "turnstileToken": "good-token", "x": %s}' % ("[" * 15 + "]" * 15)
    response, _ = await post(server, "sms", raw)
    assert response.code == 200
    assert fakes.sms.requests[0].json()["body"] == "hi \U0001f600"


# ---------------------------------------------------------------- the order of checks


async def test_order_limit_before_validation_and_turnstile(server, fakes):
    for _ in range(3):
        response, _ = await post(server, "sms", {"message": ""}, ip="203.0.113.20")
        assert response.code == 400
    response, _ = await post(server, "sms", {"message": "", "turnstileToken": "bad"}, ip="203.0.113.20")
    assert response.code == 429
    assert fakes.turnstile.requests == []


async def test_order_not_found_before_limit(server):
    for _ in range(3):
        await post(server, "sms", SMS, ip="203.0.113.21")
    response, _ = await post(server, "sms", SMS, ip="203.0.113.21", pid="nobody")
    assert response.code == 404


async def test_order_turnstile_before_setup_before_credits(server, fakes):
    await server.load(owner_doc(sms={"enabled": False}, sms_credits=0))
    response, answer = await post(server, "sms", {**SMS, "turnstileToken": "bad"})
    assert answer["error"] == "Anti-spam check failed"
    response, answer = await post(server, "sms", SMS)
    assert (response.code, answer["error"]) == (400, "This SMS contact form is not active")
    await server.load(owner_doc(sms_credits=0))
    response, answer = await post(server, "sms", SMS)
    assert response.code == 402 and fakes.sms.requests == []


# ---------------------------------------------------------------- credits under concurrency


async def test_ten_concurrent_sends_with_three_credits_deliver_three(server, fakes):
    await server.load(owner_doc(sms_credits=3))
    results = await asyncio.gather(*(post(server, "sms", SMS) for _ in range(10)))
    codes = sorted(response.code for response, _ in results)
    assert codes == [200] * 3 + [402] * 7
    assert len(fakes.sms.requests) == 3
    assert await credits(server, "sms_credits") == 0


async def test_concurrent_failed_deliveries_refund_every_credit(server, fakes):
    await server.load(owner_doc(email_credits=3))
    fakes.smtp.reject_data = "554 5.7.1 Message refused"
    results = await asyncio.gather(*(post(server, "email", EMAIL) for _ in range(6)))
    assert sorted(response.code for response, _ in results).count(502) >= 3
    assert await credits(server, "email_credits") == 3


# ---------------------------------------------------------------- STARTTLS


@pytest.fixture
def relay_cert(tmp_path):
    import ssl
    import subprocess

    cert, key = tmp_path / "relay.pem", tmp_path / "relay.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=relay",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return cert, context


async def test_starttls_is_used_when_offered(make_server, fakes, relay_cert, monkeypatch):
    cert, context = relay_cert
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the relay's self-signed certificate
    smtp = FakeSmtp(tls_context=context).start()
    try:
        server = await make_server(**contact_settings(fakes, smtp_port=smtp.port))
        await server.load(base_document())
        response, _ = await post(server, "email", EMAIL)
        assert response.code == 200
        assert smtp.tls == [True]
    finally:
        smtp.stop()


async def test_starttls_with_an_untrusted_certificate_never_falls_back_to_plain_text(make_server, fakes, relay_cert):
    _, context = relay_cert
    smtp = FakeSmtp(tls_context=context).start()
    try:
        server = await make_server(**contact_settings(fakes, smtp_port=smtp.port))
        await server.load(base_document())
        response, answer = await post(server, "email", EMAIL)
        assert (response.code, answer["error"]) == (502, "Email delivery failed")
        assert smtp.messages == []
        assert await credits(server, "email_credits") == 5
    finally:
        smtp.stop()


@pytest.mark.parametrize(
    "failure, status, message",
    [
        (ConnectionFailure("mongo down"), 503, "Contact forms are temporarily unavailable, please try again later"),
        (KeyError("a bug"), 500, "Internal error"),  # a bug is not an outage
    ],
)
async def test_only_a_store_outage_is_answered_as_one(server, monkeypatch, caplog, failure, status, message):
    async def failing_lookup(profile_id: str):
        raise failure

    monkeypatch.setattr(server.services.contact.sites, "by_id", failing_lookup)
    response, body = await post(server, "sms", SMS)
    assert (response.code, body) == (status, {"ok": False, "error": message})
    assert (response.headers.get("Retry-After") == "5") == (status == 503)
    if status == 500:  # the bug is logged with its traceback, and no credit was spent
        assert any(record.exc_info and record.exc_info[1] is failure for record in caplog.records)
    assert await credits(server, "sms_credits") == 5
