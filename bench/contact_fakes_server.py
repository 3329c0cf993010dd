"""The contact path's third parties for bench/contact_bench.py, in their own process: the tests' fakes.

    python bench/contact_fakes_server.py   -> prints {"turnstile": URL, "discord": URL, "secret": S} and
                                             serves until stdin closes (or SIGTERM)

Reuses tests/contact_fakes.py (a token starting with "good" passes Turnstile; Discord answers 200), so the
benchmark exercises the same stand-ins the contact tests trust. Recorded requests are dropped as they come
in: a benchmark sends thousands.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from contact_fakes import FakeDiscord, FakeTurnstile


class _Forgetful(list):
    def append(self, item) -> None:  # the benchmark never reads them back
        pass


async def main() -> None:
    turnstile, discord = FakeTurnstile(), FakeDiscord()
    for fake in (turnstile, discord):
        fake.requests = _Forgetful()
        fake.start()
    print(
        json.dumps({"turnstile": turnstile.verify_url, "discord": discord.url, "secret": FakeTurnstile.secret}),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the harness closes our stdin
    for fake in (turnstile, discord):
        await fake.stop()


if __name__ == "__main__":
    asyncio.run(main())
