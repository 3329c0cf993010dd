"""The card drawn with wand/ImageMagick: fonts and layout decided elsewhere, pixels here.

No Tornado and no I/O besides font files: the og/ package runs
`CardRenderer.render` inside worker processes. What makes it fast (see the
OG render facts in docs/og.md):

- the theme background and the avatar circle (with its accent ring) are drawn
  once and kept per worker, keyed by their inputs;
- text widths are measured once per (font, size, word) and kept;
- PNG is written as 8-bit RGB with zlib level 1 and no palette search.

Text is drawn with `annotate` (never the `pango:` coder, which expands `%` and
`\\` escapes in owner text), one run per font (render/og_fonts.py). Colour
emoji are Noto Color Emoji's own bitmaps (render/og_emoji.py), scaled to the
text size once per worker and composited where the glyph would go.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, TypeVar

from render.og_card import HEIGHT, WIDTH, CardInput
from render.og_emoji import emoji_font
from render.og_fonts import THEME_FONTS, Charsets, FontRuns, cjk_fonts, font_path
from render.og_layout import (
    AVATAR,
    BIO_LINES,
    BIO_SIZE,
    CIRCLE,
    DOMAIN_SIZE,
    INITIALS_SIZE,
    MARGIN,
    NAME_LINES,
    NAME_SIZE,
    RING,
    STRIPE,
    centred_x,
    circle_top,
    initials_ink,
    palette,
    place_text,
    wrap,
)

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class EmojiPicture:
    """An emoji's bitmap scaled to one text size, and how far its top rises above the baseline."""

    image: Any  # a wand Image
    rise: float

    def close(self) -> None:  # when it leaves the cache
        self.image.close()


class CardRenderer:
    """One per worker process: fonts, caches of backgrounds, avatars and text widths."""

    def __init__(self, cache_entries: int = 64, width_entries: int = 20_000, charsets: Charsets | None = None):
        from wand.resource import limits

        # A hostile avatar cannot make a worker allocate gigabytes.
        limits["width"] = 8192
        limits["height"] = 8192
        limits["area"] = 64 * 1024 * 1024
        self.fonts = {theme: (font_path(bold), font_path(regular)) for theme, (bold, regular) in THEME_FONTS.items()}
        self.cjk = cjk_fonts()
        self.emoji = emoji_font()
        self.font_runs = FontRuns(charsets, self.emoji)
        # wand images (untyped, hence Any), kept per worker and closed when they leave the cache
        self._backgrounds: OrderedDict[tuple[str, str, int], Any] = OrderedDict()
        self._avatars: OrderedDict[tuple[str, ...], Any] = OrderedDict()
        self._widths: OrderedDict[tuple[str, int, str], float] = OrderedDict()
        self._emoji: OrderedDict[tuple[str, int], EmojiPicture] = OrderedDict()  # (glyph, size) -> scaled picture
        self.cache_entries = cache_entries
        self.width_entries = width_entries
        self._probe: Any = None

    # -- caches

    def _lru_get(self, cache: OrderedDict[K, Any], key: K) -> Any:
        value = cache.get(key)
        if value is not None:
            cache.move_to_end(key)
        return value

    def _lru_put(self, cache: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
        cache[key] = value
        while len(cache) > limit:
            _, old = cache.popitem(last=False)
            if hasattr(old, "close"):
                old.close()

    def runs(self, text: str, primary: str, cjk: str) -> list[tuple[str, str]]:
        return self.font_runs.runs(text, primary, cjk)

    def width(self, font: str, size: int, text: str) -> float:
        key = (font, size, text)
        cached = self._widths.get(key)
        if cached is not None:
            return cached
        if self.emoji is not None and font == self.emoji.path:
            return float(sum(picture.width for picture, _ in self.emoji_pictures(text, size)))
        from wand.drawing import Drawing
        from wand.image import Image

        if self._probe is None:
            self._probe = Image(width=1, height=1)
        with Drawing() as draw:
            draw.font = font
            draw.font_size = size
            value: float = draw.get_font_metrics(self._probe, text).text_width
        self._lru_put(self._widths, key, value, self.width_entries)
        return value

    def text_width(self, text: str, size: int, primary: str, cjk: str) -> float:
        return sum(self.width(font, size, run) for font, run in self.runs(text, primary, cjk))

    def wrap(self, text: str, size: int, max_lines: int, primary: str, cjk: str) -> list[str]:
        """`text` without undrawable characters, wrapped to the text column (render/og_layout.py)."""
        text = self.font_runs.clean(text, primary, cjk)
        return wrap(text, max_lines, lambda candidate: self.text_width(candidate, size, primary, cjk))

    def draw_line(
        self,
        draw: Any,
        line: str,
        x: float,
        baseline: float,
        size: int,
        primary: str,
        cjk: str,
        pictures: list[tuple[Any, int, int]] | None = None,
    ) -> None:
        """Text into `draw`; emoji pictures, with where they go, onto `pictures` for the caller to composite
        (straight onto the image: a picture inside the Drawing is serialised into its MVG, 2x slower)."""
        draw.font_size = size
        for font, run in self.runs(line, primary, cjk):
            if self.emoji is not None and font == self.emoji.path:
                for picture, rise in self.emoji_pictures(run, size):
                    if pictures is not None:
                        pictures.append((picture, round(x), round(baseline - rise)))
                    x += picture.width
                continue
            draw.font = font
            draw.text(round(x), round(baseline), run)
            x += self.width(font, size, run)

    def emoji_pictures(self, cluster: str, size: int) -> list[tuple[Any, float]]:
        """The pictures of an emoji cluster at a text size, each with its top's height above the baseline.
        The font's bitmaps are 136x128 at 109 px; scaled to `size` as a browser scales them."""
        assert self.emoji is not None
        pictures = []
        for glyph in self.emoji.glyphs(cluster):
            key = (glyph, size)
            found = self._lru_get(self._emoji, key)
            if found is None:
                bitmap = self.emoji.bitmap(glyph)
                if bitmap is None:
                    continue
                from wand.image import Image

                scale = size / self.emoji.ppem
                image = Image(blob=bitmap.png, format="png")
                image.resize(max(1, round(bitmap.advance * scale)), max(1, round(bitmap.height * scale)), "lanczos")
                found = EmojiPicture(image, bitmap.bearing_y * scale)
                self._lru_put(self._emoji, key, found, self.cache_entries * 4)
            pictures.append((found.image, found.rise))
        return pictures

    # -- images

    def background(self, card: CardInput) -> Any:
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

    def avatar(self, card: CardInput) -> Any:
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
        size = CIRCLE
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

    def initials_circle(self, card: CardInput) -> Any:
        key = ("initials", card.initials, card.accent, card.font)
        image = self._lru_get(self._avatars, key)
        if image is not None:
            return image
        from wand.color import Color
        from wand.drawing import Drawing
        from wand.image import Image

        size = CIRCLE
        image = Image(width=size, height=size, background=Color("transparent"))
        bold, _ = self.fonts.get(card.font, self.fonts["Inter"])
        with Drawing() as draw:
            draw.fill_color = Color(card.accent)
            draw.circle((size / 2 - 0.5, size / 2 - 0.5), (size / 2 - 0.5, 0))
            draw.fill_color = Color(initials_ink(card.accent))
            draw.text_antialias = True
            letters = card.initials or "?"
            text_size = INITIALS_SIZE
            width = self.text_width(letters, text_size, bold, self.cjk[0])
            if not self.runs(letters, bold, self.cjk[0]):
                letters, width = "?", self.text_width("?", text_size, bold, self.cjk[0])
            self.draw_line(draw, letters, centred_x(width), size / 2 + text_size * 0.36, text_size, bold, self.cjk[0])
            draw(image)
        self._lru_put(self._avatars, key, image, self.cache_entries)
        return image

    # -- the card

    def render(self, card: CardInput) -> bytes:
        from wand.color import Color
        from wand.drawing import Drawing

        bold, regular = self.fonts.get(card.font, self.fonts["Inter"])
        cjk_bold, cjk_regular = self.cjk
        ink = palette(card)
        lines = place_text(
            self.wrap(card.display_name, NAME_SIZE, NAME_LINES, bold, cjk_bold),
            self.wrap(card.bio, BIO_SIZE, BIO_LINES, regular, cjk_regular),
            self.wrap(card.domain, DOMAIN_SIZE, 1, regular, cjk_regular),
        )
        styles = {  # role -> (colour, size, font, CJK fallback)
            "name": (ink.ink, NAME_SIZE, bold, cjk_bold),
            "bio": (ink.muted, BIO_SIZE, regular, cjk_regular),
            "domain": (ink.domain, DOMAIN_SIZE, regular, cjk_regular),
        }

        avatar = self.avatar(card) or self.initials_circle(card)
        image = self.background(card).clone()
        try:
            image.composite(avatar, MARGIN, circle_top(avatar.height), operator="over")
            with Drawing() as draw:
                draw.text_antialias = True
                draw.fill_color = Color(card.accent)
                draw.rectangle(left=0, top=HEIGHT - STRIPE, right=WIDTH - 1, bottom=HEIGHT - 1)
                pictures: list[tuple[Any, int, int]] = []
                for line in lines:
                    colour, size, font, cjk = styles[line.role]
                    draw.fill_color = Color(colour)
                    self.draw_line(draw, line.text, line.x, line.baseline, size, font, cjk, pictures)
                draw(image)
            for picture, left, top in pictures:
                image.composite(picture, left, top, operator="over")
            image.alpha_channel = "off"
            image.format = "png"
            image.depth = 8
            image.options["png:color-type"] = "2"  # RGB: no palette scan, no alpha
            image.options["png:compression-level"] = "1"
            image.options["png:compression-filter"] = "1"
            image.options["png:exclude-chunks"] = "date,time"
            image.strip()
            return bytes(image.make_blob())
        finally:
            image.close()
