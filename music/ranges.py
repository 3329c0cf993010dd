"""Byte ranges (RFC 9110 §14): parsing a request's Range, resolving it against a length.

Pure functions, no I/O. Only single ranges are emulated; anything else is
forwarded upstream as-is and answered with whatever the upstream sends.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_SINGLE = re.compile(r"\Abytes=([0-9]{0,19})-([0-9]{0,19})\Z")
# What we are willing to pass upstream: a byte-range set, nothing that could smuggle anything else.
_FORWARDABLE = re.compile(r"\Abytes=[0-9, -]{1,200}\Z")

# A range starting at 0 that asks for fewer bytes than this is a player's probe
# (Safari sends bytes=0-1 before the real request), not a play.
PROBE_BYTES = 2


class ByteRange(NamedTuple):
    """`first-last` (last may be None: to the end), or a suffix of `suffix` bytes."""

    first: int | None
    last: int | None
    suffix: int | None = None


def forwardable(value: str | None) -> str | None:
    """The Range header to send upstream, or None when absent or not a bytes range."""
    if not value:
        return None
    value = value.strip()
    return value if _FORWARDABLE.match(value) else None


def parse_single(value: str | None) -> ByteRange | None:
    """One `bytes=` range, or None (absent, multiple ranges, or invalid: all mean "no range" here)."""
    if not value:
        return None
    match = _SINGLE.match(value.replace(" ", ""))
    if not match:
        return None
    first, last = match.group(1), match.group(2)
    if first:
        if last and int(last) < int(first):
            return None  # invalid: ignored, as RFC 9110 says
        return ByteRange(int(first), int(last) if last else None)
    if last:
        return ByteRange(None, None, int(last))
    return None


def resolve(wanted: ByteRange, length: int) -> tuple[int, int] | None:
    """(first, last) inclusive inside a representation of `length` bytes, or None if unsatisfiable."""
    if wanted.suffix is not None:
        if wanted.suffix == 0 or length == 0:
            return None
        return max(0, length - wanted.suffix), length - 1
    assert wanted.first is not None
    if wanted.first >= length:
        return None
    last = length - 1 if wanted.last is None else min(wanted.last, length - 1)
    return wanted.first, last


def counts_as_play(range_header: str | None) -> bool:
    """A GET from byte 0 (no Range, or a range starting at 0 that is not a tiny probe)."""
    if forwardable(range_header) is None:
        return True  # absent or ignored: the whole track
    wanted = parse_single(range_header)
    if wanted is None or wanted.first != 0:
        return False  # a suffix, a later start, or a multi-range request
    return wanted.last is None or wanted.last + 1 > PROBE_BYTES
