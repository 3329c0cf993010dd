"""The demo's local third parties (demo/stand_ins.py) over real sockets: music, siteverify, deliveries."""

from __future__ import annotations

import asyncio
import io
import json
import smtplib
import wave
from email.message import EmailMessage
from urllib.parse import urlencode

import pytest
from tornado.httpclient import AsyncHTTPClient

from demo.stand_ins import SECRET, DemoStandIns
from demo.tones import LENGTH_SECONDS, RATE, track_wav


@pytest.fixture
async def stand_ins():
    demo = await DemoStandIns().start()
    yield demo
    await demo.stop()


async def fetch(url: str, **kwargs):
    return await AsyncHTTPClient().fetch(url, raise_error=False, request_timeout=30, **kwargs)


def test_tones_are_a_real_wav_of_the_stated_length():
    with wave.open(io.BytesIO(track_wav("USRC17607839"))) as audio:
        assert (audio.getnchannels(), audio.getsampwidth(), audio.getframerate()) == (1, 2, RATE)
        assert audio.getnframes() == RATE * LENGTH_SECONDS
        frames = audio.readframes(RATE)
    assert max(frames) > 0 and frames != bytes(len(frames))  # not silence
    assert track_wav("USRC17607839") != track_wav("GBAYE0601498")  # the key follows the ISRC


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
