"""Text the page and the card derive: initials in place of a picture, counts as bio sites show them."""

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


def compact_count(count: int) -> str:
    """A count as a visitor reads it: 9,876 in full, then 12.3K, 456K, 7.8M, 1.2B (rounded down, never up)."""
    if count < 10_000:
        return f"{count:,}"
    for size, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if count >= size:
            tenths = count * 10 // size  # integer maths: 999,999 is 999.9K, not 1000K
            if tenths >= 1000:
                return f"{tenths // 10}{suffix}"
            whole, tenth = divmod(tenths, 10)
            return f"{whole}.{tenth}{suffix}" if tenth else f"{whole}{suffix}"
    raise AssertionError(count)  # unreachable: count >= 10,000
