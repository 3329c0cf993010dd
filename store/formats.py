"""The shapes of identifiers, addresses and times that the import format and the routes accept."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

ID_PATTERN = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")  # user and profile ids
ISRC_PATTERN = re.compile(r"\A[A-Za-z0-9]{12}\Z")
DOMAIN_PATTERN = re.compile(r"\A(?=.{1,253}\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}\Z")
PHONE_PATTERN = re.compile(r"\A\+[1-9][0-9]{6,14}\Z")
EMAIL_PATTERN = re.compile(
    r"\A[^@\s<>()\[\],;:\"\\]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+\Z"
)
DISCORD_CHANNEL_PATTERN = re.compile(r"\A[0-9]{1,32}\Z")
# The import format's own shapes (docs/import.md and docs/import.schema.json spell the same patterns;
# tests/test_import_schema.py holds them together). Use with fullmatch.
# An RFC 3339 date-time: T, fractions of a second up to microseconds, Z or an offset; parse_time then
# decides whether the date exists.
TIMESTAMP_PATTERN = re.compile(
    r"(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])-[0-9]{2}-[0-9]{2}[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]"
    r":[0-5][0-9](?:\.[0-9]{1,6})?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
# A profile link: http(s) with a host part free of / ? # [ ], or mailto; printable ASCII only (percent-encode
# the rest), so no parser reads it differently.
LINK_URL_PATTERN = re.compile(
    r"[Hh][Tt][Tt][Pp][Ss]?://[!-\"$-.0->@-Z\\^-~]+(?:[/?#][!-~]*)?|[Mm][Aa][Ii][Ll][Tt][Oo]:[!-Z\\^-~]*"
)
# An avatar: http(s), a host name or IPv4 address (no user part, no IPv6 literal), an optional port.
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = r"0*(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
AVATAR_URL_PATTERN = re.compile(rf"[Hh][Tt][Tt][Pp][Ss]?://{_HOST}(?::(?:{_PORT})?)?(?:[/?#][!-~]*)?")


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 (a trailing Z allowed) -> aware UTC datetime; None stays None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 timestamp or null")
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
