"""Why a contact send was refused: each error carries the status and the visitor-facing message.

The handler turns these into the `{"ok": false, "error": ...}` envelope in one
place. Messages are fixed strings (listed in docs/contact.md) except the mail
server's pass-through, which is cleaned of the owner's address first.
"""

from __future__ import annotations

from store.outages import RETRY_AFTER_SECONDS

CHANNEL_NAMES = {"sms": "SMS", "email": "email", "discord": "Discord"}


class ContactError(Exception):
    status = 400
    message = "Bad request"

    def __init__(self, message: str | None = None, *, status: int | None = None, headers: dict[str, str] | None = None):
        if message is not None:
            self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}
        super().__init__(self.message)


class ProfileNotFound(ContactError):
    status = 404
    message = "Profile not found"


class Throttled(ContactError):
    status = 429
    message = "Too many messages, please try again later"

    def __init__(self, retry_after: int | None = None):
        super().__init__(headers={"Retry-After": str(retry_after)} if retry_after else None)


class Unavailable(ContactError):
    status = 503
    message = "Contact forms are temporarily unavailable, please try again later"

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": str(RETRY_AFTER_SECONDS)})  # a store is down


class InvalidInput(ContactError):
    status = 400


class BodyTooLarge(ContactError):
    status = 413
    message = "Request body too large"


class AntiSpamFailed(ContactError):
    status = 400
    message = "Anti-spam check failed"


class NotActive(ContactError):
    status = 400

    def __init__(self, channel: str):
        super().__init__(f"This {CHANNEL_NAMES[channel]} contact form is not active")


class OutOfCredits(ContactError):
    status = 402

    def __init__(self, channel: str):
        super().__init__(f"The owner is out of {CHANNEL_NAMES[channel]} credits")


class DeliveryFailed(ContactError):
    status = 502
