"""The demo's local third parties (demo/stand_ins.py) over real sockets: music, siteverify, deliveries;
and `serve --demo` wired to them (the page, its player and its forms work with no internet)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import smtplib
import wave
from email.message import EmailMessage
from urllib.parse import urlencode

import pytest
from tornado.httpclient import AsyncHTTPClient

from demo.stand_ins import ARTWORK, SECRET, DemoStandIns
from demo.tones import LENGTH_SECONDS, RATE, track_wav
from runtime.cli import demo_document

from conftest import start_test_server, stop_test_server


@pytest.fixture
async def stand_ins():
    demo = await DemoStandIns().start()
    yield demo
    await demo.stop()


async def fetch(url: str, **kwargs):
    return await AsyncHTTPClient().fetch(url, raise_error=False, request_timeout=30, **kwargs)


@pytest.mark.slow  # synthesises two whole tracks in Python
def test_tones_are_a_real_wav_of_the_stated_length():
    with wave.open(io.BytesIO(track_wav("USRC17607839"))) as audio:
        assert (audio.getnchannels(), audio.getsampwidth(), audio.getframerate()) == (1, 2, RATE)
        assert audio.getnframes() == RATE * LENGTH_SECONDS
        frames = audio.readframes(RATE)
    assert max(frames) > 0 and frames != bytes(len(frames))  # not silence
    assert track_wav("USRC17607839") != track_wav("GBAYE0601498")  # the key follows the ISRC


@pytest.mark.slow  # synthesises a whole track in Python (~5 s of CPU)
async def test_music_stand_in_serves_headers_and_ranges(stand_ins):
    url = stand_ins.urls()["music_upstream_url"] + "/tracks/USRC17607839"
    head = await fetch(url, method="HEAD")
    assert head.code == 200 and head.headers["Content-Type"] == "audio/wav"
    assert head.headers["X-Track-Duration"] == str(LENGTH_SECONDS) and head.headers["Accept-Ranges"] == "bytes"
    whole = track_wav("USRC17607839")
    assert int(head.headers["Content-Length"]) == len(whole)
    part = await fetch(url, headers={"Range": "bytes=1000-1999"})
    assert part.code == 206 and part.body == whole[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(whole)}"
    tail = await fetch(url, headers={"Range": "bytes=-10"})
    assert tail.code == 206 and tail.body == whole[-10:]
    beyond = await fetch(url, headers={"Range": f"bytes={len(whole)}-"})
    assert beyond.code == 416


async def test_siteverify_passes_a_demo_token_once(stand_ins):
    url = stand_ins.urls()["turnstile_verify_url"]
    token = "demo-pass-" + "ab" * 16

    async def verify(secret: str, response: str) -> bool:
        answer = await fetch(url, method="POST", body=urlencode({"secret": secret, "response": response}))
        return json.loads(answer.body)["success"]

    assert await verify("wrong", token) is False
    assert await verify(SECRET, "anything-else") is False
    assert await verify(SECRET, token) is True
    assert await verify(SECRET, token) is False  # single use, like Cloudflare's


async def test_deliveries_land_in_the_outbox(stand_ins):
    urls = stand_ins.urls()
    sms = await fetch(urls["sms_api_url"] + "/messages", method="POST", body=json.dumps({"to": "+1555", "body": "hi"}))
    discord = await fetch(
        urls["discord_api_url"] + "/channels/123/messages",
        method="POST",
        body=json.dumps({"embeds": [{"description": "hello"}]}),
    )
    assert sms.code == 200 and discord.code == 200

    def send_mail() -> None:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "a@example.com", "owner@example.com", "Hi ✨"
        message.set_content("Grüße\n.\nA line with a dot alone above")
        with smtplib.SMTP(urls["smtp_host"], urls["smtp_port"], timeout=10) as smtp:
            smtp.send_message(message)

    await asyncio.to_thread(send_mail)
    channels = [(m["channel"], m["to"]) for m in stand_ins.outbox.messages]
    assert channels == [("sms", "+1555"), ("discord", "channel 123"), ("email", "owner@example.com")]


@pytest.fixture
async def demo_server(make_config, clean_redis):
    # load_config refuses --demo next to the session's store URLs (they are not "embedded": test_config.py
    # shows it); what is under test here is the wiring, so the flag is set on the built Config.
    server = await start_test_server(dataclasses.replace(make_config(), demo=True))
    await server.load(demo_document())
    yield server
    await stop_test_server(server)


async def test_serve_demo_points_the_page_player_and_forms_at_the_stand_ins(demo_server, caplog):
    host = "demo.localhost"
    page = await demo_server.fetch("/", host=host)
    html, csp = page.body.decode(), page.headers["Content-Security-Policy"]
    assert 'data-turnstile-sitekey="demo-sitekey" data-turnstile-script="/_demo/turnstile.js"' in html
    assert "challenges.cloudflare.com" not in csp and "frame-src 'none'" in csp  # same-origin: nothing to admit
    widget = await demo_server.fetch("/_demo/turnstile.js", host=host)
    assert widget.code == 200 and b"window.turnstile" in widget.body
    assert "javascript" in widget.headers["Content-Type"]

    track = "/api/v1/profiles/demo/music/USRC17607839"
    head = await demo_server.fetch(track, host=host, method="HEAD", request_timeout=60)
    assert head.code == 200 and head.headers["X-Track-Artwork"] == ARTWORK
    assert (await demo_server.fetch(ARTWORK, host=host)).code == 200  # same origin as the page
    part = await demo_server.fetch(track, host=host, headers={"Range": "bytes=0-43"})
    assert part.code == 206 and part.body[:4] == b"RIFF" and part.headers["Content-Type"] == "audio/wav"

    token = "demo-pass-" + "0f" * 16
    caplog.set_level(logging.INFO, logger="hepgg.demo")
    sent = await demo_server.fetch(
        "/api/v1/profiles/demo/contact/sms", host=host, json={"message": "hi", "turnstileToken": token}
    )
    assert sent.code == 200 and json.loads(sent.body)["ok"] is True
    assert "demo outbox: sms to +15550100 (2 characters)" in caplog.messages
    again = await demo_server.fetch(
        "/api/v1/profiles/demo/contact/sms", host=host, json={"message": "hi", "turnstileToken": token}
    )
    assert again.code == 400  # single-use, like Cloudflare's tokens


async def test_the_demo_assets_exist_only_in_demo_mode(app_server):
    for path in ("/_demo/turnstile.js", "/_demo/cover.svg", "/_static/demo-turnstile.js"):
        assert (await app_server.fetch(path, host="alice.hep.gg")).code == 404
