"""The Discord bot's side during the rehearsal: every user's presence rewritten in turn, with a sequence number.

    python -m deploy.rehearsal.load_publisher --redis-url URL --out publisher.json --seconds 600 \
        --users 100 --interval 2

Writes go through the app's own writer (presence/writer.py: validate, SET with TTL and PUBLISH in one
transaction) on the app's own Redis client, so the rehearsal exercises exactly what the bot does. Each
snapshot is the load test's stamped one (loadtest/sse.py): `seq=N` and the send time in
`activity.details`. A write that fails (a Redis master dying) is retried with the same sequence number
until it succeeds; each user's acknowledged writes are recorded as `[seq, t_sent, t_acknowledged]`, which is
what "the latest presence at the time of a reconnect" is judged against.

It prints `{"ready": true}` once every user has a first snapshot, so listeners never start on an empty key.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from deploy.rehearsal.loadbase import ROOT, Runner, base_parser, run_main

sys.path.insert(0, str(ROOT))

from loadtest.sse import stamped_snapshot
from presence.writer import write_presence
from store.redis_connect import RedisConnector, connect

RETRY_SECONDS = 0.2


class Publisher:
    def __init__(self, args):
        self.args = args
        self.users = [f"{args.slug_prefix}owner-{i}" for i in range(args.users)]
        self.acks: dict[str, list[list[float]]] = {user: [] for user in self.users}
        self.seq = dict.fromkeys(self.users, 0)
        self.failures = 0
        self.failed_since: float | None = None
        self.longest_outage = 0.0
        self.redis: RedisConnector | None = None  # connected in work(): one server or a cluster, as the app does

    def sample(self) -> dict[str, Any]:
        return {"published": sum(len(a) for a in self.acks.values()), "failures": self.failures}

    async def publish(self, user: str, stop: asyncio.Event | None) -> bool:
        """Write the user's next snapshot, retrying until Redis takes it (or the run stops)."""
        seq = self.seq[user] + 1
        while True:
            sent = time.monotonic()
            try:
                assert self.redis is not None  # the client follows a failover (PUBLISH, or SPUBLISH on a cluster)
                await write_presence(self.redis.client, user, stamped_snapshot(time.time(), seq), ttl=self.args.ttl)
            except Exception as exc:
                self.failures += 1
                if self.failed_since is None:
                    self.failed_since = sent
                    print(f"publisher: {user} seq {seq}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                if stop is not None and stop.is_set():
                    return False
                await asyncio.sleep(RETRY_SECONDS)
                continue
            now = time.monotonic()
            if self.failed_since is not None:
                self.longest_outage = max(self.longest_outage, now - self.failed_since)
                self.failed_since = None
            self.seq[user] = seq
            self.acks[user].append([seq, round(sent, 4), round(now, 4)])
            return True

    async def work(self, stop: asyncio.Event) -> None:
        self.redis = await connect(self.args.redis_url)
        for user in self.users:  # everyone has a snapshot before the first listener connects
            await self.publish(user, None)
        print('{"ready": true}', flush=True)
        step = self.args.interval / len(self.users)
        next_at = time.monotonic()
        index = 0
        while not stop.is_set():
            await self.publish(self.users[index % len(self.users)], stop)
            index += 1
            next_at += step
            delay = next_at - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass
        await self.redis.close()


async def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between two writes of one user")
    parser.add_argument("--ttl", type=float, default=300.0)
    parser.add_argument("--slug-prefix", default="rh-")
    args = parser.parse_args()
    publisher = Publisher(args)
    runner = Runner(args, publisher.sample)
    await runner.run(publisher.work)
    runner.write(
        {
            "kind": "publisher",
            "acks": publisher.acks,
            "final": publisher.seq,
            "failures": publisher.failures,
            "longest_outage": round(publisher.longest_outage, 3),
        }
    )


if __name__ == "__main__":
    run_main(main)
