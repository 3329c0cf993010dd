"""POST /api/v1/profiles/<id>/contact/(sms|email|discord): the three contact forms.

The handler is thin: the order of checks lives in contact/service.py, and a
refusal (a `ContactError`) becomes the `{"ok": false, "error": ...}` envelope
with its status and headers (Retry-After on a burst 429) in handlers/errors.py.
"""

from __future__ import annotations

from handlers.base import ApiHandler


class ContactHandler(ApiHandler):
    async def post(self, profile_id: str, channel: str) -> None:
        data = await self.services.contact.send(channel, profile_id, self.client_ip, self.request.body)
        self.write_ok(data)


ROUTES = [
    (r"/api/v1/profiles/([^/]+)/contact/(sms|email|discord)", ContactHandler),
]
