"""Text shown in place of an owner's picture, the same on the page and on the card."""

from __future__ import annotations


def initials(name: str) -> str:
    """The first letters of the first two words, upper-cased ("?" for a name with none)."""
    words = [w for w in name.split() if w]
    letters = "".join(w[0] for w in words[:2]) or "?"
    return letters.upper()
