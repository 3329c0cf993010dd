"""Real local stand-ins for the contact forms' third parties, each on 127.0.0.1:<random port>,
the `fakes` fixture that starts them, and the server settings that point at them.

Turnstile siteverify, the SMS API and Discord are small Tornado apps that
record every request and answer as the test tells them; SMTP is aiosmtpd with
a handler that records messages and can reject at RCPT or DATA.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import pytest
import tornado.web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets


@dataclass
class Recorded:
    path: str
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)

    def form(self) -> dict:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


class _Recorder(tornado.web.RequestHandler):
    def initialize(self, fake) -> None:
        self.fake = fake

    def check_xsrf_cookie(self) -> None:
        pass

    async def post(self, *args) -> None:
        self.fake.requests.append(Recorded(self.request.path, dict(self.request.headers), self.request.body))
        await self.fake.answer(self)


class FakeHttp:
    """Base: one route, every request recorded, `answer(handler)` decides the reply."""

    route = r"/.*"

    def __init__(self):
        self.requests: list[Recorded] = []
        self.server: HTTPServer | None = None
        self.url = ""

    def start(self, host: str = "127.0.0.1") -> FakeHttp:
        sockets = bind_sockets(0, host)
        self.server = HTTPServer(tornado.web.Application([(self.route, _Recorder, {"fake": self})]))
        self.server.add_sockets(sockets)
        self.url = f"http://{host}:{sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        self.server.stop()
        await self.server.close_all_connections()

    async def answer(self, handler: tornado.web.RequestHandler) -> None:
        raise NotImplementedError


class FakeTurnstile(FakeHttp):
    """Tokens decide the answer: 'good*' passes, 'once*' passes once (a real token: siteverify redeems it, and
    refuses it again with `timeout-or-duplicate`), 'slow' sleeps past timeouts, 'garbage' is not JSON,
    'http500' is a server error; anything else is refused like Cloudflare refuses."""

    route = r"/siteverify"
    secret = "turnstile-secret"

    def __init__(self):
        super().__init__()
        self.redeemed: set[str] = set()

    async def answer(self, handler) -> None:
        form = {k: v[0].decode() for k, v in handler.request.body_arguments.items()}
        token = form.get("response", "")
        if token == "slow":
            await asyncio.sleep(3)
        if token == "garbage":
            handler.finish("<html>not json</html>")
            return
        if token == "http500":
            handler.set_status(500)
            handler.finish("{}")
            return
        if token.startswith("once") and form.get("secret") == self.secret:
            duplicate = token in self.redeemed
            self.redeemed.add(token)
            handler.finish({"success": not duplicate, "error-codes": ["timeout-or-duplicate"] if duplicate else []})
            return
        ok = token.startswith("good") and form.get("secret") == self.secret
        handler.finish({"success": ok, "error-codes": [] if ok else ["invalid-input-response"]})

    @property
    def verify_url(self) -> str:
        return self.url + "/siteverify"


class FakeSms(FakeHttp):
    route = r"/messages"

    def __init__(self):
        super().__init__()
        self.status = 200
        self.delay = 0.0

    async def answer(self, handler) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        handler.set_status(self.status)
        handler.finish({"id": f"sms{len(self.requests)}"})


class FakeDiscord(FakeHttp):
    """Answers the queued (status, body) replies first, then 200."""

    route = r"/channels/([0-9]+)/messages"

    def __init__(self):
        super().__init__()
        self.replies: list[tuple[int, dict]] = []

    async def answer(self, handler) -> None:
        status, body = self.replies.pop(0) if self.replies else (200, {"id": "m1"})
        handler.set_status(status)
        handler.finish(body)


class _SmtpHandler:
    def __init__(self, fake: FakeSmtp):
        self.fake = fake

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.fake.reject_rcpt:
            return self.fake.reject_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.fake.reject_data:
            return self.fake.reject_data
        self.fake.messages.append(envelope)
        self.fake.tls.append(session.ssl is not None)
        self.fake.auth_logins.append(getattr(session, "auth_data", None))
        return "250 Message accepted for delivery"


@dataclass
class FakeSmtp:
    reject_rcpt: str | None = None  # e.g. "550 5.1.1 <owner@example.com>: mailbox unavailable"
    reject_data: str | None = None
    require_auth: tuple[str, str] | None = None
    tls_context: object = None  # an ssl.SSLContext: offer STARTTLS (and require it)
    messages: list = field(default_factory=list)
    auth_logins: list = field(default_factory=list)
    tls: list = field(default_factory=list)  # per accepted message: was the session encrypted
    port: int = 0
    host: str = "127.0.0.1"

    def start(self) -> FakeSmtp:
        with socket.socket() as probe:
            probe.bind((self.host, 0))
            self.port = probe.getsockname()[1]
        kwargs = {}
        if self.require_auth:
            user, password = self.require_auth

            def authenticator(server, session, envelope, mechanism, auth_data):
                ok = auth_data.login == user.encode() and auth_data.password == password.encode()
                return AuthResult(success=ok)

            kwargs = {"authenticator": authenticator, "auth_required": True, "auth_require_tls": False}
        if self.tls_context is not None:
            kwargs.update(tls_context=self.tls_context, require_starttls=True)
        self.controller = Controller(_SmtpHandler(self), hostname=self.host, port=self.port, **kwargs)
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


# Registered as a pytest plugin by conftest.py, so every contact test module gets the fixture.
@pytest.fixture
async def fakes():
    turnstile, sms, discord = FakeTurnstile().start(), FakeSms().start(), FakeDiscord().start()
    smtp = FakeSmtp().start()
    yield type("Fakes", (), {"turnstile": turnstile, "sms": sms, "discord": discord, "smtp": smtp})
    smtp.stop()
    for fake in (turnstile, sms, discord):
        await fake.stop()


def contact_settings(fakes, **overrides) -> dict:
    settings = dict(
        turnstile_verify_url=fakes.turnstile.verify_url,
        turnstile_secret=FakeTurnstile.secret,
        turnstile_timeout=1.0,
        sms_api_url=fakes.sms.url,
        smtp_host="127.0.0.1",
        smtp_port=fakes.smtp.port,
        smtp_from="Hep.gg <no-reply@hep.gg>",
        discord_api_url=fakes.discord.url,
        discord_bot_token="bot-token",
        delivery_timeout=2.0,
        trusted_proxies=("127.0.0.1/32",),
    )
    settings.update(overrides)
    return settings


def third_party_flags(fakes) -> list[str]:
    """`serve` options that point a subprocess's contact deliveries and Turnstile at the fakes."""
    return [
        "--turnstile-verify-url",
        fakes.turnstile.verify_url,
        "--turnstile-secret",
        FakeTurnstile.secret,
        "--sms-api-url",
        fakes.sms.url,
        "--smtp-port",
        str(fakes.smtp.port),
        "--discord-api-url",
        fakes.discord.url,
        "--discord-bot-token",
        "bot-token",
    ]
