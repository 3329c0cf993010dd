"""Colour emoji on the card: Noto Color Emoji's bitmaps, found by its own tables and composited as images.

ImageMagick's `annotate` cannot draw colour bitmap fonts (CBDT), so the card
takes the emoji's PNG straight from the font file (fonts-noto-color-emoji) and
composites it where the text would have put the glyph. Which code points make
one picture (ZWJ families, flags, keycaps, skin tones, tag flags) comes from the
font's ligature tables (GSUB type 4), so an emoji the font draws as one picture
is drawn as one here too; variation selectors are presentation hints the font
does not map, and are dropped before the lookup.

A character is drawn as an emoji when the font has it and it is emoji by
default (supplementary planes, and the BMP's Emoji_Presentation characters such
as ✨ and ⭐), when U+FE0F asks for emoji, or when no text font can draw it.
Reading the tables takes ~0.3 s and the bitmaps ~0.3 s more (first emoji), once
per render worker; the bitmaps scaled to a size are kept in the renderer.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

from fontTools.ttLib import TTFont, TTLibError

EMOJI_FONT_DIRS = ("/usr/share/fonts/truetype/noto",)
EMOJI_FONT = "NotoColorEmoji.ttf"

ZWJ = 0x200D
PRESENTATION_SELECTORS = (0xFE0E, 0xFE0F)
KEYCAP = 0x20E3
# The BMP characters shown as emoji by default (Unicode emoji-data.txt, Emoji_Presentation=Yes).
_BMP_PRESENTATION_RANGES = (
    (0x231A, 0x231B), (0x23E9, 0x23EC), (0x23F0, 0x23F0), (0x23F3, 0x23F3), (0x25FD, 0x25FE),
    (0x2614, 0x2615), (0x2648, 0x2653), (0x267F, 0x267F), (0x2693, 0x2693), (0x26A1, 0x26A1),
    (0x26AA, 0x26AB), (0x26BD, 0x26BE), (0x26C4, 0x26C5), (0x26CE, 0x26CE), (0x26D4, 0x26D4),
    (0x26EA, 0x26EA), (0x26F2, 0x26F3), (0x26F5, 0x26F5), (0x26FA, 0x26FA), (0x26FD, 0x26FD),
    (0x2705, 0x2705), (0x270A, 0x270B), (0x2728, 0x2728), (0x274C, 0x274C), (0x274E, 0x274E),
    (0x2753, 0x2755), (0x2757, 0x2757), (0x2795, 0x2797), (0x27B0, 0x27B0), (0x27BF, 0x27BF),
    (0x2B1B, 0x2B1C), (0x2B50, 0x2B50), (0x2B55, 0x2B55),
)  # fmt: skip
BMP_PRESENTATION = frozenset(p for low, high in _BMP_PRESENTATION_RANGES for p in range(low, high + 1))


def is_modifier(point: int) -> bool:
    """Code points that belong to the emoji before them: skin tones, tags, keycap, presentation selectors."""
    return (
        0x1F3FB <= point <= 0x1F3FF or 0xE0020 <= point <= 0xE007F or point == KEYCAP or point in PRESENTATION_SELECTORS
    )


def is_regional(point: int) -> bool:
    return 0x1F1E6 <= point <= 0x1F1FF


def emoji_font_path() -> str | None:
    """The installed Noto Color Emoji, or None (then emoji are left out of the card, as before)."""
    for directory in EMOJI_FONT_DIRS:
        path = os.path.join(directory, EMOJI_FONT)
        if os.path.isfile(path):
            return path
    return None


@dataclass(frozen=True)
class Bitmap:
    png: bytes
    height: int
    bearing_y: int  # from the baseline up to the bitmap's top
    advance: int


class EmojiFont:
    """One CBDT colour font: which text makes which picture, and each picture's PNG."""

    def __init__(self, path: str):
        self.path = path
        try:
            font = TTFont(path, lazy=True)
            cmap = font.getBestCmap() or {}
            names = {glyph: point for point, glyph in cmap.items()}
            # Every sequence the font draws as one glyph: single code points, then its ligatures.
            sequences: dict[tuple[int, ...], str] = {(point,): glyph for point, glyph in cmap.items()}
            for lookup in font["GSUB"].table.LookupList.Lookup:
                if lookup.LookupType != 4:
                    continue
                for table in lookup.SubTable:
                    for first, ligatures in table.ligatures.items():
                        for ligature in ligatures:
                            parts = [first, *ligature.Component]
                            if all(part in names for part in parts):
                                sequences.setdefault(tuple(names[part] for part in parts), ligature.LigGlyph)
            self.ppem = font["CBLC"].strikes[0].bitmapSizeTable.ppemY
            font.close()
        except (OSError, TTLibError, KeyError, AttributeError, IndexError) as exc:
            raise ValueError(f"cannot read the emoji font {path}: {exc}") from exc
        self.points = frozenset(cmap)
        self.sequences = sequences
        self.longest = max(len(key) for key in sequences)
        self._strike: dict[str, object] | None = None

    def starts(self, text: str, i: int, drawable: Callable[[int], bool]) -> bool:
        """Whether the character at i begins an emoji the card should draw as a picture."""
        point = ord(text[i])
        if point not in self.points or point <= 0x20:
            return False
        following = ord(text[i + 1]) if i + 1 < len(text) else 0
        if following == 0xFE0E:
            return False  # text presentation asked for
        if point >= 0x1F000 or point in BMP_PRESENTATION:
            return True
        if following == 0xFE0F:
            if chr(point) in "0123456789#*":  # keycaps only: a digit followed by FE0F alone stays text
                return i + 2 < len(text) and ord(text[i + 2]) == KEYCAP
            return True
        if following == KEYCAP:
            return True
        return not drawable(point)

    def cluster_length(self, text: str, i: int) -> int:
        """How many characters from i (an emoji start) make one picture, the way text editors group them."""
        j = i + 1
        if is_regional(ord(text[i])):
            return 2 if j < len(text) and is_regional(ord(text[j])) else 1
        while j < len(text):
            point = ord(text[j])
            if is_modifier(point):
                j += 1
            elif point == ZWJ and j + 1 < len(text) and ord(text[j + 1]) in self.points:
                j += 2
            else:
                break
        return j - i

    def glyphs(self, cluster: str) -> list[str]:
        """The pictures a cluster is drawn with: the longest sequences the font has, left to right."""
        points = [ord(ch) for ch in cluster if ord(ch) not in PRESENTATION_SELECTORS]
        found: list[str] = []
        i = 0
        while i < len(points):
            for length in range(min(self.longest, len(points) - i), 0, -1):
                glyph = self.sequences.get(tuple(points[i : i + length]))
                if glyph is not None:
                    found.append(glyph)
                    i += length
                    break
            else:
                i += 1  # a joiner or modifier with nothing to join: not drawn
        return found

    def bitmap(self, glyph: str) -> Bitmap | None:
        if self._strike is None:
            font = TTFont(self.path, lazy=True)
            self._strike = dict(font["CBDT"].strikeData[0])
            font.close()
        data = self._strike.get(glyph)
        if data is None:
            return None
        png = bytes(getattr(data, "imageData", b""))
        metrics = getattr(data, "metrics", None)
        if not png.startswith(b"\x89PNG") or metrics is None:
            return None
        return Bitmap(png, metrics.height, metrics.BearingY, metrics.Advance)


@functools.cache
def emoji_font() -> EmojiFont | None:
    """This process's emoji font (read once), or None when it is not installed or cannot be read."""
    path = emoji_font_path()
    if path is None:
        return None
    try:
        return EmojiFont(path)
    except ValueError:
        return None
