"""SMS: `POST {sms-api-url}/messages` with the owner's own SMS key; anything but 2xx is a failure."""

from __future__ import annotations

import json
import logging

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from contact.errors import DeliveryFailed

log = logging.getLogger("hepgg.contact.sms")

FAILED = "SMS delivery failed"


class SmsSender:
    def __init__(self, http: AsyncHTTPClient, api_url: str, timeout: float):
        self.http = http
        self.url = api_url.rstrip("/") + "/messages"
        self.timeout = timeout

    async def send(self, key: str, phone: str, text: str) -> None:
        request = HTTPRequest(
            self.url,
            method="POST",
            body=json.dumps({"to": phone, "body": text}),
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
            follow_redirects=False,
        )
        try:
            await self.http.fetch(request)
        except HTTPClientError as exc:
            log.warning("SMS API answered %s", exc.code)
            raise DeliveryFailed(FAILED) from exc
        except OSError as exc:
            log.warning("SMS API unreachable: %s", type(exc).__name__)
            raise DeliveryFailed(FAILED) from exc
