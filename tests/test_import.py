"""The importer checks everything before the first write: types, ranges, text MongoDB can store, rules across records.

Each message names its record (`users[i] (id)` / `profiles[i] (id)`) and its field once.
The format's schema is held to the importer in tests/test_import_schema.py.
"""

from __future__ import annotations

import copy
import json

import pytest

from store.import_validation import MAX_COUNT, validate_document
from store.importer import import_document

from conftest import base_document

SURROGATE = "\ud800"  # what JSON's "\ud800" escape decodes to: not Unicode text, not storable


def errors_of(doc) -> list[str]:
    return validate_document(doc)[2]


def two_profiles() -> dict:
    doc = base_document()
    doc["profiles"].append(copy.deepcopy(doc["profiles"][0]) | {"id": "p2", "domain": "bob.hep.gg"})
    return doc


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["profiles"][0]["theme"].update(font=[]), "profiles[0] (p1): theme.font must be one of"),
        (lambda d: d["profiles"][0]["theme"].update(font={"a": 1}), "profiles[0] (p1): theme.font must be one of"),
        (lambda d: d["profiles"][0].update(template=["classic"]), "profiles[0] (p1): template must be one of"),
        (
            lambda d: d["users"][0].update(sms_credits=2**64),
            f"users[0] (u1): sms_credits must be a whole number from 0 to {MAX_COUNT}",
        ),
        (lambda d: d["users"][0].update(email_credits=-1), "users[0] (u1): email_credits must be a whole number"),
        (lambda d: d["users"][0].update(sms_credits=1.5), "users[0] (u1): sms_credits must be a whole number"),
        (lambda d: d["profiles"][0].update(domain=["x"]), "profiles[0] (p1): domain must be a host name"),
        (lambda d: d["profiles"][0].update(domain="ålice.hep.gg"), "profiles[0] (p1): domain must be a host name"),
        (
            lambda d: d["profiles"][0].update(created_at="2026-01-01"),
            "profiles[0] (p1): created_at must be an RFC 3339 time",
        ),
        (
            lambda d: d["profiles"][0].update(expires_at=20260101),
            "profiles[0] (p1): expires_at must be an RFC 3339 time",
        ),
        (
            lambda d: d["profiles"][0]["content"].update(bio=SURROGATE),
            "profiles[0] (p1): content.bio must be valid Unicode text",
        ),
        (
            lambda d: d["users"][0]["sms"].update(key="k" + SURROGATE),
            "users[0] (u1): sms.key must be valid Unicode text",
        ),
        (
            lambda d: d["profiles"][0]["theme"].update({SURROGATE: 1}),
            "profiles[0] (p1): theme has unknown fields: '\\ud800'",
        ),
        (lambda d: d["profiles"][0].update({SURROGATE: 1}), "profiles[0] (p1): '\\ud800' is not a known field"),
        (
            lambda d: d["users"][0].update(slots=[{"expires_at": None}] * 1001),
            "users[0] (u1): slots must be a list of at most 1000",
        ),
    ],
)
def test_every_bad_value_is_a_message_never_an_exception(change, message):
    doc = base_document()
    change(doc)
    errors = errors_of(doc)
    assert any(error.startswith(message) for error in errors), errors


def test_messages_name_a_field_once():
    doc = base_document(theme={"accent": "red", "background": {"from": "#000", "to": 1, "angle": 999}, "font": "Comic"})
    errors = errors_of(doc)
    assert errors == [
        "profiles[0] (p1): theme.accent must be a hex colour like #7c3aed",
        "profiles[0] (p1): theme.background.to must be a hex colour",
        "profiles[0] (p1): theme.background.angle must be a whole number of degrees 0-360",
        "profiles[0] (p1): theme.font must be one of Inter, System, Serif, Mono, Rounded",
    ]
    assert not any("theme theme" in error for error in errors)


def test_a_trailing_newline_is_not_a_colour():
    assert errors_of(base_document(theme={"accent": "#abc\n"})) == [
        "profiles[0] (p1): theme.accent must be a hex colour like #7c3aed"
    ]


def test_empty_strings_are_unset_contact_settings():
    doc = base_document()
    doc["users"][0]["sms"] = {"enabled": False, "key": "", "phone": "", "phone_verified": False}
    doc["users"][0]["email"] = {"enabled": False, "key": "", "address": "", "verified": False}
    doc["users"][0]["discord"] = {"channel_id": "", "bot_present": False}
    doc["users"][0]["music"] = {"enabled": False, "key": ""}
    users, _, errors = validate_document(doc)
    assert errors == []
    assert users[0]["sms"] == {"enabled": False, "key": None, "phone": None, "phone_verified": False}
    assert users[0]["email"]["address"] is None and users[0]["discord"]["channel_id"] is None


@pytest.mark.parametrize("doc", [{}, {"users": [], "profiles": []}, {"users": []}])
def test_an_empty_file_has_nothing_to_import(doc):
    assert errors_of(doc) == ["nothing to import: the file has no users and no profiles"]


def test_rules_across_records_name_the_record():
    doc = two_profiles()
    doc["profiles"].append(copy.deepcopy(doc["profiles"][0]) | {"id": "p3", "domain": "ALICE.hep.gg"})
    doc["users"].append(copy.deepcopy(doc["users"][0]))
    assert errors_of(doc) == [
        "users[1] (u1): user id 'u1' appears more than once in the file (first in users[0] (u1))",
        "profiles[2] (p3): domain 'alice.hep.gg' appears more than once in the file (first in profiles[0] (p1))",
    ]


async def test_a_bad_second_profile_writes_nothing(app_server):
    db = app_server.services.db
    doc = two_profiles()
    doc["profiles"][1]["content"]["display_name"] = "Bob " + SURROGATE
    report = await import_document(db, doc)
    assert report.errors == [
        "profiles[1] (p2): content.display_name must be valid Unicode text (it holds a lone surrogate)"
    ]
    assert await db.users.count_documents({}) == 0 and await db.profiles.count_documents({}) == 0
    doc = two_profiles()
    doc["users"][0]["sms_credits"] = 2**63  # one past int64: MongoDB could not store it
    report = await import_document(db, doc)
    assert report.errors and report.errors[0].startswith("users[0] (u1): sms_credits must be a whole number")
    assert await db.users.count_documents({}) == 0
    doc["users"][0]["sms_credits"] = MAX_COUNT  # the largest it can store
    assert (await import_document(db, doc)).ok
    assert (await db.users.find_one({"_id": "u1"}))["sms_credits"] == MAX_COUNT


async def test_database_rules_name_the_record(app_server):
    db = app_server.services.db
    assert (await import_document(db, base_document())).ok
    doc = two_profiles()
    del doc["users"]
    doc["profiles"][0] |= {"id": "p9"}  # alice.hep.gg belongs to p1 in the database
    doc["profiles"][1] |= {"owner_id": "nobody"}
    assert (await import_document(db, doc)).errors == [
        "profiles[1] (p2): owner 'nobody' is neither in the file nor already imported",
        "profiles[0] (p9): domain 'alice.hep.gg' already belongs to profile 'p1'",
    ]


def test_the_demo_document_and_iso_times_pass():
    from runtime.cli import demo_document

    assert errors_of(demo_document()) == []
    for stamp in (
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00.5+02:00",
        "2026-01-01t00:00:00z",
        "2026-12-31T23:59:59.123456-05:30",
    ):
        assert errors_of(base_document(created_at=stamp)) == [], stamp
    for stamp in (
        "2026-02-30T00:00:00Z",
        "2026-01-01T00:00:00Z\n",
        "tomorrow",
        "2026-01-01T00:00",
        "2026-01-01 00:00:00Z",
        "2026-01-01T00:00:00",
    ):
        assert errors_of(base_document(created_at=stamp)) == [
            "profiles[0] (p1): created_at must be an RFC 3339 time like 2026-01-01T00:00:00Z, or null"
        ], stamp


def test_a_json_file_with_a_lone_surrogate_is_reported_not_raised(tmp_path):
    from runtime.cli import read_import_file

    path = tmp_path / "doc.json"
    doc = two_profiles()
    doc["profiles"][1]["content"]["bio"] = "X"
    path.write_text(json.dumps(doc).replace('"X"', '"\\ud800"'))
    assert errors_of(read_import_file(str(path))) == [
        "profiles[1] (p2): content.bio must be valid Unicode text (it holds a lone surrogate)"
    ]
