"""WCAG 2 contrast of sRGB colours: relative luminance, contrast ratio, and the colours between two.

Pure maths on "#rrggbb" strings (already validated), shared by theme validation (store/theme.py refuses a
background no text colour can read on) and rendering (render/colour.py picks the page's inks).
https://www.w3.org/TR/WCAG22/#dfn-relative-luminance
"""

from __future__ import annotations

from functools import lru_cache

AA_TEXT = 4.5  # WCAG 2 AA, normal text (1.4.3)

RGB = tuple[int, int, int]


def rgb(colour: str) -> RGB:
    """'#rrggbb' or '#rgb' -> (r, g, b), 0-255."""
    digits = colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(ch * 2 for ch in digits)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def hex_colour(value: RGB) -> str:
    return "#%02x%02x%02x" % value


def _linear(channel: int) -> float:
    c = channel / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


@lru_cache(maxsize=4096)
def relative_luminance(colour: str) -> float:
    r, g, b = rgb(colour)
    return 0.2126 * _linear(r) + 0.7152 * _linear(g) + 0.0722 * _linear(b)


def contrast(first: str, second: str) -> float:
    """The WCAG contrast ratio, 1 (same luminance) to 21 (black on white)."""
    a, b = relative_luminance(first), relative_luminance(second)
    return (max(a, b) + 0.05) / (min(a, b) + 0.05)


def mix(first: str, second: str, amount: float) -> str:
    """`amount` of `second` over `first`, as CSS `color-mix(in srgb, first, second amount)` paints it (and as
    a layer of `second` at opacity `amount` composites over `first`)."""
    a, b = rgb(first), rgb(second)
    return hex_colour(tuple(round(x + (y - x) * amount) for x, y in zip(a, b, strict=True)))  # type: ignore[arg-type]


def along(first: str, second: str, steps: int = 8) -> tuple[str, ...]:
    """The colours a linear gradient from `first` to `second` paints, both ends included (steps + 1 of them):
    luminance need not be monotonic between two colours, so the ends alone are not enough."""
    if first == second:
        return (first,)
    return tuple(mix(first, second, i / steps) for i in range(steps + 1))


def worst_contrast(ink: str, backgrounds: tuple[str, ...] | list[str]) -> float:
    return min(contrast(ink, background) for background in backgrounds)


WHITE, BLACK = "#ffffff", "#000000"


def best_extreme(first: str, second: str) -> tuple[float, str]:
    """White or black, whichever reads better on all of a gradient from `first` to `second`, and its worst
    contrast there (the page's text family, and the importer's "can anything read on this" check)."""
    painted = along(first, second)
    return max((worst_contrast(WHITE, painted), WHITE), (worst_contrast(BLACK, painted), BLACK))


def ink_on(fill: str) -> str:
    """White on a fill where white reaches AA, else black: text and icons on accent fills."""
    return WHITE if contrast(WHITE, fill) >= AA_TEXT else BLACK
