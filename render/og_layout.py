"""Where the card's text goes: pure layout, no wand and no fonts (widths come from a function passed in).

`wrap` breaks cleaned text into at most N lines of the text column, ending a cut
one with an ellipsis; `place_text` stacks the name, bio and domain lines and
centres the block on the avatar; `palette` picks the ink that reads on the
background. render/og_draw.py measures with wand and draws what these decide.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from common.wcag import mix
from render.colour import contrast_ok, luminance, on_accent
from render.og_card import HEIGHT, WIDTH, CardInput
from render.og_emoji import ZWJ, is_modifier, is_regional

# Layout (pixels).
MARGIN = 80
AVATAR = 240
RING = 8
TEXT_LEFT = MARGIN + AVATAR + 2 * RING + 56
TEXT_RIGHT = WIDTH - MARGIN
TEXT_WIDTH = TEXT_RIGHT - TEXT_LEFT
NAME_SIZE, NAME_LINES, NAME_LEADING = 68, 2, 80
BIO_SIZE, BIO_LINES, BIO_LEADING = 32, 3, 44
DOMAIN_SIZE = 28
STRIPE = 12  # accent band along the bottom edge
INITIALS_SIZE = 104
CIRCLE = AVATAR + 2 * RING  # the avatar (or initials) disc with its accent ring

ELLIPSIS = "\u2026"

Measure = Callable[[str], float]  # the drawn width of a text, in one font and size


def tokens(text: str) -> Iterator[str]:
    """Words and single spaces; CJK characters and emoji are their own words (they break anywhere), an emoji
    whole with what belongs to it (skin tone, selectors, keycap, tags, ZWJ partners, a flag's pair)."""
    word = ""
    wide = False  # `word` is one wide character or emoji cluster: the next character starts a new word
    regional = False  # the last character is an unpaired regional indicator (half a flag)
    for ch in text:
        point = ord(ch)
        if word and (is_modifier(point) or ord(word[-1]) == ZWJ or point == ZWJ or (regional and is_regional(point))):
            word += ch  # part of the emoji before it
            regional = False
            wide = wide or unicodedata.east_asian_width(ch) in ("W", "F")
            continue
        regional = is_regional(point)
        if ch.isspace():
            if word:
                yield word
                word = ""
            yield " "
        elif unicodedata.east_asian_width(ch) in ("W", "F") or regional:
            if word:
                yield word
            word, wide = ch, True
            continue
        else:
            if wide:
                yield word
                word = ""
            word += ch
        wide = False
    if word:
        yield word


def wrap(text: str, max_lines: int, width: Measure, line_width: float = TEXT_WIDTH) -> list[str]:
    """Greedy word wrap of cleaned `text` into at most max_lines lines; the last ends in … if cut."""
    if not text:
        return []
    lines: list[str] = []
    line = ""
    parts = list(tokens(text))
    i = 0
    while i < len(parts):
        token = parts[i]
        candidate = (line + token) if line else token.lstrip()
        if not candidate:
            i += 1
            continue
        if width(candidate.rstrip()) <= line_width:
            line = candidate
            i += 1
            continue
        if not line:  # one word wider than the line: cut it by characters
            cut = token[: _longest_fitting(len(token), _prefix_fits(token, width, line_width))]
            cut = cut or token[:1]
            line = cut
            parts[i] = token[len(cut) :]
            if not parts[i]:
                i += 1
        lines.append(line.rstrip())
        line = ""
        if len(lines) == max_lines:
            break
    else:
        if line.strip():
            lines.append(line.rstrip())
        return lines[:max_lines]
    # Text remains: end the last line with an ellipsis that fits.
    last = lines[-1]
    last = last[: _longest_fitting(len(last), lambda n: width(last[:n] + ELLIPSIS) <= line_width)]
    lines[-1] = last.rstrip() + ELLIPSIS
    return lines


def _prefix_fits(text: str, width: Measure, line_width: float) -> Callable[[int], bool]:
    return lambda n: width(text[:n]) <= line_width


def _longest_fitting(length: int, fits: Callable[[int], bool]) -> int:
    """The largest n <= length with fits(n) (0 if none), by bisection: widths grow with the text, and each
    measurement of a new string costs a wand call, so a 600-character word takes ~10 of them, not ~560."""
    low, high = 0, length  # fits(low) is taken as true; the answer is in [low, high]
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


@dataclass(frozen=True)
class Line:
    text: str
    x: int
    baseline: int
    role: str  # "name", "bio" or "domain": which font, size and ink it is drawn in


def place_text(name: list[str], bio: list[str], domain: list[str]) -> list[Line]:
    """The lines at their positions: the block (name, bio, domain) centred vertically on the avatar."""
    block = len(name) * NAME_LEADING + (16 + len(bio) * BIO_LEADING if bio else 0) + (24 + 40 if domain else 0)
    y = max(40, (HEIGHT - STRIPE - block) // 2)
    placed = []
    for text in name:
        y += NAME_LEADING
        placed.append(Line(text, TEXT_LEFT, y - 18, "name"))
    if bio:
        y += 16
        for text in bio:
            y += BIO_LEADING
            placed.append(Line(text, TEXT_LEFT, y - 10, "bio"))
    if domain:
        y += 24 + 40
        placed.append(Line(domain[0], TEXT_LEFT, y - 8, "domain"))
    return placed


def circle_top(size: int = CIRCLE) -> int:
    """The top of the avatar disc, centred above the accent stripe."""
    return (HEIGHT - STRIPE - size) // 2


@dataclass(frozen=True)
class Palette:
    ink: str  # the name
    muted: str  # the bio
    domain: str  # the accent when it reads on the background, else the ink


def palette(card: CardInput) -> Palette:
    """Light ink on a dark background (the gradient's midpoint decides), dark ink on a light one."""
    mid = mix(card.background_from, card.background_to, 0.5)
    ink, muted = ("#ffffff", "#c9c9d6") if luminance(mid) < 0.5 else ("#111118", "#3c3c48")
    return Palette(ink, muted, card.accent if contrast_ok(card.accent, mid) else ink)


def initials_ink(accent: str) -> str:
    """The initials' colour on the accent disc: the page's and the favicon's (WCAG AA, white or black)."""
    return on_accent(accent)


def centred_x(width: float, size: int = CIRCLE) -> float:
    """Where a text of `width` starts to sit centred on a disc of `size`."""
    return (size - width) / 2
