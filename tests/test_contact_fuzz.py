"""Hypothesis against the three contact endpoints: any path, header or body gets a documented answer.

For each form (SMS, email, Discord), generated requests vary the profile id in
the path and a query string, the content type and other headers, and the body:
valid forms, forms with wrong-typed or hostile fields, arbitrary JSON, deep
nesting, lone surrogates, binary, oversized. Every answer must be one of the
statuses openapi.yaml documents for that endpoint, in the JSON envelope; a
refused request must leave both credit balances in MongoDB as they were, and
an accepted SMS or email send must take exactly one credit. No hold is ever
left pending. The delivery fakes fail now and then, so refunds are exercised.

Bounded and deterministic: a fixed number of examples per endpoint, derandomized,
no example database; each endpoint takes a few seconds.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import base_document
from contact_fakes import contact_settings

SPEC = yaml.safe_load((Path(__file__).resolve().parent.parent / "openapi.yaml").read_text())
CHANNELS = ("sms", "email", "discord")
DOCUMENTED = {
    channel: {
        int(status)
        for status in SPEC["paths"][f"/api/v1/profiles/{{profileID}}/contact/{channel}"]["post"]["responses"]
    }
    for channel in CHANNELS
}
CREDIT = {"sms": "sms_credits", "email": "email_credits"}

pytestmark = pytest.mark.slow  # hypothesis over every contact endpoint, hundreds of requests each
FUZZ = settings(
    max_examples=70,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

TEXT = st.text(max_size=30) | st.sampled_from(["", " ", "a\\ud800b", "x" * 481, "x" * 5001, "hi\r\nBcc: v@x.org"])
VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=8,
)
EMAILS = st.sampled_from(
    [
        "visitor@example.com",
        "=?utf-8?q?boss=40corp.com=2C_attacker=40evil.com?=@evil.com",
        "a@b",
        "Visitor <v@example.com>",
        "v@example.com, w@example.com",
    ]
) | st.emails().map(str)
FIELD_VALUES = {
    "message": st.sampled_from(["Hello there", "x" * 480, ""]) | TEXT | VALUE,
    "turnstileToken": st.sampled_from(["good-token", "good-token", "bad-token", "", "good" + "x" * 2045]) | VALUE,
    "email": EMAILS | VALUE,
    "subject": st.sampled_from(["Hi", "s" * 151, "Hi\nBcc: x@y.z"]) | TEXT | VALUE,
    "handle": st.sampled_from(["Jamie", "h" * 65, "@everyone\n"]) | TEXT | VALUE,
}
VALID_FORMS = {
    "sms": {"message": "Hello", "turnstileToken": "good-token"},
    "email": {"email": "visitor@example.com", "subject": "Hi", "message": "Hello", "turnstileToken": "good-token"},
    "discord": {"handle": "Jamie", "message": "Hello", "turnstileToken": "good-token"},
}
CHANGE = st.sampled_from([*FIELD_VALUES, "extra"]).flatmap(
    lambda key: FIELD_VALUES.get(key, VALUE).map(lambda value: (key, value))
)


def _json_text(form: object) -> bytes:
    # A "\\ud800" in generated text stands for the JSON escape of a lone surrogate.
    return json.dumps(form).replace("\\\\ud800", "\\ud800").encode()


def near_valid(channel: str) -> st.SearchStrategy[bytes]:
    """The channel's valid form with up to two fields changed or added and maybe one removed."""
    base = VALID_FORMS[channel]
    return st.builds(
        lambda changes, drop: _json_text({**{k: v for k, v in base.items() if k not in drop}, **dict(changes)}),
        st.lists(CHANGE, max_size=2),
        st.sets(st.sampled_from(sorted(base)), max_size=1),
    )


def bodies(channel: str) -> st.SearchStrategy[bytes]:
    other = st.one_of(
        st.dictionaries(TEXT, VALUE, max_size=4).map(_json_text),
        VALUE.map(_json_text),
        st.integers(0, 4000).map(lambda depth: b"[" * depth + b"]" * depth),
        st.integers(0, 40).map(
            lambda depth: (
                b'{"message": "hi", "turnstileToken": "good-token", "x": ' + b"[" * depth + b"]" * depth + b"}"
            )
        ),
        st.binary(max_size=64),
        st.integers(16 * 1024 - 64, 16 * 1024 + 64).map(lambda size: b'{"message": "' + b"x" * size + b'"}'),
    )
    return st.one_of(near_valid(channel), near_valid(channel), near_valid(channel), other)


CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "*/*",
    ]
) | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
HEADER_NAMES = st.sampled_from(["X-Custom", "Accept", "Origin", "Referer", "User-Agent", "Accept-Language", "Cookie"])
HEADERS = st.dictionaries(
    HEADER_NAMES, st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40), max_size=3
)
# Mostly the real profile (so bodies reach validation, Turnstile, credits and delivery), sometimes any id.
ODD_PROFILE_IDS = st.sampled_from(["nobody", "P1", "p1 ", "..", "%2e%2e"]) | st.text(min_size=1, max_size=20)
PROFILE_IDS = st.integers(0, 3).flatmap(lambda n: ODD_PROFILE_IDS if n == 0 else st.just("p1"))
QUERIES = st.sampled_from(["", "", "?", "?a=1", "?message=x&turnstileToken=good-token"])

_ips = itertools.count(1)


@pytest.fixture
async def server(make_server, fakes):
    server = await make_server(**contact_settings(fakes))  # trusts 127.0.0.1: X-Forwarded-For picks the visitor
    document = base_document()
    document["users"][0].update(sms_credits=3, email_credits=3)  # a few sends in, 402 is reached too
    await server.load(document)
    return server


async def balances(server) -> tuple[int, int, list]:
    owner = await server.services.db.users.find_one({"_id": "u1"})
    return owner["sms_credits"], owner["email_credits"], owner.get("credit_holds") or []


def envelope(body: bytes) -> dict:
    answer = json.loads(body)
    assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool), answer
    if not answer["ok"]:
        assert isinstance(answer.get("error"), str) and answer["error"], answer
        assert "Traceback" not in answer["error"]
    return answer


async def exercise(
    server,
    fakes,
    channel: str,
    profile_id: str,
    query: str,
    body: bytes,
    content_type: str,
    headers: dict,
    same_visitor: bool,
    delivery_ok: bool,
) -> None:
    fakes.sms.status = 200 if delivery_ok else 500
    fakes.discord.replies = [] if delivery_ok else [(500, {})]
    fakes.smtp.reject_data = None if delivery_ok else "554 5.7.1 <owner@example.com> refused"
    n = next(_ips)
    visitor = "203.0.113.77" if same_visitor else f"198.18.{n // 250 % 250}.{n % 250 + 1}"
    before = await balances(server)
    path = f"/api/v1/profiles/{quote(profile_id, safe='')}/contact/{channel}{query}"
    response = await server.fetch(
        path,
        method="POST",
        body=body,
        headers={**headers, "Content-Type": content_type, "X-Forwarded-For": visitor},
    )
    assert response.code in DOCUMENTED[channel], (response.code, response.body[:300], body[:200])
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    answer = envelope(response.body)
    assert answer["ok"] == (response.code == 200)
    after = await balances(server)
    assert after[2] == [], "a hold was left pending"
    spent = [before[0] - after[0], before[1] - after[1]]
    if response.code == 200 and channel in CREDIT:
        assert spent == ([1, 0] if channel == "sms" else [0, 1]), (spent, body[:200])
    else:
        assert spent == [0, 0], (response.code, answer, body[:200])
    if response.code == 400 and fakes.smtp.messages:
        assert "owner@example.com" not in response.body.decode()


def _fuzz(channel: str):
    @FUZZ
    @given(
        profile_id=PROFILE_IDS,
        query=QUERIES,
        body=bodies(channel),
        content_type=CONTENT_TYPES,
        headers=HEADERS,
        same_visitor=st.sampled_from([False, False, False, True]),
        delivery_ok=st.booleans(),
    )
    async def test(server, fakes, profile_id, query, body, content_type, headers, same_visitor, delivery_ok):
        await exercise(
            server, fakes, channel, profile_id, query, body, content_type, headers, same_visitor, delivery_ok
        )

    test.__name__ = f"test_any_{channel}_request_gets_a_documented_answer_and_a_refusal_costs_nothing"
    return test


test_any_sms_request_gets_a_documented_answer_and_a_refusal_costs_nothing = _fuzz("sms")
test_any_email_request_gets_a_documented_answer_and_a_refusal_costs_nothing = _fuzz("email")
test_any_discord_request_gets_a_documented_answer_and_a_refusal_costs_nothing = _fuzz("discord")


def test_the_documented_statuses_are_the_ones_checked():
    assert DOCUMENTED["sms"] == {200, 400, 402, 404, 413, 429, 502, 503}
    assert DOCUMENTED["email"] == {200, 400, 402, 404, 413, 429, 502, 503}
    assert DOCUMENTED["discord"] == {200, 400, 404, 413, 429, 502, 503}


# ---------------------------------------------------------------- Reply-To is exactly the visitor


LOCAL_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
ADDRESSES = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.text(LOCAL_CHARS, min_size=1, max_size=30)
    | st.sampled_from(["=?utf-8?q?a=40b.c=2C_d=40e.f?=", "a(b)", '"a b"']),
    st.sampled_from(["example.com", "mail.example.co.uk", "evil.com"]),
)


PLAIN_ADDRESS = "visitor@example.com"


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(address=ADDRESSES)
@example(address=PLAIN_ADDRESS)
def test_an_accepted_address_is_the_one_and_only_reply_to(address):
    """Whatever the email form accepts, the mail built from it names exactly that address in Reply-To."""
    from email import message_from_bytes
    from email.policy import default as default_policy

    from contact.delivery.email import SmtpSettings, build_message
    from contact.errors import InvalidInput
    from contact.validation import parse_form

    body = json.dumps({"email": address, "message": "hi", "turnstileToken": "t"}).encode()
    try:
        form = parse_form("email", body)
    except InvalidInput:
        assert address != PLAIN_ADDRESS  # the property is checked on at least this one accepted address
        return
    settings_ = SmtpSettings("127.0.0.1", 25, "", "", "Hep.gg <no-reply@hep.gg>", 1.0)
    message = build_message(settings_, "owner@example.com", form.email, "", "hi", "alice.hep.gg")
    parsed = message_from_bytes(message.as_bytes(), policy=default_policy)
    assert [(a.display_name, a.addr_spec) for a in parsed["Reply-To"].addresses] == [("", address)]
    assert "=?" not in address
