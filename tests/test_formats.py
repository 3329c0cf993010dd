"""Validation patterns test the whole string (issue 19, item 1).

Python's `$` also matches before a trailing newline, so `^[A-Z0-9]{12}$` let
`USRC17607839\\n` through (the music proxy then answered 502 instead of 400) and
`#abc\\n` became a stored theme colour (the page and the card then answered 500).
The oracles here are written by hand from the documented shapes, never from the
implementation's patterns, and the end-to-end tests check the answers.
"""

from __future__ import annotations

import ast
import string

from hypothesis import example, given, settings
from hypothesis import strategies as st

from store.formats import (
    DISCORD_CHANNEL_PATTERN,
    DOMAIN_PATTERN,
    EMAIL_PATTERN,
    ID_PATTERN,
    ISRC_PATTERN,
    PHONE_PATTERN,
)
from store.import_validation import validate_document
from store.theme import HEX_COLOUR, parse_theme

from conftest import ROOT, base_document

ALNUM = set(string.ascii_letters + string.digits)
HEX = set(string.hexdigits)
ORACLE = settings(max_examples=300, derandomize=True, database=None, deadline=None)


def is_isrc(text: str) -> bool:
    """12 ASCII letters or digits (the spec's `^[A-Z0-9]{12}$`, case-insensitive)."""
    return len(text) == 12 and all(ch in ALNUM for ch in text)


def is_id(text: str) -> bool:
    return 1 <= len(text) <= 64 and all(ch in ALNUM or ch in "_-" for ch in text)


def is_hex_colour(text: str) -> bool:
    return len(text) in (4, 7) and text[0] == "#" and all(ch in HEX for ch in text[1:])


def is_phone(text: str) -> bool:
    digits = text[1:]
    return text[:1] == "+" and 7 <= len(digits) <= 15 and digits[0] in "123456789" and set(digits) <= set("0123456789")


def is_discord_channel(text: str) -> bool:
    return 1 <= len(text) <= 32 and set(text) <= set("0123456789")


# Near-misses: valid shapes with a line break or other whitespace glued on, and arbitrary text.
def near_misses(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    tails = st.sampled_from(["\n", "\r\n", "\r", " ", "\t", "\x00", "\u2028", "\x0b", "\x0c", "\x85"])
    return (
        valid
        | st.tuples(valid, tails).map("".join)
        | st.tuples(tails, valid).map("".join)
        | st.text(max_size=70)
        | st.text(alphabet=string.ascii_letters + string.digits + "\n_-#+", max_size=70)
    )


ISRCS = near_misses(st.text(alphabet=string.ascii_letters + string.digits, min_size=11, max_size=13))
IDS = near_misses(st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=65))
COLOURS = near_misses(st.text(alphabet="0123456789abcdefABCDEFg", min_size=3, max_size=6).map(lambda s: "#" + s))
PHONES = near_misses(st.text(alphabet="0123456789", min_size=6, max_size=16).map(lambda s: "+" + s))
CHANNELS = near_misses(st.text(alphabet="0123456789", min_size=1, max_size=33))


@ORACLE
@given(ISRCS)
@example("USRC17607839\n")
def test_isrc_pattern_agrees_with_the_oracle(text):
    assert bool(ISRC_PATTERN.match(text)) is is_isrc(text), repr(text)


@ORACLE
@given(IDS)
def test_id_pattern_agrees_with_the_oracle(text):
    assert bool(ID_PATTERN.match(text)) is is_id(text), repr(text)


@ORACLE
@given(COLOURS)
def test_hex_colour_pattern_agrees_with_the_oracle(text):
    assert bool(HEX_COLOUR.match(text)) is is_hex_colour(text), repr(text)


@ORACLE
@given(PHONES)
def test_phone_pattern_agrees_with_the_oracle(text):
    assert bool(PHONE_PATTERN.match(text)) is is_phone(text), repr(text)


@ORACLE
@given(CHANNELS)
def test_discord_channel_pattern_agrees_with_the_oracle(text):
    assert bool(DISCORD_CHANNEL_PATTERN.match(text)) is is_discord_channel(text), repr(text)


def test_no_pattern_accepts_a_trailing_line_break():
    for pattern, valid in (
        (DOMAIN_PATTERN, "alice.hep.gg"),
        (EMAIL_PATTERN, "visitor@example.com"),
        (ISRC_PATTERN, "USRC17607839"),
        (ID_PATTERN, "p1"),
        (HEX_COLOUR, "#abc"),
        (PHONE_PATTERN, "+15550100"),
        (DISCORD_CHANNEL_PATTERN, "1234567890"),
    ):
        assert pattern.match(valid), pattern.pattern
        for tail in ("\n", "\r\n", " "):
            assert not pattern.match(valid + tail), (pattern.pattern, tail)
            assert not pattern.search(valid + tail), (pattern.pattern, tail)


def _anchors_outside_classes(pattern: str) -> list[str]:
    """`^` and `$` used as anchors (not escaped, not inside a character class) in a pattern's source."""
    found, in_class, i = [], False, 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]" or pattern[i - 1] == "["
        elif ch == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "^":
                i += 1  # a negated class, not an anchor
        elif ch in "^$":
            found.append(ch)
        i += 1
    return found


def test_the_anchor_scan_finds_what_it_is_for():
    assert _anchors_outside_classes(r"^[A-Z]{12}$") == ["^", "$"]
    assert _anchors_outside_classes(r"\A[^$^]\$\Z") == []
    assert _anchors_outside_classes(r"[!#$%&]+:[^\n]*") == []


def test_no_compiled_pattern_in_the_code_uses_caret_or_dollar_anchors():
    """Every re.compile in the project anchors with \\A and \\Z, so match/search/fullmatch all test the whole
    string (STYLE.md: "Regexes with `$`")."""
    offenders = []
    for path in sorted(ROOT.glob("**/*.py")):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in (".venv", "tests", "build") or relative.parts[0].startswith("."):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(relative))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("compile", "match", "fullmatch", "search")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "re"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str | bytes)
            ):
                source = node.args[0].value
                text = source.decode("latin1") if isinstance(source, bytes) else source
                if _anchors_outside_classes(text):
                    offenders.append(f"{relative}:{node.lineno} {text[:60]!r}")
    assert offenders == []


# ---------------------------------------------------------------- the answers


def test_importer_refuses_colours_with_a_trailing_line_break():
    for theme in (
        {"accent": "#abc\n"},
        {"background": "#abc\n"},
        {"background": {"from": "#000000\n", "to": "#ffffff", "angle": 90}},
        {"background": {"from": "#000000", "to": "#fff\r\n", "angle": 90}},
    ):
        _, _, errors = validate_document(base_document(theme=theme))
        assert any("theme" in error for error in errors), theme


def test_importer_refuses_ids_and_isrcs_with_a_trailing_line_break():
    # (a domain is normalised first: surrounding whitespace and one trailing dot are stripped)
    for overrides, field in (
        ({"id": "p1\n"}, "id"),
        ({"content": {"display_name": "A", "music": [{"isrc": "USRC17607839\n"}]}}, "isrc"),
    ):
        _, _, errors = validate_document(base_document(**overrides))
        assert any(field in error for error in errors), (overrides, errors)


def test_a_stored_theme_with_bad_colours_reads_back_as_the_default():
    default = parse_theme({})
    for theme in (
        {"accent": "#abc\n"},
        {"background": "#abc\n"},
        {"background": {"from": "#abc\n", "to": "#fff"}},
        {"accent": "#abcd"},
        {"accent": 5},
        {"background": None},
    ):
        assert parse_theme(theme) == default, theme


async def test_a_stored_colour_with_a_line_break_never_fails_the_page_or_the_card(app_server):
    await app_server.load(base_document())
    for theme in (
        {"accent": "#abc\n", "background": "#0b0b10", "font": "Inter"},
        {"accent": "#7c3aed", "background": "#abc\n", "font": "Inter"},
        {"accent": "#7c3aed", "background": {"from": "#abc\n", "to": "#000", "angle": 90}, "font": "Inter"},
    ):
        await app_server.services.db.profiles.update_one({"_id": "p1"}, {"$set": {"theme": theme}})
        app_server.services.sites.invalidate()
        page = await app_server.fetch("/", host="alice.hep.gg")
        assert page.code == 200, theme
        body = page.body.decode()
        # The whole theme fell back to the defaults, background included (two of the three set the accent).
        assert "--accent:#7c3aed" in body and "--bg-solid:#0b0b10" in body
        card = await app_server.fetch("/api/v1/profiles/p1/og.png")
        assert card.code == 200, theme
        assert card.headers["Content-Type"] == "image/png"


async def test_an_isrc_with_an_encoded_line_break_is_the_empty_400(make_server, upstream):
    server = await make_server(music_upstream_url=upstream.url)
    await server.load(base_document())
    for suffix in ("%0A", "%0D%0A", "%0a", "%20", "%00"):
        response = await server.fetch(f"/api/v1/profiles/p1/music/USRC17607839{suffix}")
        assert (response.code, response.body) == (400, b""), suffix
    response = await server.fetch("/api/v1/profiles/p1%0A/music/USRC17607839")
    assert (response.code, response.body) == (404, b"")
    response = await server.fetch("/api/v1/profiles/p1%0A/og.png")
    assert (response.code, response.body) == (404, b"Not found")
    assert upstream.requests == []
