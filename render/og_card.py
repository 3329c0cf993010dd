"""The Open Graph card: plain card inputs in, 1200x630 PNG bytes out (wand/ImageMagick).

Pure drawing, no Tornado and no I/O besides font files: the og/ package runs
`CardRenderer.render` inside worker processes. What makes it fast (see
shared/research/og-render-facts.md):

- the theme background and the avatar circle (with its accent ring) are drawn
  once and kept per worker, keyed by their inputs;
- text widths are measured once per (font, size, word) and kept;
- PNG is written as 8-bit RGB with zlib level 1 and no palette search.

Text is drawn with `annotate` (never the `pango:` coder, which expands `%` and
`\\` escapes in owner text). Each character is drawn with the first font
whose character map has it (DejaVu, then Noto Sans CJK); characters no font
has, such as colour emoji, are left out rather than drawn as boxes.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Iterator

WIDTH, HEIGHT = 1200, 630
RENDER_VERSION = "og-1"  # bump when the drawing changes, so cached cards and ETags change

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

ELLIPSIS = "\u2026"

FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/opentype/noto")
# Theme font -> (bold, regular) Debian font files; CJK falls back to Noto Sans CJK.
THEME_FONTS = {
    "Inter": ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf"),
    "System": ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf"),
    "Rounded": ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf"),
    "Serif": ("DejaVuSerif-Bold.ttf", "DejaVuSerif.ttf"),
    "Mono": ("DejaVuSansMono-Bold.ttf", "DejaVuSansMono.ttf"),
}
CJK_FONTS = ("NotoSansCJK-Bold.ttc", "NotoSansCJK-Regular.ttc")


class FontError(RuntimeError):
    """A font file the card needs is missing (wand would silently fall back to another font)."""


class RenderError(RuntimeError):
    """The card could not be drawn."""


@dataclass(frozen=True)
class CardInput:
    """Everything the card shows. Equal inputs give byte-identical PNGs."""

    display_name: str
    bio: str
    domain: str
    accent: str  # "#rrggbb"
    background_from: str
    background_to: str  # equal to background_from for a flat background
    gradient_angle: int
    font: str  # a store.theme font name
    initials: str
    avatar: bytes | None = None  # decoded in the worker; None or undecodable -> initials
    avatar_format: str | None = None  # "png", "jpeg", "gif" or "webp" (sniffed by the fetcher)
    avatar_sha: str = ""  # sha256 of `avatar`, computed once by whoever fetched it

    def cache_key(self) -> str:
        """Content hash of the inputs (avatar by digest): the cache key and ETag."""
        digest = hashlib.sha256(RENDER_VERSION.encode())
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "avatar":
                value = self.avatar_sha or (hashlib.sha256(value).hexdigest() if value else "")
            digest.update(b"\x00" + repr(value).encode("utf-8", "surrogatepass"))
        return digest.hexdigest()


# ---------------------------------------------------------------- fonts


def font_path(name: str) -> str:
    for directory in FONT_DIRS:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise FontError(f"font {name} not found in {', '.join(FONT_DIRS)}: install fonts-dejavu-core and fonts-noto-cjk")


def required_fonts() -> list[str]:
    names = {name for pair in THEME_FONTS.values() for name in pair} | set(CJK_FONTS)
    return sorted(font_path(name) for name in names)


def check_fonts() -> list[str]:
    """Fail loudly at start-up if a font file is missing or unreadable; returns the paths."""
    paths = required_fonts()
    for path in paths:
        _charset(path)
    return paths


def _charset(path: str) -> frozenset[int]:
    """The code points a font maps to a real glyph, read from its cmap table (first face of a .ttc)."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            points = _cmap_points(data)
    except (OSError, struct.error, ValueError) as exc:
        raise FontError(f"cannot read the character map of {path}: {exc}") from exc
    if not points:
        raise FontError(f"font {path} maps no characters")
    return frozenset(points)


def _cmap_points(data) -> set[int]:
    base = struct.unpack_from(">I", data, 12)[0] if data[:4] == b"ttcf" else 0
    num_tables = struct.unpack_from(">H", data, base + 4)[0]
    cmap = None
    for i in range(num_tables):
        tag, _, offset, _ = struct.unpack_from(">4sIII", data, base + 12 + 16 * i)
        if tag == b"cmap":
            cmap = offset
    if cmap is None:
        raise ValueError("no cmap table")
    subtables = {}
    for i in range(struct.unpack_from(">H", data, cmap + 2)[0]):
        platform, encoding, offset = struct.unpack_from(">HHI", data, cmap + 4 + 8 * i)
        subtables[(platform, encoding)] = cmap + offset
    for key in ((3, 10), (0, 4), (0, 6), (3, 1), (0, 3)):
        if key in subtables:
            at = subtables[key]
            fmt = struct.unpack_from(">H", data, at)[0]
            if fmt == 12:
                return _cmap12(data, at)
            if fmt == 4:
                return _cmap4(data, at)
    raise ValueError("no Unicode cmap subtable in format 4 or 12")


def _cmap12(data: bytes, at: int) -> set[int]:
    points: set[int] = set()
    groups = struct.unpack_from(">I", data, at + 12)[0]
    for i in range(groups):
        start, end, _ = struct.unpack_from(">III", data, at + 16 + 12 * i)
        points.update(range(start, end + 1))
    return points


def _cmap4(data: bytes, at: int) -> set[int]:
    segments = struct.unpack_from(">H", data, at + 6)[0] // 2
    ends = struct.unpack_from(f">{segments}H", data, at + 14)
    starts = struct.unpack_from(f">{segments}H", data, at + 16 + 2 * segments)
    deltas = struct.unpack_from(f">{segments}h", data, at + 16 + 4 * segments)
    range_at = at + 16 + 6 * segments
    offsets = struct.unpack_from(f">{segments}H", data, range_at)
    points: set[int] = set()
    for i in range(segments):
        for code in range(starts[i], ends[i] + 1):
            if code == 0xFFFF:
                continue
            if offsets[i] == 0:
                glyph = (code + deltas[i]) & 0xFFFF
            else:
                glyph = struct.unpack_from(">H", data, range_at + 2 * i + offsets[i] + 2 * (code - starts[i]))[0]
                glyph = (glyph + deltas[i]) & 0xFFFF if glyph else 0
            if glyph:
                points.add(code)
    return points


# Characters that only shape their neighbours (joiners, variation selectors): dropped.
def _invisible(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cf", "Mn", "Me") and ch not in "\u00ad"


# ---------------------------------------------------------------- text layout


def _tokens(text: str) -> Iterator[str]:
    """Words and single spaces; CJK characters are their own words (they break anywhere)."""
    word = ""
    for ch in text:
        if ch.isspace():
            if word:
                yield word
                word = ""
            yield " "
        elif unicodedata.east_asian_width(ch) in ("W", "F"):
            if word:
                yield word
                word = ""
            yield ch
        else:
            word += ch
    if word:
        yield word


class CardRenderer:
    """One per worker process: fonts, caches of backgrounds, avatars and text widths."""

    def __init__(self, cache_entries: int = 64, width_entries: int = 20_000):
        from wand.resource import limits

        # A hostile avatar cannot make a worker allocate gigabytes.
        limits["width"] = 8192
        limits["height"] = 8192
        limits["area"] = 64 * 1024 * 1024
        self.fonts = {theme: (font_path(bold), font_path(regular)) for theme, (bold, regular) in THEME_FONTS.items()}
        self.cjk = (font_path(CJK_FONTS[0]), font_path(CJK_FONTS[1]))
        self._charsets: dict[str, frozenset[int]] = {}
        self._backgrounds: OrderedDict[tuple, object] = OrderedDict()
        self._avatars: OrderedDict[tuple, object] = OrderedDict()
        self._widths: OrderedDict[tuple, float] = OrderedDict()
        self.cache_entries = cache_entries
        self.width_entries = width_entries
        self._probe = None

    # -- caches

    def _lru_get(self, cache: OrderedDict, key):
        value = cache.get(key)
        if value is not None:
            cache.move_to_end(key)
        return value

    def _lru_put(self, cache: OrderedDict, key, value, limit: int) -> None:
        cache[key] = value
        while len(cache) > limit:
            _, old = cache.popitem(last=False)
            if hasattr(old, "close"):
                old.close()

    def charset(self, path: str) -> frozenset[int]:
        if path not in self._charsets:
            self._charsets[path] = _charset(path)
        return self._charsets[path]

    # -- text

    def runs(self, text: str, primary: str, cjk: str) -> list[tuple[str, str]]:
        """Split text into (font path, text) runs; characters no font has are dropped."""
        out: list[tuple[str, str]] = []
        primary_map, cjk_map = self.charset(primary), self.charset(cjk)
        for ch in text:
            if _invisible(ch):
                continue
            point = ord(ch)
            font = primary if point in primary_map else cjk if point in cjk_map else None
            if font is None:
                continue
            if out and out[-1][0] == font:
                out[-1] = (font, out[-1][1] + ch)
            else:
                out.append((font, ch))
        return out

    def clean(self, text: str, primary: str, cjk: str) -> str:
        """Drop characters no font can draw, then collapse whitespace (newlines included)."""
        kept = "".join(run for _, run in self.runs(" ".join(text.split()), primary, cjk))
        return " ".join(kept.split())

    def width(self, font: str, size: int, text: str) -> float:
        key = (font, size, text)
        cached = self._widths.get(key)
        if cached is not None:
            return cached
        from wand.drawing import Drawing
        from wand.image import Image

        if self._probe is None:
            self._probe = Image(width=1, height=1)
        with Drawing() as draw:
            draw.font = font
            draw.font_size = size
            value = draw.get_font_metrics(self._probe, text).text_width
        self._lru_put(self._widths, key, value, self.width_entries)
        return value

    def text_width(self, text: str, size: int, primary: str, cjk: str) -> float:
        return sum(self.width(font, size, run) for font, run in self.runs(text, primary, cjk))

    def wrap(self, text: str, size: int, max_lines: int, primary: str, cjk: str) -> list[str]:
        """Greedy word wrap into at most max_lines lines of TEXT_WIDTH; the last ends in … if cut."""
        text = self.clean(text, primary, cjk)
        if not text:
            return []
        lines: list[str] = []
        line = ""
        tokens = list(_tokens(text))
        i = 0
        while i < len(tokens):
            token = tokens[i]
            candidate = (line + token) if line else token.lstrip()
            if not candidate:
                i += 1
                continue
            if self.text_width(candidate.rstrip(), size, primary, cjk) <= TEXT_WIDTH:
                line = candidate
                i += 1
                continue
            if not line:  # one word wider than the line: cut it by characters
                cut = token
                while cut and self.text_width(cut, size, primary, cjk) > TEXT_WIDTH:
                    cut = cut[:-1]
                cut = cut or token[:1]
                line = cut
                tokens[i] = token[len(cut) :]
                if not tokens[i]:
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
        while last and self.text_width(last + ELLIPSIS, size, primary, cjk) > TEXT_WIDTH:
            last = last[:-1]
        lines[-1] = last.rstrip() + ELLIPSIS
        return lines

    def draw_line(self, draw, line: str, x: float, baseline: float, size: int, primary: str, cjk: str) -> None:
        draw.font_size = size
        for font, run in self.runs(line, primary, cjk):
            draw.font = font
            draw.text(int(round(x)), int(round(baseline)), run)
            x += self.width(font, size, run)

    # -- images

    def background(self, card: CardInput):
        key = (card.background_from, card.background_to, card.gradient_angle)
        image = self._lru_get(self._backgrounds, key)
        if image is None:
            from wand.color import Color
            from wand.image import Image

            if card.background_from == card.background_to:
                image = Image(width=WIDTH, height=HEIGHT, background=Color(card.background_from))
            else:
                image = Image()
                # CSS angles: 180deg runs top to bottom, as ImageMagick's gradient:angle does.
                image.options["gradient:angle"] = str(card.gradient_angle % 360)
                image.pseudo(WIDTH, HEIGHT, f"gradient:{card.background_from}-{card.background_to}")
            image.alpha_channel = "off"
            image.depth = 8
            self._lru_put(self._backgrounds, key, image, self.cache_entries)
        return image

    def avatar(self, card: CardInput):
        """The avatar circle with its accent ring, or None when there is no decodable avatar."""
        if not card.avatar or card.avatar_format not in ("png", "jpeg", "gif", "webp"):
            return None
        key = (card.avatar_sha or hashlib.sha256(card.avatar).hexdigest(), card.accent)
        image = self._lru_get(self._avatars, key)
        if image is not None:
            return image
        from wand.color import Color
        from wand.drawing import Drawing
        from wand.exceptions import WandException
        from wand.image import Image

        try:
            with Image(blob=card.avatar, format=card.avatar_format) as source:
                photo = source.sequence[0].clone() if len(source.sequence) > 1 else source.clone()
        except (WandException, ValueError, TypeError):
            return None
        size = AVATAR + 2 * RING
        with photo:
            if photo.width < 1 or photo.height < 1:
                return None
            photo.transform_colorspace("srgb")
            side = min(photo.width, photo.height)
            photo.crop(width=side, height=side, gravity="center")
            photo.resize(AVATAR, AVATAR, filter="triangle")
            photo.alpha_channel = "set"
            with Image(width=AVATAR, height=AVATAR, background=Color("transparent")) as mask:
                with Drawing() as draw:
                    draw.fill_color = Color("white")
                    draw.circle((AVATAR / 2 - 0.5, AVATAR / 2 - 0.5), (AVATAR / 2 - 0.5, 0))
                    draw(mask)
                photo.composite(mask, 0, 0, operator="dst_in")
            image = Image(width=size, height=size, background=Color("transparent"))
            with Drawing() as draw:
                draw.fill_color = Color(card.accent)
                draw.circle((size / 2 - 0.5, size / 2 - 0.5), (size / 2 - 0.5, 0))
                draw(image)
            image.composite(photo, RING, RING, operator="over")
        self._lru_put(self._avatars, key, image, self.cache_entries)
        return image

    def initials_circle(self, card: CardInput):
        key = ("initials", card.initials, card.accent, card.font)
        image = self._lru_get(self._avatars, key)
        if image is not None:
            return image
        from wand.color import Color
        from wand.drawing import Drawing
        from wand.image import Image
        from store.theme import luminance

        size = AVATAR + 2 * RING
        image = Image(width=size, height=size, background=Color("transparent"))
        bold, _ = self.fonts.get(card.font, self.fonts["Inter"])
        ink = "#111111" if luminance(card.accent) > 0.6 else "#ffffff"
        with Drawing() as draw:
            draw.fill_color = Color(card.accent)
            draw.circle((size / 2 - 0.5, size / 2 - 0.5), (size / 2 - 0.5, 0))
            draw.fill_color = Color(ink)
            draw.text_antialias = True
            letters = card.initials or "?"
            text_size = 104
            width = self.text_width(letters, text_size, bold, self.cjk[0])
            if not self.runs(letters, bold, self.cjk[0]):
                letters, width = "?", self.text_width("?", text_size, bold, self.cjk[0])
            self.draw_line(draw, letters, (size - width) / 2, size / 2 + text_size * 0.36, text_size, bold, self.cjk[0])
            draw(image)
        self._lru_put(self._avatars, key, image, self.cache_entries)
        return image

    # -- the card

    def render(self, card: CardInput) -> bytes:
        from wand.color import Color
        from wand.drawing import Drawing
        from store.theme import hex_to_rgb, luminance

        bold, regular = self.fonts.get(card.font, self.fonts["Inter"])
        cjk_bold, cjk_regular = self.cjk
        mid = "#%02x%02x%02x" % tuple(
            (a + b) // 2 for a, b in zip(hex_to_rgb(card.background_from), hex_to_rgb(card.background_to))
        )
        dark = luminance(mid) < 0.5
        ink, muted = ("#ffffff", "#c9c9d6") if dark else ("#111118", "#3c3c48")

        name_lines = self.wrap(card.display_name, NAME_SIZE, NAME_LINES, bold, cjk_bold)
        bio_lines = self.wrap(card.bio, BIO_SIZE, BIO_LINES, regular, cjk_regular)
        domain = self.wrap(card.domain, DOMAIN_SIZE, 1, regular, cjk_regular)

        # Vertically centre the text block on the avatar.
        block = (
            len(name_lines) * NAME_LEADING
            + (16 + len(bio_lines) * BIO_LEADING if bio_lines else 0)
            + (24 + 40 if domain else 0)
        )
        top = max(40, (HEIGHT - STRIPE - block) // 2)

        avatar = self.avatar(card) or self.initials_circle(card)
        image = self.background(card).clone()
        try:
            circle_top = (HEIGHT - STRIPE - avatar.height) // 2
            image.composite(avatar, MARGIN, circle_top, operator="over")
            with Drawing() as draw:
                draw.text_antialias = True
                draw.fill_color = Color(card.accent)
                draw.rectangle(left=0, top=HEIGHT - STRIPE, right=WIDTH - 1, bottom=HEIGHT - 1)
                y = top
                draw.fill_color = Color(ink)
                for line in name_lines:
                    y += NAME_LEADING
                    self.draw_line(draw, line, TEXT_LEFT, y - 18, NAME_SIZE, bold, cjk_bold)
                if bio_lines:
                    y += 16
                    draw.fill_color = Color(muted)
                    for line in bio_lines:
                        y += BIO_LEADING
                        self.draw_line(draw, line, TEXT_LEFT, y - 10, BIO_SIZE, regular, cjk_regular)
                if domain:
                    y += 24 + 40
                    draw.fill_color = Color(card.accent if _contrast_ok(card.accent, mid) else ink)
                    self.draw_line(draw, domain[0], TEXT_LEFT, y - 8, DOMAIN_SIZE, regular, cjk_regular)
                draw(image)
            image.alpha_channel = "off"
            image.format = "png"
            image.depth = 8
            image.options["png:color-type"] = "2"  # RGB: no palette scan, no alpha
            image.options["png:compression-level"] = "1"
            image.options["png:compression-filter"] = "1"
            image.options["png:exclude-chunks"] = "date,time"
            image.strip()
            return image.make_blob()
        finally:
            image.close()


def _contrast_ok(colour: str, background: str) -> bool:
    from store.theme import luminance

    return abs(luminance(colour) - luminance(background)) > 0.25
