"""The request body of each contact form: a JSON object with bounded, well-formed fields.

Limits keep every channel within what it can carry: SMS 480 characters (three
concatenated segments), Discord 2,000 (an embed description may hold 4,096 and
a whole embed 6,000, with the handle and domain well inside), email 5,000.
Subject and handle are single lines, so nothing a visitor types can start a new
mail header.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from contact.errors import BodyTooLarge, InvalidInput
from store.formats import EMAIL_PATTERN

MAX_BODY_BYTES = 16 * 1024
MESSAGE_LIMITS = {"sms": 480, "email": 5000, "discord": 2000}
SUBJECT_LIMIT = 150
HANDLE_LIMIT = 64
EMAIL_LIMIT = 254
TOKEN_LIMIT = 2048

# C0 controls except tab/newline, DEL and C1 controls: never useful in a message.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Single-line fields: no control character at all (CR/LF included), no line/paragraph separators.
_LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class ContactForm:
    message: str
    token: object  # checked by Turnstile, whatever its type
    email: str | None = None
    subject: str = ""
    handle: str = ""


def parse_body(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLarge()
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("Request body must be JSON") from exc
    if not isinstance(data, dict):
        raise InvalidInput("Request body must be a JSON object")
    return data


def _optional_text(data: dict[str, Any], key: str, label: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{label} must be a string")
    return value.strip()


def _message(data: dict[str, Any], channel: str) -> str:
    value = data.get("message")
    if value is not None and not isinstance(value, str):
        raise InvalidInput("Message must be a string")
    text = _CONTROL.sub("", (value or "").replace("\r\n", "\n").replace("\r", "\n")).strip()
    if not text:
        raise InvalidInput("Message is required")
    limit = MESSAGE_LIMITS[channel]
    if len(text) > limit:
        raise InvalidInput(f"Message must be at most {limit} characters")
    return text


def _single_line(data: dict[str, Any], key: str, label: str, limit: int) -> str:
    text = _optional_text(data, key, label)
    if _LINE_BREAKING.search(text):
        raise InvalidInput(f"{label} must be a single line of text")
    if len(text) > limit:
        raise InvalidInput(f"{label} must be at most {limit} characters")
    return text


def _email(data: dict[str, Any]) -> str:
    value = data.get("email")
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("A valid email address is required")
    address = value.strip()
    # ASCII only: the address goes into a Reply-To header verbatim.
    if len(address) > EMAIL_LIMIT or not address.isascii() or not EMAIL_PATTERN.match(address):
        raise InvalidInput("A valid email address is required")
    return address


def parse_form(channel: str, body: bytes) -> ContactForm:
    """The validated form, or InvalidInput/BodyTooLarge with the message the visitor sees."""
    data = parse_body(body)
    if channel == "email":
        email = _email(data)
        subject = _single_line(data, "subject", "Subject", SUBJECT_LIMIT)
        return ContactForm(_message(data, channel), data.get("turnstileToken"), email=email, subject=subject)
    if channel == "discord":
        handle = _single_line(data, "handle", "Handle", HANDLE_LIMIT)
        return ContactForm(_message(data, channel), data.get("turnstileToken"), handle=handle)
    return ContactForm(_message(data, channel), data.get("turnstileToken"))
