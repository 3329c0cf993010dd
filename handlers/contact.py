"""POST /api/v1/profiles/<id>/contact/(sms|email|discord): the three contact forms.

The handler is thin: the order of checks lives in contact/service.py; here a
refusal becomes the `{"ok": false, "error": ...}` envelope with its status and
headers (Retry-After on a burst 429).
"""

from __future__ import annotations

from contact.errors import ContactError
from handlers.base import ApiError, ApiHandler


class ContactHandler(ApiHandler):
    async def post(self, profile_id: str, channel: str) -> None:
        try:
            data = await self.services.contact.send(channel, profile_id, self.client_ip, self.request.body)
        except ContactError as exc:
            raise ApiError(exc.status, exc.message, exc.headers) from exc
        self.write_ok(data)


ROUTES = [
    (r"/api/v1/profiles/([^/]+)/contact/(sms|email|discord)", ContactHandler),
]
