"""The card drawn with wand/ImageMagick: fonts and layout decided elsewhere, pixels here.

No Tornado and no I/O besides font files: the og/ package runs
`CardRenderer.render` inside worker processes. What makes it fast (see the
OG render facts in docs/og.md):

- the theme background and the avatar circle (with its accent ring) are drawn
  once and kept per worker, keyed by their inputs;
- text widths are measured once per (font, size, word) and kept;
- PNG is written as 8-bit RGB with zlib level 1 and no palette search.

What keeps a worker small whatever an avatar host serves (docs/og.md, "Hostile avatars"):
the declared size is read from the header and checked against a pixel budget before any
decode (render/image_size.py); only the first frame of an animation is read; the avatar is
scaled down before it is cropped; and ImageMagick's own resource limits (`apply_limits`) fail
any pixel cache past the memory budget instead of growing the process or spilling to disk.
The caches are sized to fit inside those limits.

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

from render.image_size import MAX_AVATAR_PIXELS, within_budget
from render.og_card import HEIGHT, WIDTH, CardInput
from render.og_emoji import emoji_font
from render.og_fonts import THEME_FONTS, FontRuns, FontTables, cjk_fonts, font_path
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

MIB = 1024 * 1024
# ImageMagick's resource limits in a render process. Pixel caches are 8 bytes a pixel (Q16 RGBA): a
# background is 6 MiB, an avatar disc 0.5 MiB, the largest avatar the budget admits 32 MiB. `memory` bounds
# them all together; `map` and `disk` are 0, so past it a cache fails ("cache resources exhausted")
# instead of being memory-mapped or written to a temporary file.
IMAGEMAGICK_LIMITS = {
    "memory": 96 * MIB,
    "map": 0,
    "disk": 0,
    "area": 16 * MIB,  # pixels
    "width": 8192,
    "height": 8192,
}
LIST_LENGTH_LIMIT = 4  # images in one sequence: an animation is read one frame at a time ([0]) anyway
_LIST_LENGTH_RESOURCE = 11  # ImageMagick 6's ListLengthResource (wand's table for IM 6 stops before it)
BACKGROUND_ENTRIES = 4  # 6 MiB each
AVATAR_ENTRIES = 32  # 0.5 MiB each
EMOJI_ENTRIES = 256  # (glyph, text size) pictures of a few KiB each


def apply_limits() -> None:
    """Set ImageMagick's resource limits for this process (call before the first image is made)."""
    import ctypes

    from wand.api import library
    from wand.resource import limits

    for name, value in IMAGEMAGICK_LIMITS.items():
        limits[name] = value
    setter = library.SetMagickResourceLimit
    setter.argtypes = [ctypes.c_int, ctypes.c_ulonglong]
    setter(_LIST_LENGTH_RESOURCE, LIST_LENGTH_LIMIT)


def read_first_frame(data: bytes, kind: str) -> Any:
    """A wand Image of the first frame only of `data` (format `kind`), or None when it will not decode.

    `buffer.gif[0]` as the read's file name makes ImageMagick stop after the first frame, so a
    200-frame animation costs one frame. JPEG gets a size hint: libjpeg then scales down while
    decoding (DCT scaling), never holding the full-size picture.
    """
    from wand.api import library
    from wand.exceptions import WandException
    from wand.image import Image

    image = Image()
    try:
        library.MagickSetFormat(image.wand, kind.encode())
        library.MagickSetFilename(image.wand, f"buffer.{kind}[0]".encode())
        if kind == "jpeg":
            library.MagickSetOption(image.wand, b"jpeg:size", f"{2 * AVATAR}x{2 * AVATAR}".encode())
        if not library.MagickReadImageBlob(image.wand, data, len(data)):
            image.raise_exception()
            raise ValueError("unreadable image")
        if len(image.sequence) < 1 or image.width < 1 or image.height < 1:
            raise ValueError("no image")
    except (WandException, ValueError, TypeError):
        image.close()
        return None
    return image


@dataclass(frozen=True)
class EmojiPicture:
    """An emoji's bitmap scaled to one text size, and how far its top rises above the baseline."""

    image: Any  # a wand Image
    rise: float

    def close(self) -> None:  # when it leaves the cache
        self.image.close()


class CardRenderer:
    """One per worker process: fonts, caches of backgrounds, avatars and text widths."""

    def __init__(
        self,
        width_entries: int = 20_000,
        fonts: FontTables | None = None,  # None: read the tables here (render/og_fonts.py)
        max_avatar_pixels: int = MAX_AVATAR_PIXELS,
    ):
        apply_limits()  # a hostile avatar cannot make a worker allocate gigabytes
        self.max_avatar_pixels = max_avatar_pixels
        self.fonts = {theme: (font_path(bold), font_path(regular)) for theme, (bold, regular) in THEME_FONTS.items()}
        self.cjk = cjk_fonts()
        self.emoji = fonts.emoji if fonts is not None else emoji_font()
        self.font_runs = FontRuns(fonts.charsets if fonts is not None else None, self.emoji)
        # wand images (untyped, hence Any), kept per worker and closed when they leave the cache
        self._backgrounds: OrderedDict[tuple[str, str, int], Any] = OrderedDict()
        self._avatars: OrderedDict[tuple[str, ...], Any] = OrderedDict()
        self._widths: OrderedDict[tuple[str, int, str], float] = OrderedDict()
        self._emoji: OrderedDict[tuple[str, int], EmojiPicture] = OrderedDict()  # (glyph, size) -> scaled picture
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
                self._lru_put(self._emoji, key, found, EMOJI_ENTRIES)
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
            self._lru_put(self._backgrounds, key, image, BACKGROUND_ENTRIES)
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
        from wand.image import Image

        if not within_budget(card.avatar, card.avatar_format, self.max_avatar_pixels):
            return None  # a decompression bomb, or a header we cannot read: initials
        photo = read_first_frame(card.avatar, card.avatar_format)
        if photo is None:
            return None
        size = CIRCLE
        with photo:
            photo.transform_colorspace("srgb")
            # Scale first (the short side to AVATAR), then crop the centre square: never a full-size copy.
            scale = AVATAR / min(photo.width, photo.height)
            photo.resize(max(AVATAR, round(photo.width * scale)), max(AVATAR, round(photo.height * scale)), "triangle")
            photo.crop(width=AVATAR, height=AVATAR, gravity="center")
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
        self._lru_put(self._avatars, key, image, AVATAR_ENTRIES)
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
        self._lru_put(self._avatars, key, image, AVATAR_ENTRIES)
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
