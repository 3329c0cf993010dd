"""Cloudflare Turnstile siteverify: a token is good only when Cloudflare says so, in time.

Fail closed: a missing or oversized token, a refusal, an answer that is not the
expected JSON, a timeout or an unreachable endpoint all count as a failed
check. Tokens longer than Cloudflare's 2,048-character maximum are refused
without a call.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from contact.validation import TOKEN_LIMIT

log = logging.getLogger("hepgg.contact.turnstile")


class Turnstile:
    def __init__(self, http: AsyncHTTPClient, verify_url: str, secret: str, timeout: float):
        self.http = http
        self.verify_url = verify_url
        self.secret = secret
        self.timeout = timeout

    async def verify(self, token: object, remote_ip: str) -> bool:
        if not isinstance(token, str) or not token or len(token) > TOKEN_LIMIT:
            return False
        body = urlencode({"secret": self.secret, "response": token, "remoteip": remote_ip})
        request = HTTPRequest(
            self.verify_url,
            method="POST",
            body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
            follow_redirects=False,
        )
        try:
            response = await self.http.fetch(request)
            answer = json.loads(response.body)
        except HTTPClientError as exc:
            log.warning("turnstile siteverify answered %s", exc.code)
            return False
        except (OSError, ValueError) as exc:  # unreachable, timeout (curl raises HTTPClientError 599), bad JSON
            log.warning("turnstile siteverify failed: %s", type(exc).__name__)
            return False
        if not isinstance(answer, dict) or answer.get("success") is not True:
            codes = answer.get("error-codes") if isinstance(answer, dict) else None
            log.info("turnstile refused a token: %s", codes)
            return False
        return True
