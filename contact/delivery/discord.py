"""Discord: one embed posted by the Hep.gg bot into the owner's channel, pinging nobody.

A 429 whose `retry_after` is short (and fits the delivery timeout) is retried
once after that wait; a longer one, any other error status or a network error
is a failed delivery.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from contact.errors import DeliveryFailed

log = logging.getLogger("hepgg.contact.discord")

FAILED = "Discord delivery failed"
USER_AGENT = "DiscordBot (https://hep.gg, 1.0) hepgg_server"
MAX_RETRY_WAIT = 2.0  # seconds: longer waits are a failed delivery, not a hanging visitor
ANONYMOUS = "Anonymous visitor"


def embed_payload(handle: str, message: str, domain: str, accent: str | None = None) -> dict[str, Any]:
    """The message body; every field stays inside Discord's embed limits (validated upstream)."""
    embed: dict[str, Any] = {
        "author": {"name": handle or ANONYMOUS},  # <= 64 of 256
        "description": message,  # <= 2,000 of 4,096
        "footer": {"text": f"Sent from {domain}"},  # a host name, <= 253 of 2,048
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if accent and len(accent) == 7 and accent.startswith("#"):
        try:
            embed["color"] = int(accent[1:], 16)
        except ValueError:
            pass
    return {"embeds": [embed], "allowed_mentions": {"parse": []}}


def _retry_after(exc: HTTPClientError) -> float | None:
    response = exc.response
    if response is None:
        return None
    try:
        return float(json.loads(response.body)["retry_after"])
    except (ValueError, KeyError, TypeError):
        pass
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None


class DiscordSender:
    def __init__(self, http: AsyncHTTPClient, api_url: str, bot_token: str, timeout: float):
        self.http = http
        self.api_url = api_url.rstrip("/")
        self.bot_token = bot_token
        self.timeout = timeout

    def _request(self, channel_id: str, payload: dict[str, Any], timeout: float) -> HTTPRequest:
        return HTTPRequest(
            f"{self.api_url}/channels/{quote(channel_id, safe='')}/messages",
            method="POST",
            body=json.dumps(payload),
            headers={
                "Authorization": f"Bot {self.bot_token}",
                "User-Agent": USER_AGENT,
                "Content-Type": "application/json",
            },
            connect_timeout=timeout,
            request_timeout=timeout,
            follow_redirects=False,
        )

    async def send(self, channel_id: str, payload: dict[str, Any]) -> None:
        deadline = time.monotonic() + self.timeout
        for attempt in (1, 2):
            remaining = deadline - time.monotonic()
            try:
                await self.http.fetch(self._request(channel_id, payload, max(0.1, remaining)))
                return
            except HTTPClientError as exc:
                wait = _retry_after(exc) if exc.code == 429 else None
                if (
                    attempt == 1
                    and wait is not None
                    and 0 <= wait <= MAX_RETRY_WAIT
                    and time.monotonic() + wait + 0.1 < deadline
                ):
                    log.info("discord rate-limited; retrying once in %.2fs", wait)
                    await asyncio.sleep(wait)
                    continue
                log.warning("discord answered %s", exc.code)
                raise DeliveryFailed(FAILED) from exc
            except OSError as exc:
                log.warning("discord unreachable: %s", type(exc).__name__)
                raise DeliveryFailed(FAILED) from exc
