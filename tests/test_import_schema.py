"""docs/import.schema.json and the importer hold each other: what one accepts, the other accepts.

- Files drawn from the schema itself (a small hypothesis generator for the
  keywords it uses) pass the importer's validation.
- A corpus of invalid files fails both.
- Mutations of valid files (a value replaced by any JSON value, a field removed
  or added) are accepted by both or by neither.

The schema is validated with jsonschema-rs (ECMA-262 regular expressions: `$`
ends the text, as in the documents' readers), with date-time formats checked.
Rules the schema cannot state (unique ids and domains across records, owners
that exist, a gradient background some text colour reads on at WCAG AA) are
excluded by drawing distinct ids and domains and readable gradients;
tests/test_import.py and tests/test_contrast.py cover them.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from store.import_validation import validate_document
from store.theme import unreadable_gradient

from conftest import base_document

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "docs" / "import.schema.json").read_text())
VALIDATOR = jsonschema_rs.validator_for(SCHEMA, validate_formats=True)
HEX = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
PROPERTY = settings(
    max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


def schema_accepts(doc: Any) -> bool:
    return VALIDATOR.is_valid(doc)


def importer_accepts(doc: Any) -> bool:
    return validate_document(copy.deepcopy(doc))[2] == []


def readable_gradients(doc: Any) -> bool:
    """No profile has a well-formed gradient that the importer refuses for contrast (store/theme.py)."""
    profiles = doc.get("profiles") if isinstance(doc, dict) else None
    for profile in profiles if isinstance(profiles, list) else []:
        theme = profile.get("theme") if isinstance(profile, dict) else None
        background = theme.get("background") if isinstance(theme, dict) else None
        if isinstance(background, dict):
            ends = background.get("from"), background.get("to")
            if all(isinstance(end, str) and HEX.fullmatch(end) for end in ends) and unreadable_gradient(*ends):
                return False
    return True


# ---------------------------------------------------------------- documents drawn from the schema


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = {
            **SCHEMA["$defs"][node["$ref"].removeprefix("#/$defs/")],
            **{k: v for k, v in node.items() if k != "$ref"},
        }
    return node


def _timestamps() -> st.SearchStrategy[str]:
    offsets = st.sampled_from(["Z", "z", "+00:00", "-05:30", "+14:00", "+02:00"])
    moments = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
    fractions = st.sampled_from(["", ".5", ".123", ".123456"])
    return st.builds(
        lambda m, fraction, offset: (
            f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}" + fraction + offset
        ),
        moments,
        fractions,
        offsets,
    )


def _text(node: dict[str, Any]) -> st.SearchStrategy[str]:
    if node.get("format") == "date-time":
        return _timestamps()
    if "pattern" in node:
        pattern = node["pattern"].removeprefix("^").removesuffix("$")
        strategy = st.from_regex(re.compile(pattern), fullmatch=True)
        return strategy.filter(lambda text: len(text) <= node.get("maxLength", 10**9))
    return st.text(st.characters(codec="utf-8"), max_size=min(node.get("maxLength", 40), 40))


def draw_from(node: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid under `node`, for the keywords docs/import.schema.json uses."""
    node = _resolve(node)
    if "anyOf" in node and "type" not in node and "enum" not in node:
        return st.one_of(
            [draw_from({**{k: v for k, v in node.items() if k != "anyOf"}, **option}) for option in node["anyOf"]]
        )
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kinds = node.get("type")
    if isinstance(kinds, list):
        return st.one_of([draw_from({**node, "type": kind}) for kind in kinds])
    if kinds == "null":
        return st.none()
    if kinds == "boolean":
        return st.booleans()
    if kinds == "integer":
        return st.integers(node.get("minimum", -(2**63)), node.get("maximum", 2**63 - 1))
    if kinds == "string":
        return _text(node)
    if kinds == "array":
        return st.lists(draw_from(node["items"]), max_size=min(node.get("maxItems", 3), 3))
    if kinds == "object":
        properties = node.get("properties", {})
        required = set(node.get("required", []))
        return st.fixed_dictionaries(
            {name: draw_from(properties[name]) for name in sorted(required)},
            optional={name: draw_from(sub) for name, sub in properties.items() if name not in required},
        )
    raise AssertionError(f"the generator does not know {node}")


USERS = st.lists(draw_from({"$ref": "#/$defs/user"}), max_size=2, unique_by=lambda user: user["id"])
PROFILES = st.lists(
    draw_from({"$ref": "#/$defs/profile"}),
    max_size=2,
    unique_by=(lambda p: p["id"], lambda p: p["domain"].lower().removesuffix(".")),
)
DOCUMENTS = st.builds(lambda users, profiles: {"users": users, "profiles": profiles}, USERS, PROFILES).filter(
    lambda doc: (doc["users"] or doc["profiles"]) and readable_gradients(doc)
)


@pytest.mark.slow  # hypothesis: documents drawn from the JSON schema
@PROPERTY
@given(doc=DOCUMENTS)
def test_files_drawn_from_the_schema_pass_the_importer(doc):
    assert schema_accepts(doc), doc
    assert validate_document(copy.deepcopy(doc))[2] == [], doc


# ---------------------------------------------------------------- invalid files fail both


def _with(change) -> dict:
    doc = base_document()
    change(doc)
    return doc


INVALID = {
    "not an object": [],
    "nothing to import": {},
    "unknown top-level field": {"users": [], "profiles": [], "extra": 1},
    "users not a list": {"users": {}},
    "unknown user field": _with(lambda d: d["users"][0].update(surprise=1)),
    "bad user id": _with(lambda d: d["users"][0].update(id="bad id")),
    "credits over int64": _with(lambda d: d["users"][0].update(sms_credits=2**63)),
    "negative credits": _with(lambda d: d["users"][0].update(email_credits=-1)),
    "fractional credits": _with(lambda d: d["users"][0].update(email_credits=1.5)),
    "boolean credits": _with(lambda d: d["users"][0].update(sms_credits=True)),
    "bad phone": _with(lambda d: d["users"][0]["sms"].update(phone="555-0100")),
    "owner address not ASCII": _with(lambda d: d["users"][0]["email"].update(address="é@example.com")),
    "owner address list": _with(lambda d: d["users"][0]["email"].update(address="a@example.com,b@example.com")),
    "channel id not digits": _with(lambda d: d["users"][0]["discord"].update(channel_id="12a")),
    "slot without expiry": _with(lambda d: d["users"][0].update(slots=[{}])),
    "slot with null expiry": _with(lambda d: d["users"][0].update(slots=[{"expires_at": None}])),
    "too many slots": _with(lambda d: d["users"][0].update(slots=[{"expires_at": "2030-01-01T00:00:00Z"}] * 1001)),
    "time without offset": _with(lambda d: d["users"][0].update(premium_until="2030-01-01T00:00:00")),
    "time with a space": _with(lambda d: d["users"][0].update(premium_until="2030-01-01 00:00:00Z")),
    "30 February": _with(lambda d: d["users"][0].update(premium_until="2030-02-30T00:00:00Z")),
    "leap second": _with(lambda d: d["users"][0].update(premium_until="2030-06-30T23:59:60Z")),
    "date only": _with(lambda d: d["profiles"][0].update(created_at="2026-01-01")),
    "profile without domain": _with(lambda d: d["profiles"][0].pop("domain")),
    "domain with two dots": _with(lambda d: d["profiles"][0].update(domain="alice.hep.gg..")),
    "domain with spaces": _with(lambda d: d["profiles"][0].update(domain=" alice.hep.gg")),
    "single-label domain": _with(lambda d: d["profiles"][0].update(domain="localhost")),
    "unknown template": _with(lambda d: d["profiles"][0].update(template="fancy")),
    "is_public 2": _with(lambda d: d["profiles"][0].update(is_public=2)),
    "accent with newline": _with(lambda d: d["profiles"][0]["theme"].update(accent="#abc\n")),
    "accent named": _with(lambda d: d["profiles"][0]["theme"].update(accent="red")),
    "font list": _with(lambda d: d["profiles"][0]["theme"].update(font=[])),
    "gradient angle 361": _with(
        lambda d: d["profiles"][0]["theme"].update(background={"from": "#000", "to": "#fff", "angle": 361})
    ),
    "gradient without to": _with(lambda d: d["profiles"][0]["theme"].update(background={"from": "#000"})),
    "bio too long": _with(lambda d: d["profiles"][0]["content"].update(bio="x" * 601)),
    "javascript link": _with(lambda d: d["profiles"][0]["content"]["links"][0].update(url="javascript:alert(1)")),
    "link with a space": _with(lambda d: d["profiles"][0]["content"]["links"][0].update(url="https://a.example/a b")),
    "link to an IPv6 literal": _with(lambda d: d["profiles"][0]["content"]["links"][0].update(url="http://[::1]/")),
    "link without host": _with(lambda d: d["profiles"][0]["content"]["links"][0].update(url="https:///x")),
    "link without label": _with(lambda d: d["profiles"][0]["content"]["links"][0].pop("label")),
    "avatar with user": _with(lambda d: d["profiles"][0]["content"].update(avatar_url="https://u@img.example/a.png")),
    "avatar port 70000": _with(lambda d: d["profiles"][0]["content"].update(avatar_url="https://img.example:70000/")),
    "too many tracks": _with(lambda d: d["profiles"][0]["content"].update(music=[{"isrc": "USRC17607839"}] * 21)),
    "short isrc": _with(lambda d: d["profiles"][0]["content"]["music"][0].update(isrc="USRC1760783")),
    "unknown toggle": _with(lambda d: d["profiles"][0]["toggles"].update(confetti=True)),
    "toggle as 1": _with(lambda d: d["profiles"][0]["toggles"].update(presence=1)),
}


@pytest.mark.parametrize("name", INVALID)
def test_invalid_files_fail_both(name):
    doc = INVALID[name]
    assert not schema_accepts(doc), name
    assert not importer_accepts(doc), name


VALID = {
    "base": base_document(),
    "blank contact settings": _with(
        lambda d: d["users"][0].update(
            sms={"enabled": False, "key": "", "phone": "", "phone_verified": False},
            email={"enabled": False, "key": None, "address": "", "verified": False},
            discord={"channel_id": "", "bot_present": False},
        )
    ),
    "whole numbers written with a fraction": _with(
        lambda d: (
            d["users"][0].update(sms_credits=5.0),
            d["profiles"][0].update(is_public=1.0),
            d["profiles"][0]["theme"].update(background={"from": "#000", "to": "#333", "angle": 90.0}),
        )
    ),
    "domain in capitals with a trailing dot": _with(lambda d: d["profiles"][0].update(domain="Alice.Hep.GG.")),
    "largest credits": _with(lambda d: d["users"][0].update(sms_credits=2**63 - 1)),
    "profiles only": {"profiles": base_document()["profiles"]},
    "avatar with a port": _with(lambda d: d["profiles"][0]["content"].update(avatar_url="https://img.example:0443/a")),
    "mailto link": _with(lambda d: d["profiles"][0]["content"]["links"][0].update(url="MAILTO:hello@example.com")),
}


@pytest.mark.parametrize("name", VALID)
def test_valid_files_pass_both(name):
    assert schema_accepts(VALID[name]), name
    assert importer_accepts(VALID[name]), name


# ---------------------------------------------------------------- mutations: both agree


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "#abc", "2026-01-01T00:00:00Z", "https://a.example/", "u1", "classic", "Inter", "+15550100"])
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)


def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*path, index))
    return found


def _mutated(doc: Any, path: tuple, action: str, value: Any) -> Any:
    doc = copy.deepcopy(doc)
    if not path:
        return value
    *parents, last = path
    target = doc
    for step in parents:
        target = target[step]
    if action == "replace":
        target[last] = value
    elif action == "remove":
        del target[last]
    elif isinstance(target[last], dict):
        target[last]["extra_field"] = value
    else:
        target[last] = value
    return doc


@pytest.mark.slow
@PROPERTY
@given(doc=DOCUMENTS, data=st.data())
def test_mutated_files_are_accepted_by_both_or_by_neither(doc, data):
    path = data.draw(st.sampled_from(_paths(doc)))
    action = data.draw(st.sampled_from(["replace", "remove", "add"]))
    value = data.draw(JSON_VALUES)
    mutated = _mutated(doc, path, action, value)
    users = mutated.get("users") if isinstance(mutated, dict) else None
    profiles = mutated.get("profiles") if isinstance(mutated, dict) else None
    # Uniqueness across records is the importer's alone: keep mutations that only change it out.
    for records, key in ((users, "id"), (profiles, "id"), (profiles, "domain")):
        if isinstance(records, list):
            values = [r.get(key) for r in records if isinstance(r, dict) and isinstance(r.get(key), str)]
            values = [v.lower().removesuffix(".") if key == "domain" else v for v in values]
            assume(len(values) == len(set(values)))
    assume(readable_gradients(mutated))
    assert schema_accepts(mutated) == importer_accepts(mutated), (path, action, value, mutated)


def test_the_demo_document_and_the_test_documents_are_valid():
    from runtime.cli import demo_document

    demo = json.loads(json.dumps(demo_document(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=0.5))))
    assert schema_accepts(demo) and importer_accepts(demo)
