"""The third parties, as one process of their own: the suite's fakes (tests/contact_fakes.py) and music worker.

    python -m deploy.rehearsal.thirdparty --host 10.213.0.1 --counts FILE
        prints {"turnstile": URL, "sms": URL, "smtp_port": P, "discord": URL, "music": URL} and serves until
        SIGTERM/SIGINT (or --seconds), then writes what each fake delivered to FILE

Deliveries are counted by recipient (the SMS key in the Authorization header, the mail recipient, the Discord
channel), so the rehearsal can hold each owner's spent credits against what reached that owner.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from contact_fakes import FakeDiscord, FakeSms, FakeSmtp, FakeTurnstile  # noqa: E402
from music_upstream import Upstream  # noqa: E402

TRACK_BYTES = 300_000  # a 7.5 s track at 320 kbit/s


class Tally(list):
    """Keeps counts by recipient instead of every request (thousands of sends)."""

    def __init__(self, key):
        super().__init__()
        self.key = key
        self.counts: collections.Counter[str] = collections.Counter()
        self.total = 0

    def append(self, item) -> None:
        self.total += 1
        self.counts[self.key(item)] += 1


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--counts", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=3600.0, help="stop after this long at the latest")
    args = parser.parse_args()

    turnstile, sms, discord = FakeTurnstile(), FakeSms(), FakeDiscord()
    turnstile.requests = Tally(lambda r: "verify")
    sms.requests = Tally(lambda r: r.headers.get("Authorization", "").removeprefix("Bearer "))
    discord.requests = Tally(lambda r: r.path.split("/")[2])
    smtp = FakeSmtp(host=args.host)
    smtp.messages = Tally(lambda envelope: ",".join(envelope.rcpt_tos))
    upstream = Upstream(host=args.host, body=bytes(range(256)) * (TRACK_BYTES // 256))
    upstream.requests = Tally(lambda r: r["method"])
    for fake in (turnstile, sms, discord):
        fake.start(args.host)
    smtp.start()
    upstream.start()
    print(
        json.dumps(
            {
                "turnstile": turnstile.verify_url,
                "turnstile_secret": FakeTurnstile.secret,
                "sms": sms.url,
                "smtp_port": smtp.port,
                "discord": discord.url,
                "music": upstream.url,
                "track_bytes": len(upstream.body),
            }
        ),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.seconds)
    except TimeoutError:
        pass
    counts = {
        "turnstile": turnstile.requests.total,
        "sms": dict(sms.requests.counts),
        "email": dict(smtp.messages.counts),
        "discord": dict(discord.requests.counts),
        "music_requests": dict(upstream.requests.counts),
    }
    args.counts.write_text(json.dumps(counts))
    smtp.stop()
    for fake in (turnstile, sms, discord):
        await fake.stop()
    await upstream.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
