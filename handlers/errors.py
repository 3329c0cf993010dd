"""The one error mapping: what HTTP answer each failure gets (status, message, headers).

Handlers and features raise; nothing else decides a status. `answer_for` maps:

- `ApiError` (a handler's own refusal) and the contact domain's `ContactError`
  to their status, visitor-facing message and headers (Retry-After on a burst 429);
- a store outage (store/outages.py) to 503 with Retry-After, on every route,
  never a 500: the request was fine and will work again; so is a music request
  with no stream slot free (`MusicBusy`);
- a card that could not be drawn (`RenderError`) to 500 "Render failed";
- Tornado's `HTTPError` to its status with a short fixed message;
- anything else to 500 "Internal error" (a bug: logged with its traceback).

Each handler base only chooses the body's format from the answer (the JSON
envelope, a short HTML page, plain text for crawlers, nothing for audio, or the
hand-written stream answers of handlers/presence.py); no answer ever carries a
traceback or a log message.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import tornado.web

from contact.errors import ContactError
from music.errors import MusicBusy
from render.og_card import RenderError
from store.outages import RETRY_AFTER_SECONDS, is_store_outage

SHUTDOWN_RETRY_AFTER_SECONDS = 1  # another replica takes the retry at once

RENDER_FAILED = "Render Failed"  # the status line's phrase for a card that could not be drawn
MESSAGES = {
    400: "Bad request",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
    500: "Internal error",
    503: "Service temporarily unavailable",
}


class ApiError(tornado.web.HTTPError):
    """A refusal whose `message` is shown to the caller (in the API envelope)."""

    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(status_code, reason=None)
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class ErrorAnswer:
    status: int
    message: str  # shown to the visitor
    headers: dict[str, str] = field(default_factory=dict)
    reason: str | None = None  # the status line's phrase, when not the standard one
    expected: bool = True  # False: a bug, logged with its traceback


def shutting_down() -> ApiError:
    """A request that reaches a replica after SIGTERM: 503 with Retry-After, a documented answer the visitor
    (or the proxy) retries, where another replica serves it (the rehearsal saw 46 bare music 503s)."""
    return ApiError(503, message_for(503), {"Retry-After": str(SHUTDOWN_RETRY_AFTER_SECONDS)})


def message_for(status: int) -> str:
    return MESSAGES.get(status, "Bad request" if status < 500 else "Internal error")


def answer_for(status_code: int, exc: BaseException | None, allow: str = "") -> ErrorAnswer:
    """The answer for a request that failed with `exc` (Tornado's `status_code`: 500 for a raised exception).

    `allow` lists the methods the resource has: a 405 names them in Allow (RFC 9110 §15.5.6).
    """
    answer = _answer_for(status_code, exc)
    if answer.status == 405 and allow:
        return replace(answer, headers={**answer.headers, "Allow": allow})
    return answer


def _answer_for(status_code: int, exc: BaseException | None) -> ErrorAnswer:
    if isinstance(exc, ApiError):
        return ErrorAnswer(exc.status_code, exc.message, exc.headers)
    if isinstance(exc, ContactError):
        return ErrorAnswer(exc.status, exc.message, exc.headers)
    if is_store_outage(exc):
        return ErrorAnswer(503, message_for(503), {"Retry-After": str(RETRY_AFTER_SECONDS)})
    if isinstance(exc, MusicBusy):
        return ErrorAnswer(503, message_for(503), {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, RenderError):
        return ErrorAnswer(500, "Render failed", reason=RENDER_FAILED)
    if isinstance(exc, tornado.web.HTTPError):
        return ErrorAnswer(exc.status_code, message_for(exc.status_code), reason=exc.reason)
    return ErrorAnswer(status_code, message_for(status_code), expected=exc is None)
