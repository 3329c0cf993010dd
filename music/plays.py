"""When a proxied answer counts as a play: a visitor starting a track.

An answer can be a play only if it is a GET answered 200 or 206 whose body
starts at byte 0 of the track. It counts once the listener has been handed
PLAY_BYTES of that body, or the whole track when it is shorter: at the moment
those bytes are written to the listener's socket, never when headers are sent.
So a probe (`bytes=0-1`, `bytes=0-2`: a few bytes of a long track), a HEAD, a
seek (a range starting later), a 416 and a failure before PLAY_BYTES are not
plays. The stats writer then counts one play per visitor and track per 30 s
(store/stats.py), so reconnects, refreshes and many sockets from one visitor
count once.
"""

from __future__ import annotations

from typing import NamedTuple

# 64 KiB: 1.6 s of a 320 kbit/s track. Browsers ask for far more as soon as a track plays
# (Chrome and Firefox `bytes=0-`, Safari `bytes=0-1` then the rest); probes ask for less.
PLAY_BYTES = 64 * 1024


class PlayRule(NamedTuple):
    threshold: int  # body bytes handed to the listener that make the answer a play
    whole_track_body: bool  # the body is the whole track, length unknown: its clean end is a play too


def play_rule(method: str, status: int, first_byte: int | None, track_length: int | None) -> PlayRule | None:
    """How this answer becomes a play, or None when it never does.

    `first_byte` is where the answer's body starts in the track; `track_length` is the
    whole track's length when known (a 200's Content-Length, a 206's complete length).
    """
    if method != "GET" or status not in (200, 206) or first_byte != 0:
        return None
    if track_length is None:
        return PlayRule(PLAY_BYTES, whole_track_body=status == 200)
    return PlayRule(max(1, min(PLAY_BYTES, track_length)), whole_track_body=False)
