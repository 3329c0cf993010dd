"""The card's fonts: which files draw which theme, and which characters each file has.

Each character is drawn with the first font whose character map has it (DejaVu,
then a CJK font); characters no font has, such as colour emoji, are left out
rather than drawn as boxes. Character maps come from fontTools
(`TTFont.getBestCmap`); reading Noto CJK's takes most of a second, and the
emoji font's tables ~0.3 s, so `serve` reads them once (`font_tables`), before
it forks its workers, and every worker hands them to its render processes
instead of letting each read them again.
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from fontTools.ttLib import TTFont, TTLibError

from render.og_emoji import EmojiFont, emoji_font

FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/opentype/noto", "/usr/share/fonts/truetype/wqy")
# Theme font -> (bold, regular) Debian font files; CJK falls back to the first of CJK_CANDIDATES installed.
THEME_FONTS = {
    "Inter": ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf"),
    "System": ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf"),
    "Rounded": ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf"),
    "Serif": ("DejaVuSerif-Bold.ttf", "DejaVuSerif.ttf"),
    "Mono": ("DejaVuSansMono-Bold.ttf", "DejaVuSansMono.ttf"),
}
# (bold, regular), best first: Noto Sans CJK (fonts-noto-cjk, 90 MB) where installed, else WenQuanYi Micro Hei
# (fonts-wqy-microhei, 5 MB, one weight; Han, kana and Hangul), which the container image ships instead.
CJK_CANDIDATES = (
    ("NotoSansCJK-Bold.ttc", "NotoSansCJK-Regular.ttc"),
    ("wqy-microhei.ttc", "wqy-microhei.ttc"),
)

Charsets = Mapping[str, frozenset[int]]  # font path -> the code points it draws


class FontError(RuntimeError):
    """A font file the card needs is missing (wand would silently fall back to another font)."""


def font_path(name: str) -> str:
    for directory in FONT_DIRS:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise FontError(
        f"font {name} not found in {', '.join(FONT_DIRS)}: install fonts-dejavu-core and fonts-noto-cjk "
        "(or fonts-wqy-microhei for CJK)"
    )


def cjk_fonts() -> tuple[str, str]:
    """Paths of the (bold, regular) CJK fallback: the first candidate whose files are both installed."""
    for bold, regular in CJK_CANDIDATES:
        try:
            return font_path(bold), font_path(regular)
        except FontError:
            continue
    return font_path(CJK_CANDIDATES[0][0]), font_path(CJK_CANDIDATES[0][1])  # raises, naming the packages


def required_fonts() -> list[str]:
    names = {name for pair in THEME_FONTS.values() for name in pair}
    return sorted({font_path(name) for name in names} | set(cjk_fonts()))


@functools.cache
def charset(path: str) -> frozenset[int]:
    """The code points a font maps to a real glyph (the first face of a .ttc collection)."""
    try:
        font = TTFont(path, fontNumber=0, lazy=True)
        try:
            # Glyph names are not needed, and reading the real ones parses all of CFF: number them instead.
            count = font["maxp"].numGlyphs
            font.setGlyphOrder([".notdef", *(f"g{index}" for index in range(1, count))])
            cmap = font.getBestCmap()
        finally:
            font.close()
    except (OSError, TTLibError, KeyError, AssertionError) as exc:
        raise FontError(f"cannot read the character map of {path}: {exc}") from exc
    points = frozenset(code for code, glyph in (cmap or {}).items() if glyph != ".notdef")
    if not points:
        raise FontError(f"font {path} maps no characters")
    return points


def font_charsets() -> dict[str, frozenset[int]]:
    """Every font the card uses, with its character map; FontError if one is missing or unreadable."""
    return {path: charset(path) for path in required_fonts()}


@dataclass(frozen=True)
class FontTables:
    """What a render process needs from the font files: every card font's character map, and the emoji font's
    tables (None when fonts-noto-color-emoji is not installed). Read once, pickled to each render process."""

    charsets: Charsets
    emoji: EmojiFont | None


def font_tables() -> FontTables:
    """Read every font the card uses (FontError if one is missing or unreadable)."""
    return FontTables(font_charsets(), emoji_font())


def _invisible(ch: str) -> bool:
    """Characters that only shape their neighbours (joiners, variation selectors): dropped."""
    return unicodedata.category(ch) in ("Cf", "Mn", "Me") and ch not in "\u00ad"


class FontRuns:
    """Splits text into runs of one font each, from the fonts' character maps; emoji (render/og_emoji.py)
    are runs of their own, one picture each, in the emoji font's path."""

    def __init__(self, charsets: Charsets | None = None, emoji: EmojiFont | None = None):
        self._charsets: dict[str, frozenset[int]] = dict(charsets or {})
        self.emoji = emoji

    def charset(self, path: str) -> frozenset[int]:
        found = self._charsets.get(path)
        if found is None:
            found = self._charsets[path] = charset(path)
        return found

    def runs(self, text: str, primary: str, cjk: str) -> list[tuple[str, str]]:
        """Split text into (font path, text) runs; characters no font has are dropped."""
        return [run for run in self._runs(text, primary, cjk) if run[0]]

    def _runs(self, text: str, primary: str, cjk: str) -> list[tuple[str, str]]:
        """As `runs`, with ("", character) where a visible character was dropped."""
        out: list[tuple[str, str]] = []
        primary_map, cjk_map = self.charset(primary), self.charset(cjk)
        emoji = self.emoji

        def drawable(point: int) -> bool:
            return point in primary_map or point in cjk_map

        i = 0
        while i < len(text):
            if emoji is not None and emoji.starts(text, i, drawable):
                length = emoji.cluster_length(text, i)
                out.append((emoji.path, text[i : i + length]))  # one picture per run
                i += length
                continue
            ch = text[i]
            i += 1
            if _invisible(ch):
                continue
            point = ord(ch)
            font = primary if point in primary_map else cjk if point in cjk_map else ""
            if font and out and out[-1][0] == font:
                out[-1] = (font, out[-1][1] + ch)
            else:
                out.append((font, ch))
        return out

    def clean(self, text: str, primary: str, cjk: str) -> str:
        """Drop characters no font can draw, then collapse whitespace (newlines included). Where a dropped
        character stood before punctuation or after an opening bracket, the space it leaves goes too:
        "Tokyo 🗼, Japan" without its tower reads "Tokyo, Japan", not "Tokyo , Japan"."""
        marked = "".join(run if font else DROPPED for font, run in self._runs(" ".join(text.split()), primary, cjk))
        marked = _BEFORE_PUNCTUATION.sub("", marked)
        marked = _AFTER_OPENING.sub("", marked)
        return " ".join(marked.replace(DROPPED, "").split())


DROPPED = "\x00"  # where clean() dropped a character (text never holds NUL: store/safety.py removes controls)
_BEFORE_PUNCTUATION = re.compile(r"\s*\x00[\s\x00]*(?=[,.;:!?\u2026)\]}\u00bb\u201d\u2019%]|\Z)")
_AFTER_OPENING = re.compile(r"(?<=[(\[{\u00ab\u201c\u2018])[\s\x00]*\x00\s*")
