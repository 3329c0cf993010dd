"""Colour decisions for the page and the card: from validated hex colours (store/theme.py) to inks.

The page's text colours are ours, never the owner's: `page_inks` picks them for a theme so that every text
reaches WCAG 2 AA (4.5:1) on every surface it can sit on. A surface is a colour the background gradient
paints (both ends and between), under what the page lays over it: the accent glow at the top (up to 30 %),
the hover tint (16 % accent), the card (6 % white on dark themes, 62 % on light ones), the tint of link
buttons, the presence card and the player (5 % of the text colour), and an owner's background image at
the opacity chosen here (its worst pixel: white under light text, black under dark text). When a theme
is too close to the limit for all of that, the decoration gives way first (glows and tints at half
strength, then none), then the softer ink (#f4f4f7 / #15151a) for pure white or black, then the image's
opacity. store/theme.py refuses at import the backgrounds no ink can read on at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from common.wcag import AA_TEXT, BLACK, WHITE, along, best_extreme, ink_on, mix, rgb, worst_contrast
from store.theme import Theme

# (soft, pure) text colours of each family; the soft one when it reads.
INKS = {"light-text": ("#f4f4f7", WHITE), "dark-text": ("#15151a", BLACK)}
# The designed secondary colours, mixed toward the text colour until they read.
MUTED = {"light-text": "#a1a1b5", "dark-text": "#55556a"}
STATUS = {  # form outcomes: sent, failed, warning
    "light-text": ("#34d399", "#f87171", "#fbbf24"),
    "dark-text": ("#047857", "#b91c1c", "#92400e"),
}
GLOW, HOVER, GLOW_2 = 0.30, 0.16, 0.12  # accent over the background: top glow, hover tint, corner glow
TINT = 0.05  # text colour over surfaces: link buttons, presence card, player
CARD = {"light-text": 0.06, "dark-text": 0.62}  # white over the background under the card
DECORATION = (1.0, 0.5, 0.0)  # strengths tried for glows and tints, strongest first
BACKDROP_OPACITY = (0.35, 0.25, 0.15, 0.08)  # an owner's background image, most visible first


def luminance(colour: str) -> float:
    """Relative brightness, 0 (black) to 1 (white), with the Rec. 709 weights (the OG card's text colours)."""
    r, g, b = rgb(colour)
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def contrast_ok(colour: str, background: str) -> bool:
    """Whether `colour` reads on `background` (far enough apart in luminance)."""
    return abs(luminance(colour) - luminance(background)) > 0.25


def text_family(theme: Theme) -> str:
    """'light-text' or 'dark-text': whichever of white or black reads better on all of the background."""
    return "light-text" if best_extreme(theme.background_from, theme.background_to)[1] == WHITE else "dark-text"


@lru_cache(maxsize=4096)
def on_accent(accent: str) -> str:
    """Text and icons on accent fills (buttons, the play button, initials on the page, favicon and card)."""
    return ink_on(accent)


def surfaces(theme: Theme, family: str, ink: str, decoration: float, backdrop: float) -> tuple[str, ...]:
    """Every colour text can sit on (module docstring), for one choice of ink, decoration and image opacity."""
    worst_pixel = WHITE if family == "light-text" else BLACK
    accent = theme.accent
    found = set()
    for painted in along(theme.background_from, theme.background_to):
        for image in {0.0, backdrop}:
            page = mix(painted, worst_pixel, image)
            for glow in {0.0, GLOW * decoration, HOVER * decoration, GLOW_2 * decoration}:
                lit = mix(page, accent, glow)
                for card in (0.0, CARD[family] * (decoration if family == "light-text" else 1.0)):
                    under = mix(lit, WHITE, card)
                    for tint in {0.0, TINT * decoration}:
                        found.add(mix(under, ink, tint))
    return tuple(sorted(found))


def _readable(start: str, ink: str, on: tuple[str, ...]) -> str:
    """`start`, mixed toward `ink` in tenths until it reaches AA on every surface (at worst, the ink itself)."""
    for tenth in range(11):
        colour = mix(start, ink, tenth / 10)
        if worst_contrast(colour, on) >= AA_TEXT:
            return colour
    return ink


@dataclass(frozen=True)
class PageInks:
    """The page's colours for one theme (and whether it shows a background image), each reaching AA."""

    dark: bool  # light text on a dark background (html class, color-scheme)
    fg: str
    muted: str  # secondary text: the bio, section titles, times, labels
    on_accent: str  # text and icons on accent fills: send buttons, the open contact tab, the play button
    accent_deep: str  # the accent moved away from `on_accent`: the far end of accent fills
    accent_text: str  # the accent where it is drawn on the page itself: icons, the focus ring
    ok: str
    error: str
    warn: str
    decoration: float  # 0-1: strength of the glows and tints
    backdrop: float  # 0-1: opacity of the owner's background image (0: none, or none could read)
    worst: float  # the lowest contrast of `fg` on any surface (>= 4.5 for every theme the importer accepts)


def page_inks(theme: Theme, backdrop: bool = False) -> PageInks:
    """The inks for a theme: a search of 10-50 ms when new, so cached on what decides it (the colours, not the
    font or the angle), for every render that misses the page memo."""
    return _inks(theme.accent, theme.background_from, theme.background_to, backdrop)


@lru_cache(maxsize=8192)
def _inks(accent: str, background_from: str, background_to: str, backdrop: bool) -> PageInks:
    theme = Theme(accent, background_from, background_to, 0, "")  # the colours are all `surfaces` reads
    family = text_family(theme)
    choice = None
    for opacity in BACKDROP_OPACITY if backdrop else (0.0,):
        for decoration in DECORATION:
            for ink in INKS[family]:
                on = surfaces(theme, family, ink, decoration, opacity)
                if worst_contrast(ink, on) >= AA_TEXT:
                    choice = (opacity, decoration, ink, on)
                    break
            if choice:
                break
        if choice:
            break
    if choice is None:  # a background the importer refuses (or an image no opacity lets text read on): none
        ink = INKS[family][1]
        choice = (0.0, 0.0, ink, surfaces(theme, family, ink, 0.0, 0.0))
    opacity, decoration, ink, on = choice
    ink_on_accent = on_accent(accent)
    ok, error, warn = (_readable(colour, ink, on) for colour in STATUS[family])
    return PageInks(
        dark=family == "light-text",
        fg=ink,
        muted=_readable(MUTED[family], ink, on),
        on_accent=ink_on_accent,
        accent_deep=mix(accent, BLACK if ink_on_accent == WHITE else WHITE, 0.35),
        accent_text=_readable(accent, ink, on),
        ok=ok,
        error=error,
        warn=warn,
        decoration=decoration,
        backdrop=opacity,
        worst=worst_contrast(ink, on),
    )
