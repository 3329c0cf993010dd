"""The music feature's refusals (handlers/errors.py gives each its HTTP answer)."""

from __future__ import annotations


class MusicBusy(Exception):
    """No stream slot for this request (all taken past the queue timeout, or its address holds its share)."""

    retry_after = 5  # seconds
