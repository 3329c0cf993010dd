"""Text shown in place of an owner's picture, the same on the page and on the card."""

from __future__ import annotations

import unicodedata


def initials(name: str) -> str:
    """The first letter of each of the first two words that have one, upper-cased; "?" when there is none.

    Letters only (Unicode category L, with any combining marks that follow): "ゆ🌸" is "ゆ", "M🚀" is "M",
    "Y—" is "Y", "🌸 Mia" is "M". The page, its favicon and the OG card all print this.
    """
    found = []
    for word in name.split():
        for index, char in enumerate(word):
            if unicodedata.category(char).startswith("L"):
                end = index + 1
                while end < len(word) and unicodedata.category(word[end]).startswith("M"):
                    end += 1
                found.append(word[index:end])
                break
        if len(found) == 2:
            break
    return "".join(found).upper() or "?"
