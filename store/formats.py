"""The shapes of identifiers, addresses and times that the import format and the routes accept."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # user and profile ids
ISRC_PATTERN = re.compile(r"^[A-Za-z0-9]{12}$")
DOMAIN_PATTERN = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")
PHONE_PATTERN = re.compile(r"^\+[1-9][0-9]{6,14}$")
EMAIL_PATTERN = re.compile(
    r"^[^@\s<>()\[\],;:\"\\]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
DISCORD_CHANNEL_PATTERN = re.compile(r"^[0-9]{1,32}$")
# An RFC 3339 date-time as the import format takes it: T or a space, fractions of a second allowed, Z or an
# offset (none: UTC). Use with fullmatch; parse_time still decides whether the date exists.
TIMESTAMP_PATTERN = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?"
)


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
