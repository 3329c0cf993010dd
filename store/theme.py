"""Theme values an owner may choose, validated so none can carry CSS or markup.

The page writes these into a <style> block, so only values matching these
closed forms are ever accepted: hex colours, a two-stop gradient with an angle,
and fonts from a fixed list mapped to font stacks we write ourselves.

Readability (WCAG 2 AA): the page's text colours are ours, picked at render
(render/colour.py) to reach 4.5:1 on whatever the owner chose. The one choice
no text colour can fix is a background that is light in one place and dark in
another: a gradient is refused when neither white nor black text reaches 4.5:1
on every colour it paints (both ends and between). A flat colour always passes
(every colour has 4.58:1 or more with white or with black), and so does any
accent: button labels on it are white or black, whichever reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from common.wcag import AA_TEXT, BLACK, WHITE, best_extreme

HEX_COLOUR = re.compile(r"\A#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})\Z")

# Font name (as owners pick it) -> CSS font stack (written by us, never by owners).
FONT_STACKS: dict[str, str] = {
    "Inter": "Inter, 'Segoe UI', system-ui, -apple-system, Roboto, sans-serif",
    "System": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    "Serif": "Georgia, 'Times New Roman', serif",
    "Mono": "'JetBrains Mono', ui-monospace, 'SFMono-Regular', Menlo, Consolas, monospace",
    "Rounded": "ui-rounded, 'SF Pro Rounded', 'Nunito', system-ui, sans-serif",
}

TEMPLATES = ("classic", "minimal", "spotlight")

DEFAULT_ACCENT = "#7c3aed"
DEFAULT_BACKGROUND = "#0b0b10"


@dataclass(frozen=True)
class Theme:
    accent: str
    background_from: str
    background_to: str  # same as background_from for a flat colour
    gradient_angle: int
    font: str

    @property
    def font_stack(self) -> str:
        return FONT_STACKS[self.font]

    @property
    def background_css(self) -> str:
        if self.background_from == self.background_to:
            return self.background_from
        return f"linear-gradient({self.gradient_angle}deg, {self.background_from}, {self.background_to})"


def expand_hex(colour: str) -> str:
    """#abc -> #aabbcc, lower-cased: the one spelling stored themes are read back in."""
    colour = colour.lower()
    if len(colour) == 4:
        return "#" + "".join(ch * 2 for ch in colour[1:])
    return colour


TEXT_EXTREMES = {WHITE: "white", BLACK: "black"}


def unreadable_gradient(start: str, end: str) -> str | None:
    """Why no text colour can read on a gradient from `start` to `end` (None when one can)."""
    ratio, ink = best_extreme(expand_hex(start), expand_hex(end))
    if ratio >= AA_TEXT:
        return None
    return (
        f"theme.background is too light in one place and too dark in another for any text colour to read on "
        f"all of it (best: {TEXT_EXTREMES[ink]} text at {ratio:.2f}:1, WCAG AA needs {AA_TEXT}:1); "
        "choose from and to closer in lightness"
    )


def theme_errors(theme: object) -> list[str]:
    """Why a stored/imported theme object is invalid (empty list when it is fine)."""
    if not isinstance(theme, dict):
        return ["theme must be an object"]
    errors = []
    unknown = set(theme) - {"accent", "background", "font"}
    if unknown:
        errors.append(f"theme has unknown fields: {', '.join(ascii(key) for key in sorted(unknown))}")
    accent = theme.get("accent", DEFAULT_ACCENT)
    if not (isinstance(accent, str) and HEX_COLOUR.fullmatch(accent)):
        errors.append("theme.accent must be a hex colour like #7c3aed")
    background = theme.get("background", DEFAULT_BACKGROUND)
    if isinstance(background, dict):
        if set(background) - {"from", "to", "angle"}:
            errors.append("theme.background gradient takes only from, to and angle")
        for end in ("from", "to"):
            value = background.get(end)
            if not (isinstance(value, str) and HEX_COLOUR.fullmatch(value)):
                errors.append(f"theme.background.{end} must be a hex colour")
        angle = background.get("angle", 135)
        if not (isinstance(angle, int) and not isinstance(angle, bool) and 0 <= angle <= 360):
            errors.append("theme.background.angle must be a whole number of degrees 0-360")
        if not errors:
            unreadable = unreadable_gradient(background["from"], background["to"])
            if unreadable:
                errors.append(unreadable)
    elif not (isinstance(background, str) and HEX_COLOUR.fullmatch(background)):
        errors.append('theme.background must be a hex colour or {"from": "#..", "to": "#..", "angle": 135}')
    font = theme.get("font", "Inter")
    if not isinstance(font, str) or font not in FONT_STACKS:
        errors.append(f"theme.font must be one of {', '.join(FONT_STACKS)}")
    return errors


def parse_theme(theme: object) -> Theme:
    """A Theme from a stored object; anything invalid falls back to the defaults."""
    if theme_errors(theme):
        theme = {}
    assert isinstance(theme, dict)
    background = theme.get("background", DEFAULT_BACKGROUND)
    if isinstance(background, dict):
        start, end, angle = background["from"], background["to"], background.get("angle", 135)
    else:
        start = end = background
        angle = 135
    return Theme(
        accent=expand_hex(theme.get("accent", DEFAULT_ACCENT)),
        background_from=expand_hex(start),
        background_to=expand_hex(end),
        gradient_angle=angle,
        font=theme.get("font", "Inter"),
    )
