"""The request body of each contact form: a JSON object with bounded, well-formed fields.

Limits keep every channel within what it can carry: SMS 480 characters (three
concatenated segments), Discord 2,000 (an embed description may hold 4,096 and
a whole embed 6,000, with the handle and domain well inside), email 5,000.
Subject and handle are single lines, so nothing a visitor types can start a new
mail header; the visitor's address must parse as exactly one plain address (no
encoded words, no list, no display name), so Reply-To names the visitor alone.

Every check runs before Turnstile and before any credit: a body nested deeper
than `MAX_DEPTH` is refused before it is parsed (json would recurse once per
level), and a string that is not Unicode text (a lone surrogate, which JSON's
`\\ud800` escape can produce) is refused wherever it is, since no channel could
encode it.
"""

from __future__ import annotations

import json
import re
from array import array
from dataclasses import dataclass
from email.policy import SMTP as SMTP_POLICY
from email.utils import getaddresses
from itertools import accumulate
from typing import Any

from contact.errors import BodyTooLarge, InvalidInput
from store.formats import EMAIL_PATTERN

MAX_BODY_BYTES = 16 * 1024
MESSAGE_LIMITS = {"sms": 480, "email": 5000, "discord": 2000}
SUBJECT_LIMIT = 150
HANDLE_LIMIT = 64
EMAIL_LIMIT = 254
TOKEN_LIMIT = 2048
MAX_DEPTH = 16  # a form is one flat object; a few levels leave room for wrong-typed fields

# A JSON string (escapes included), possessive so an unterminated one cannot backtrack.
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_DEPTH_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes

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


def nested_too_deeply(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects in `text` nest deeper than `limit`, counted outside strings.

    The running sum of +1 per opening and -1 per closing bracket is the depth until the first
    closer without its opener, where a parser stops with an error anyway. About 2 ms for 16 KiB of
    brackets; a body with at most `limit` opening brackets is answered at once.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)).encode()
    return max(accumulate(array("b", brackets.translate(_DEPTH_STEP))), default=0) > limit


def parse_body(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLarge()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("Request body must be JSON") from None
    if nested_too_deeply(text):
        raise InvalidInput("Request body is nested too deeply")
    try:
        data = json.loads(text or "null")
        # Every string, key or value, must be Unicode text: one dump finds a lone surrogate anywhere.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("Request body must be Unicode text") from None
    except ValueError:
        raise InvalidInput("Request body must be JSON") from None
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
    if len(address) > EMAIL_LIMIT or not address.isascii() or not EMAIL_PATTERN.fullmatch(address):
        raise InvalidInput("A valid email address is required")
    if not is_one_plain_address(address):
        raise InvalidInput("A valid email address is required")
    return address


def is_one_plain_address(address: str) -> bool:
    """True when `address` is one addr-spec that every mail parser reads back as itself.

    The header parser decodes RFC 2047 encoded words even inside a local part, so
    `=?utf-8?q?a=40b.com=2C_c=40d.com?=@e.com` would become a Reply-To naming two
    mailboxes: an encoded word, a list, a comment or a display name is refused.
    """
    if "=?" in address:
        return False
    if getaddresses([address]) != [("", address)]:
        return False
    header = SMTP_POLICY.header_factory("reply-to", address)
    mailboxes = [(mailbox.display_name, mailbox.addr_spec) for mailbox in header.addresses]
    return not header.defects and mailboxes == [("", address)]


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
