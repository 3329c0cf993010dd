"""Colour maths for the page and the card: from validated hex colours (store/theme.py) to ink choices."""

from __future__ import annotations

from store.theme import Theme, expand_hex


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    colour = expand_hex(colour)
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def luminance(colour: str) -> float:
    """Relative brightness, 0 (black) to 1 (white), with the Rec. 709 weights."""
    r, g, b = hex_to_rgb(colour)
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def is_dark(theme: Theme) -> bool:
    """Whether the page's background (its first stop) wants light text."""
    return luminance(theme.background_from) < 0.5


def midpoint(first: str, second: str) -> str:
    """The colour halfway between two (a gradient's average, as the card's text sees it)."""
    return "#%02x%02x%02x" % tuple((a + b) // 2 for a, b in zip(hex_to_rgb(first), hex_to_rgb(second), strict=True))


def contrast_ok(colour: str, background: str) -> bool:
    """Whether `colour` reads on `background` (far enough apart in luminance)."""
    return abs(luminance(colour) - luminance(background)) > 0.25
