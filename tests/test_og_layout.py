"""The card's layout (render/og_layout.py) and font runs (render/og_fonts.py), without wand.

Widths come from a function passed in, so these tests measure with a fixed
advance per character and check every decision the drawing then follows.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from render.colour import page_inks
from render.og_card import HEIGHT, CardInput
from render.og_emoji import emoji_font
from render.og_fonts import THEME_FONTS, FontRuns, cjk_fonts, font_path
from render.og_layout import (
    ELLIPSIS,
    NAME_LEADING,
    STRIPE,
    TEXT_LEFT,
    Palette,
    initials_ink,
    palette,
    place_text,
    tokens,
    wrap,
)
from store.theme import parse_theme

from conftest import ROOT


def monospace(advance: float = 10.0):
    return lambda text: advance * len(text)


def test_tokens_keep_words_and_break_cjk_anywhere():
    assert list(tokens("ab  cd")) == ["ab", " ", " ", "cd"]
    assert list(tokens("日本ab")) == ["日", "本", "ab"]


@pytest.mark.parametrize("text", ["W" * 80, "word " * 200, "日本語" * 100, "a" * 30 + " " + "b" * 200])
def test_wrap_never_overflows_and_ends_a_cut_text_in_an_ellipsis(text):
    width = monospace()
    lines = wrap(text, 2, width, line_width=200)
    assert len(lines) == 2 and lines[-1].endswith(ELLIPSIS)
    assert all(width(line) <= 200 for line in lines)


def test_wrap_keeps_short_text_whole_and_breaks_between_words():
    assert wrap("Short bio", 3, monospace(), line_width=200) == ["Short bio"]
    assert wrap("", 3, monospace()) == []
    assert wrap("one two three", 3, monospace(), line_width=70) == ["one two", "three"]
    assert wrap("abcdefghij", 3, monospace(), line_width=40) == ["abcd", "efgh", "ij"]  # a word too long is cut


def test_text_is_placed_top_down_and_centred_on_the_avatar():
    lines = place_text(["Name"], ["bio one", "bio two"], ["alice.hep.gg"])
    assert [line.role for line in lines] == ["name", "bio", "bio", "domain"]
    assert all(line.x == TEXT_LEFT for line in lines)
    baselines = [line.baseline for line in lines]
    assert baselines == sorted(baselines) and baselines[0] > 0 and baselines[-1] < HEIGHT - STRIPE
    # one name line alone sits in the middle of the space above the accent stripe
    [alone] = place_text(["Name"], [], [])
    assert alone.baseline == (HEIGHT - STRIPE - NAME_LEADING) // 2 + NAME_LEADING - 18


def card(background_from: str, background_to: str, accent: str) -> CardInput:
    return CardInput("A", "", "a.hep.gg", accent, background_from, background_to, 135, "Inter", "A")


def test_palette_reads_on_the_background():
    assert palette(card("#000000", "#000000", "#7c3aed")) == Palette("#ffffff", "#c9c9d6", "#7c3aed")
    assert palette(card("#ffffff", "#ffffff", "#fafafa")) == Palette("#111118", "#3c3c48", "#111118")  # accent too pale
    assert palette(card("#202020", "#202020", "#7c3aed")).ink == "#ffffff"
    assert palette(card("#202020", "#ffffff", "#7c3aed")).ink == "#111118"  # the gradient's midpoint decides
    assert (initials_ink("#ffff00"), initials_ink("#202020")) == ("#000000", "#ffffff")
    # The page's rule, not a luminance cut: white on orange was 2.39:1 on the card while the page drew black.
    assert initials_ink("#ff8800") == page_inks(parse_theme({"accent": "#ff8800"})).on_accent == "#000000"


def test_font_runs_fall_back_to_cjk_and_drop_what_no_font_draws():
    runs = FontRuns()
    latin, cjk = font_path(THEME_FONTS["Inter"][0]), cjk_fonts()[0]
    assert runs.runs("Ab山\u200d🎸c", latin, cjk) == [(latin, "Ab"), (cjk, "山"), (latin, "c")]
    assert runs.clean("  a\n\t🎸  b ", latin, cjk) == "a b"


def test_text_left_without_a_character_no_font_draws_keeps_its_spacing_and_punctuation():
    """The card without an emoji font (or a character no font has): what is left reads as the owner wrote it,
    not "Based in Tokyo , Japan" (issue 21)."""
    runs = FontRuns()  # no emoji font
    latin, cjk = font_path(THEME_FONTS["Inter"][1]), cjk_fonts()[1]
    cases = {
        "Based in Tokyo 🗼, Japan 🇯🇵.": "Based in Tokyo, Japan.",
        "English 🇬🇧 / Deutsch 🇩🇪": "English / Deutsch",
        "Guitar (🎸 and bass)": "Guitar (and bass)",
        "🎉 Party time 🎉!": "Party time!",
        "Hi 👋🏽 there": "Hi there",
        "Tea 🫖 & cake": "Tea & cake",
        "🇬🇧/🇩🇪": "/",
    }
    assert {text: runs.clean(text, latin, cjk) for text in cases} == cases


def test_emoji_are_one_picture_each_with_what_belongs_to_them():
    emoji = emoji_font()
    if emoji is None:
        pytest.skip("needs fonts-noto-color-emoji (scripts/install.sh)")
    runs = FontRuns(emoji=emoji)
    latin, cjk = font_path(THEME_FONTS["Inter"][0]), cjk_fonts()[0]
    text = "Hi 👩\u200d👩\u200d👧 🇯🇵 1\ufe0f\u20e3 1 👍🏽 \u2764\ufe0f \u2764 ✨ 🏳\ufe0f\u200d🌈 山"
    assert runs.runs(text, latin, cjk) == [
        (latin, "Hi "),
        (emoji.path, "👩\u200d👩\u200d👧"),
        (latin, " "),
        (emoji.path, "🇯🇵"),
        (latin, " "),
        (emoji.path, "1\ufe0f\u20e3"),
        (latin, " 1 "),  # a digit is text unless it is a keycap
        (emoji.path, "👍🏽"),
        (latin, " "),
        (emoji.path, "\u2764\ufe0f"),  # emoji presentation asked for
        (latin, " \u2764 "),  # text by default, and DejaVu draws it
        (emoji.path, "✨"),  # emoji by default
        (latin, " "),
        (emoji.path, "🏳\ufe0f\u200d🌈"),
        (latin, " "),
        (cjk, "山"),
    ]
    for cluster in (
        "👩\u200d👩\u200d👧",
        "🇯🇵",
        "1\ufe0f\u20e3",
        "👍🏽",
        "🏳\ufe0f\u200d🌈",
        "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
    ):
        assert len(emoji.glyphs(cluster)) == 1, cluster  # the font's one picture, not its parts
        bitmap = emoji.bitmap(emoji.glyphs(cluster)[0])
        assert bitmap is not None and bitmap.png.startswith(b"\x89PNG")
    assert len(emoji.glyphs("🎸🎸")) == 2
    # Kept whole when wrapping: a line never breaks inside a family, a flag or a skin tone.
    assert list(tokens("a 👩\u200d👩\u200d👧🇯🇵🇬🇧👍🏽b")) == ["a", " ", "👩\u200d👩\u200d👧", "🇯🇵", "🇬🇧", "👍🏽", "b"]
    assert runs.clean("Tokyo 🗼, Japan", latin, cjk) == "Tokyo 🗼, Japan"  # drawn, so kept


def test_layout_and_fonts_need_no_wand():
    code = "import sys, render.og_layout, render.og_fonts; sys.exit(any(m.startswith('wand') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_a_long_word_is_cut_with_few_measurements():
    """Each measurement is a wand call in the worker: a 600-character word must not cost hundreds (it took
    seconds, and a render past 10 s is a 500)."""
    measured: list[str] = []

    def width(text: str) -> float:
        measured.append(text)
        return 10.0 * len(text)

    lines = wrap("x" * 600, 3, width, line_width=400)
    assert lines == ["x" * 40, "x" * 40, "x" * 39 + ELLIPSIS]
    assert len(measured) < 60
