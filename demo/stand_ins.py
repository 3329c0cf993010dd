"""The demo's third parties, in-process and on loopback only: `serve --demo` works with no internet.

One small Tornado app on 127.0.0.1:<random port> (plus an SMTP sink on another) stands in for:

* the music worker (`GET/HEAD /music/tracks/<ISRC>`): tones synthesized here (demo/tones.py) as WAV,
  with the x-track-* headers and single byte ranges (206), so the page's player plays and seeks;
* Turnstile's siteverify (`POST /turnstile/siteverify`): passes the tokens the demo widget
  (demo/assets/turnstile.js, served to the page same-origin at /_demo/turnstile.js) makes, each once,
  like Cloudflare's single-use tokens;
* the SMS API (`POST /sms/messages`), Discord (`POST /discord/channels/<id>/messages`) and an SMTP relay:
  each delivery lands in an in-memory outbox and one log line ("demo outbox: ...").

Nothing here can be reached from outside the machine, and runtime/config.py refuses `--demo` with
external stores: it exists to show the product, never to run it.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from demo.tones import LENGTH_SECONDS, track_wav

log = logging.getLogger("hepgg.demo")

SITEKEY = "demo-sitekey"  # rendered into the demo page; the widget accepts nothing else
SECRET = "demo-secret"
TOKEN = re.compile(r"demo-pass-[0-9a-f]{32}")
ASSETS = Path(__file__).resolve().parent / "assets"  # served at ASSET_PREFIX by the server in demo mode only
ASSET_PREFIX = "/_demo/"
WIDGET_SCRIPT = ASSET_PREFIX + "turnstile.js"  # the page loads it like Cloudflare's api.js (explicit rendering)
ARTWORK = ASSET_PREFIX + "cover.svg"  # same origin as the page, so its CSP admits it as 'self'
DEMO_ISRC = "USRC17607839"  # the demo profile's track (seed-demo in runtime/cli.py reads it), synthesized at start
TRACK_HEADERS = {
    "Content-Type": "audio/wav",
    "Accept-Ranges": "bytes",
    "X-Track-Title": "Demo Track",
    "X-Track-Artist": "The Demos",
    "X-Track-Album": "Synthesized on the fly",
    "X-Track-Duration": str(LENGTH_SECONDS),
    "X-Track-Artwork": ARTWORK,
}
RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass
class Outbox:
    """The last deliveries the demo made, newest last (bounded)."""

    messages: collections.deque[dict[str, str]] = field(default_factory=lambda: collections.deque(maxlen=50))
    used_tokens: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=1000))

    def record(self, channel: str, to: str, text: str) -> None:
        self.messages.append({"channel": channel, "to": to, "text": text})
        log.info("demo outbox: %s to %s (%d characters)", channel, to, len(text))


class _Base(tornado.web.RequestHandler):
    def initialize(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def check_xsrf_cookie(self) -> None:
        pass

    def json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise tornado.web.HTTPError(400) from None
        if not isinstance(body, dict):
            raise tornado.web.HTTPError(400)
        return body


class TrackHandler(_Base):
    def compute_etag(self) -> None:
        return None

    async def head(self, isrc: str) -> None:
        await self.serve(isrc)

    async def get(self, isrc: str) -> None:
        await self.serve(isrc)

    async def serve(self, isrc: str) -> None:
        body = await asyncio.to_thread(track_wav, isrc.upper())  # ~1 s of CPU the first time; cached
        for name, value in TRACK_HEADERS.items():
            self.set_header(name, value)
        wanted = RANGE.fullmatch(self.request.headers.get("Range", ""))
        if wanted and (wanted.group(1) or wanted.group(2)):
            first, last = wanted.group(1), wanted.group(2)
            start = int(first) if first else max(0, len(body) - int(last))
            end = min(int(last), len(body) - 1) if first and last else len(body) - 1
            if start >= len(body) or start > end:
                self.set_status(416)
                self.set_header("Content-Range", f"bytes */{len(body)}")
                return
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
            body = body[start : end + 1]
        self.set_header("Content-Length", str(len(body)))
        if self.request.method == "GET":
            self.write(body)


class SiteverifyHandler(_Base):
    def post(self) -> None:
        secret = self.get_body_argument("secret", "")
        token = self.get_body_argument("response", "")
        ok = secret == SECRET and bool(TOKEN.fullmatch(token)) and token not in self.outbox.used_tokens
        if ok:
            self.outbox.used_tokens.append(token)
        self.write({"success": ok, "error-codes": [] if ok else ["invalid-input-response"]})


class SmsHandler(_Base):
    def post(self) -> None:
        body = self.json_body()
        self.outbox.record("sms", str(body.get("to", "")), str(body.get("body", "")))
        self.write({"ok": True})


class DiscordHandler(_Base):
    def post(self, channel_id: str) -> None:
        embeds = self.json_body().get("embeds") or [{}]
        self.outbox.record("discord", f"channel {channel_id}", str(embeds[0].get("description", "")))
        self.write({"id": str(len(self.outbox.messages))})


class SmtpSink:
    """Just enough SMTP for smtplib: EHLO (no STARTTLS, no AUTH), MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    def __init__(self, outbox: Outbox):
        self.outbox = outbox
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        recipients: list[str] = []
        try:
            await reply("220 demo.localhost demo SMTP sink")
            while line := await asyncio.wait_for(reader.readline(), 30):
                verb = line.decode("utf-8", "replace").strip().split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    await reply("250-demo.localhost\r\n250-8BITMIME\r\n250 SMTPUTF8")
                elif verb in ("MAIL", "RSET"):
                    recipients = []
                    await reply("250 OK")
                elif verb == "NOOP":
                    await reply("250 OK")
                elif verb == "RCPT":
                    recipients.append(line.decode("utf-8", "replace").split(":", 1)[-1].strip().strip("<>"))
                    await reply("250 OK")
                elif verb == "DATA":
                    await reply("354 end with <CRLF>.<CRLF>")
                    size = 0
                    while (data := await asyncio.wait_for(reader.readline(), 30)) not in (b".\r\n", b".\n", b""):
                        size += len(data)
                    self.outbox.record("email", ", ".join(recipients), f"{size} bytes")
                    await reply("250 OK queued")
                elif verb == "QUIT":
                    await reply("221 bye")
                    break
                else:
                    await reply("502 not implemented")
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


class DemoStandIns:
    """Starts and stops the stand-ins; `urls()` are the config values that point the server at them."""

    def __init__(self) -> None:
        self.outbox = Outbox()
        self.smtp = SmtpSink(self.outbox)
        self.http: HTTPServer | None = None
        self.port = 0
        self._warm: asyncio.Task[bytes] | None = None

    async def start(self) -> DemoStandIns:
        args = {"outbox": self.outbox}
        app = tornado.web.Application(
            [
                (r"/music/tracks/([A-Za-z0-9]{12})", TrackHandler, args),
                (r"/turnstile/siteverify", SiteverifyHandler, args),
                (r"/sms/messages", SmsHandler, args),
                (r"/discord/channels/([0-9]+)/messages", DiscordHandler, args),
            ]
        )
        sockets = bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        self.http = HTTPServer(app)
        self.http.add_sockets(sockets)
        await self.smtp.start()
        # The demo track takes about a second of CPU to synthesize: do it now, not when a visitor presses play.
        self._warm = asyncio.create_task(asyncio.to_thread(track_wav, DEMO_ISRC), name="demo-track-warm-up")
        log.info("demo stand-ins on 127.0.0.1:%d (SMTP :%d): music, Turnstile, SMS, Discord", self.port, self.smtp.port)
        return self

    async def stop(self) -> None:
        if self._warm is not None:
            await asyncio.gather(self._warm, return_exceptions=True)  # a thread cannot be cancelled: let it end
        if self.http is not None:
            self.http.stop()
            await self.http.close_all_connections()
        await self.smtp.stop()

    def urls(self) -> dict[str, Any]:
        base = f"http://127.0.0.1:{self.port}"
        return {
            "music_upstream_url": f"{base}/music",
            "turnstile_verify_url": f"{base}/turnstile/siteverify",
            "turnstile_sitekey": SITEKEY,
            "turnstile_secret": SECRET,
            "sms_api_url": f"{base}/sms",
            "discord_api_url": f"{base}/discord",
            "discord_bot_token": "demo-bot-token",
            "smtp_host": "127.0.0.1",
            "smtp_port": self.smtp.port,
            "smtp_user": "",
        }
