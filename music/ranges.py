"""Byte ranges (RFC 9110 §14): parsing a request's Range, resolving it against a length.

Pure functions, no I/O. One range is served (forwarded upstream, or emulated
when the worker ignores it). A request for several ranges is refused with 416
before any upstream work (RFC 9110 §14.2 and §15.5.17 let a server reject a
range set; we never build multipart/byteranges answers). A Range that is not a
valid `bytes=` range set is ignored, as RFC 9110 §14.2 allows: the whole track.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

_BYTES_RANGES = re.compile(r"\Abytes[ \t]*=[ \t]*([0-9, \t-]{1,200})\Z", re.IGNORECASE)
_RANGE_SPEC = re.compile(r"\A([0-9]{0,19})-([0-9]{0,19})\Z")


class ByteRange(NamedTuple):
    """`first-last` (last may be None: to the end), or a suffix of `suffix` bytes."""

    first: int | None
    last: int | None
    suffix: int | None = None

    def header(self) -> str:
        """The one-range `Range` value sent upstream (normalised: nothing of the visitor's spelling passes)."""
        if self.suffix is not None:
            return f"bytes=-{self.suffix}"
        return f"bytes={self.first}-" + ("" if self.last is None else str(self.last))


class Several:
    """The request asked for more than one range."""

    def __repr__(self) -> str:
        return "SEVERAL"


SEVERAL: Final = Several()


def parse(value: str | None) -> ByteRange | Several | None:
    """The request's one range, SEVERAL, or None (absent, not bytes, or invalid: all mean "the whole track")."""
    if not value:
        return None
    match = _BYTES_RANGES.fullmatch(value.strip())
    if not match:
        return None
    specs = [spec.strip() for spec in match.group(1).split(",")]
    wanted: list[ByteRange] = []
    for spec in specs:
        if not spec:
            continue  # a list may have empty elements (RFC 9110 §5.6.1)
        parts = _RANGE_SPEC.fullmatch(spec)
        if parts is None:
            return None
        first, last = parts.group(1), parts.group(2)
        if first:
            if last and int(last) < int(first):
                return None  # an invalid range makes the header invalid: ignored
            wanted.append(ByteRange(int(first), int(last) if last else None))
        elif last:
            wanted.append(ByteRange(None, None, int(last)))
        else:
            return None  # "-" names no bytes
    if not wanted:
        return None
    return SEVERAL if len(wanted) > 1 else wanted[0]


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


_CONTENT_RANGE = re.compile(r"\Abytes[ \t]+([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)\Z", re.IGNORECASE)


def content_range(value: str | None) -> tuple[int, int | None] | None:
    """(first byte, complete length or None) of a 206's `Content-Range: bytes a-b/len`, or None if unreadable."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        return None
    first, total = match.group(1), match.group(3)
    return int(first), None if total == "*" else int(total)
