"""A/B: the hub's hand-written pub/sub client (presence/pubsub.py) against redis-py's asyncio PubSub.

    bench/run --only pubsub            (or: python -m bench.pubsub_ab [--quick])

Both run in the same run, on the same Redis, each in its own process pinned to CPU 0 (Redis, the publisher
and this harness on CPU 1), doing what the presence hub does with a pub/sub connection:

1. subscribe: SUBSCRIBE N channels (batches of 1,000 per command for both) and read every confirmation;
   seconds and CPU seconds until the last one.
2. dispatch: the harness PUBLISHes M messages (a 200-byte snapshot each) over those channels as fast as
   Redis takes them; each client hands every message to a callback that finds its channel in a dict (the
   hub's first step). Messages/s from first to last, and CPU microseconds per message (the figure that
   does not depend on the publisher's pace).
3. reconnect: the harness kills the clients' connections (CLIENT KILL TYPE pubsub); seconds from the
   kill until all N subscriptions are confirmed again, and whether the client *told its owner* the
   connection was lost (the hub must resend every stream a snapshot after a gap).

On a Redis Cluster (3 masters + 3 replicas, tests/redis_topologies.py) the same with sharded pub/sub:
ours opens one connection per master and sends SSUBSCRIBE batches grouped by slot to the slot's owner;
redis-py's `ClusterPubSub.ssubscribe(*channels)` and `get_sharded_message()` (its documented API).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from redis.exceptions import RedisError

from presence.pubsub import PubSubConnection

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PAYLOAD = json.dumps(
    {
        "status": "online",
        "activity": {"name": "Some Game", "type": 0, "details": "In a match", "state": "Ranked", "startedAt": 1},
        "updatedAt": "2026-01-01T00:00:00.000Z",
        "pad": "x" * 40,
    },
    separators=(",", ":"),
).encode()
BATCH = 1000
DEADLINE = 60.0  # seconds any phase may take before the worker gives up


def channel_names(count: int) -> list[bytes]:
    return [b"presence:%d" % i for i in range(count)]


def cpu_now() -> float:
    return time.process_time()


# ------------------------------------------------------------------------------------------------ workers
# A worker is one client under test in its own process. The harness talks to it with lines on stdin/stdout.


class Counter:
    """What every client feeds: confirmations and messages, with the times the harness asks about."""

    def __init__(self, channels: list[bytes]):
        self.known = dict.fromkeys(channels, 0)  # the hub's channel lookup
        self.confirmed = 0
        self.messages = 0
        self.first_message = 0.0
        self.last_message = 0.0
        self.lost = 0  # connection losses the client reported to us
        self.changed = asyncio.Event()

    def on_confirm(self) -> None:
        self.confirmed += 1
        if self.confirmed % BATCH == 0:
            self.changed.set()

    def on_message(self, channel: bytes, data: bytes) -> None:
        if channel in self.known:
            self.known[channel] += 1
            now = time.monotonic()
            if not self.messages:
                self.first_message = now
            self.last_message = now
            self.messages += 1
            if self.messages % 1000 == 0:
                self.changed.set()

    async def wait(self, predicate, what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not predicate():
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 0.05)
            except TimeoutError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not done within {DEADLINE:.0f}s")


class OursSingle:
    """presence/pubsub.py as the hub uses it: pipelined batches, replies parsed in bulk, its own reconnect."""

    def __init__(self, url: str, channels: list[bytes], counter: Counter, sharded: bool = False):
        self.make = lambda: PubSubConnection(redis_connection(url))
        self.channels = channels
        self.counter = counter
        self.command = b"SSUBSCRIBE" if sharded else b"SUBSCRIBE"
        self.kinds_confirm = (b"subscribe", b"ssubscribe")
        self.kinds_message = (b"message", b"smessage")
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        conn = self.make()
        await conn.connect()
        self.task = asyncio.create_task(self._run(conn))

    def _subscribe_all(self, conn) -> None:
        from presence.pubsub import pack

        for start in range(0, len(self.channels), BATCH):
            conn.send(pack(self.command, *self.channels[start : start + BATCH]))

    async def _run(self, conn) -> None:
        from presence.pubsub import PubSubError

        counter = self.counter
        while True:
            self._subscribe_all(conn)
            try:
                while True:
                    for reply in await conn.read_replies():
                        kind = reply[0]
                        if kind in self.kinds_message:
                            counter.on_message(reply[1], reply[2])
                        elif kind in self.kinds_confirm:
                            counter.on_confirm()
            except (OSError, PubSubError):
                counter.lost += 1
                conn.close()
            while True:
                conn = self.make()
                try:
                    await conn.connect()
                    break
                except OSError:
                    await asyncio.sleep(0.05)


class OursCluster:
    """One presence/pubsub.py connection per master, SSUBSCRIBE batches grouped by slot to the slot's owner."""

    def __init__(self, url: str, channels: list[bytes], counter: Counter):
        self.url = url
        self.channels = channels
        self.counter = counter
        self.shards: list[OursSingle] = []

    async def start(self) -> None:
        from redis.crc import key_slot

        seed = PubSubConnection(redis_connection(self.url))
        await seed.connect()
        slots = await seed.call("CLUSTER", "SLOTS")
        seed.close()
        owner_of = [None] * 16384
        for low, high, master, *_ in slots:
            address = (master[0].decode(), int(master[1]))
            for slot in range(low, high + 1):
                owner_of[slot] = address
        by_owner: dict[tuple, dict[int, list[bytes]]] = defaultdict(lambda: defaultdict(list))
        for name in self.channels:
            slot = key_slot(name)
            by_owner[owner_of[slot]][slot].append(name)
        for (host, port), by_slot in by_owner.items():
            shard = OursSingle(f"redis://{host}:{port}", [], self.counter, sharded=True)
            # One SSUBSCRIBE may name channels of one slot only: send each slot's channels as their own command.
            shard.slot_groups = list(by_slot.values())
            shard._subscribe_all = _grouped_subscribe(shard)
            await shard.start()
            self.shards.append(shard)


def redis_connection(url: str):
    """What the hub's connector hands presence/pubsub.py: a redis-py connection, RESP2, not yet connected."""
    from redis.asyncio.connection import Connection, parse_url

    params = {k: v for k, v in parse_url(url).items() if k != "connection_class"}
    return Connection(**params, protocol=2)


def _grouped_subscribe(shard: OursSingle):
    from presence.pubsub import pack

    def subscribe_all(conn) -> None:
        # Many slots, one write: the commands are joined before they reach the socket.
        conn.send(b"".join(pack(b"SSUBSCRIBE", *group) for group in shard.slot_groups))

    return subscribe_all


class RedisPySingle:
    """redis-py's asyncio PubSub: subscribe() in batches of 1,000, messages read with listen()."""

    def __init__(self, url: str, channels: list[bytes], counter: Counter):
        import redis.asyncio as aioredis
        from redis.asyncio.client import PubSub

        class ToldPubSub(PubSub):
            async def on_connect(self, connection):  # the only way to learn of a reconnect: its callback
                if self.channels:
                    counter.lost += 1
                await super().on_connect(connection)

        self.client = aioredis.Redis.from_url(url)
        self.pubsub = ToldPubSub(self.client.connection_pool)
        self.channels = channels
        self.counter = counter

    async def start(self) -> None:
        for start in range(0, len(self.channels), BATCH):
            await self.pubsub.subscribe(*self.channels[start : start + BATCH])
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        counter = self.counter
        while True:
            try:
                async for message in self.pubsub.listen():
                    kind = message["type"]
                    if kind == "message":
                        counter.on_message(message["channel"], message["data"])
                    elif kind == "subscribe":
                        counter.on_confirm()
            except (OSError, RedisError) as exc:  # listen() raises when the connection is lost: listen again
                counter.lost += 1
                print(json.dumps({"note": f"redis-py listen ended: {exc!r}"}), file=sys.stderr)
                await asyncio.sleep(0.05)


class RedisPyCluster:
    """redis-py's ClusterPubSub: ssubscribe(*channels), messages read with get_sharded_message()."""

    POLL = 0.01  # get_sharded_message polls the nodes round-robin, each for up to this long

    def __init__(self, url: str, channels: list[bytes], counter: Counter):
        from redis.asyncio.cluster import RedisCluster

        self.cluster = RedisCluster.from_url(url)
        self.channels = channels
        self.counter = counter

    async def start(self) -> None:
        await self.cluster.initialize()
        self.pubsub = self.cluster.pubsub()
        await self.pubsub.ssubscribe(*self.channels)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        counter = self.counter
        while True:
            try:
                message = await self.pubsub.get_sharded_message(timeout=self.POLL)
            except (OSError, RedisError) as exc:
                counter.lost += 1
                print(json.dumps({"note": f"redis-py get_sharded_message: {exc!r}"}), file=sys.stderr)
                await asyncio.sleep(0.05)
                continue
            if message is None:
                continue
            kind = message["type"]
            if kind == "smessage":
                counter.on_message(message["channel"], message["data"])
            elif kind == "ssubscribe":
                counter.on_confirm()


CLIENTS = {
    ("ours", "single"): OursSingle,
    ("ours", "cluster"): OursCluster,
    ("redis-py", "single"): RedisPySingle,
    ("redis-py", "cluster"): RedisPyCluster,
}


async def worker(client: str, mode: str, url: str, channel_count: int, messages: int) -> None:
    channels = channel_names(channel_count)
    counter = Counter(channels)
    loop = asyncio.get_running_loop()

    def say(**fields) -> None:
        print(json.dumps(fields), flush=True)

    async def command() -> str:
        return (await loop.run_in_executor(None, sys.stdin.readline)).strip()

    started, cpu = time.monotonic(), cpu_now()
    impl = CLIENTS[(client, mode)](url, channels, counter)
    await impl.start()
    await counter.wait(lambda: counter.confirmed >= channel_count, "subscribe")
    say(phase="subscribed", seconds=time.monotonic() - started, cpu=cpu_now() - cpu)

    assert await command() == "publish"
    cpu = cpu_now()
    say(phase="ready")
    await counter.wait(lambda: counter.messages >= messages, "dispatch")
    say(
        phase="dispatched",
        seconds=counter.last_message - counter.first_message,
        cpu=cpu_now() - cpu,
        received=counter.messages,
    )

    assert await command() == "kill"
    counter.confirmed = 0
    lost_before = counter.lost
    say(phase="ready")
    await counter.wait(lambda: counter.confirmed >= channel_count, "resubscribe")
    say(phase="resubscribed", at=time.time(), told=counter.lost > lost_before)
    assert await command() == "probe"
    before = counter.messages
    say(phase="ready")
    await counter.wait(lambda: counter.messages >= before + channel_count, "probe after reconnect")
    say(phase="probed", at=time.time())


# ------------------------------------------------------------------------------------------------ harness


class Publisher:
    """PUBLISH (or SPUBLISH to each channel's owner) in pipelined batches, from the harness process."""

    def __init__(self, url: str, mode: str, channels: list[bytes]):
        import redis

        self.mode = mode
        self.channels = channels
        if mode == "single":
            self.routes = {None: (redis.Redis.from_url(url), channels)}
        else:
            from redis.crc import key_slot

            seed = redis.Connection(**redis.connection.parse_url(url), decode_responses=True)
            seed.send_command("CLUSTER", "SLOTS")  # raw reply: redis-py's client would reshape it
            owner_of = {}
            for low, high, master, *_ in seed.read_response():
                for slot in range(low, high + 1):
                    owner_of[slot] = (master[0], int(master[1]))
            seed.disconnect()
            grouped: dict[tuple, list[bytes]] = defaultdict(list)
            for name in channels:
                grouped[owner_of[key_slot(name)]].append(name)
            self.routes = {
                owner: (redis.Redis(host=owner[0], port=owner[1]), names) for owner, names in grouped.items()
            }

    def publish(self, count: int) -> None:
        """`count` messages, spread evenly over every channel."""
        command = "PUBLISH" if self.mode == "single" else "SPUBLISH"
        routes = list(self.routes.values())
        for index, (client, names) in enumerate(routes):
            per_route = count // len(routes) + (1 if index < count % len(routes) else 0)
            sent = 0
            while sent < per_route:
                pipe = client.pipeline(transaction=False)
                for i in range(sent, min(per_route, sent + BATCH)):
                    pipe.execute_command(command, names[i % len(names)], PAYLOAD)
                pipe.execute()
                sent = min(per_route, sent + BATCH)

    def once_each(self) -> None:
        command = "PUBLISH" if self.mode == "single" else "SPUBLISH"
        for client, names in self.routes.values():
            for start in range(0, len(names), BATCH):
                pipe = client.pipeline(transaction=False)
                for name in names[start : start + BATCH]:
                    pipe.execute_command(command, name, PAYLOAD)
                pipe.execute()

    def kill_subscribers(self, masters: list[tuple[str, int]]) -> None:
        import redis

        for host, port in masters:
            client = redis.Redis(host=host, port=port)
            client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            client.close()

    def close(self) -> None:
        for client, _ in self.routes.values():
            client.close()


def measure(client: str, mode: str, url: str, masters: list[tuple[str, int]], channels: int, messages: int) -> dict:
    from bench.harness import SERVER_CPU, child_setup

    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.pubsub_ab", "--worker", client, mode, url, str(channels), str(messages)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=child_setup(SERVER_CPU),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    publisher = Publisher(url, mode, channel_names(channels))

    def read() -> dict:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{client} ({mode}) worker exited with {proc.wait(10)}")
        return json.loads(line)

    def send(word: str) -> None:
        proc.stdin.write(word + "\n")
        proc.stdin.flush()

    try:
        subscribed = read()
        send("publish")
        read()  # ready
        publisher.publish(messages)
        dispatched = read()
        send("kill")
        read()  # ready
        killed_at = time.time()
        publisher.kill_subscribers(masters)
        resubscribed = read()
        send("probe")
        read()  # ready
        publisher.once_each()
        probed = read()
    finally:
        publisher.close()
        proc.stdin.close()
        proc.kill()
        proc.wait()
        proc.stdout.close()
    return {
        "client": client,
        "mode": mode,
        "channels": channels,
        "subscribe_s": subscribed["seconds"],
        "subscribe_cpu_s": subscribed["cpu"],
        "messages": dispatched["received"],
        "dispatch_msg_s": dispatched["received"] / max(dispatched["seconds"], 1e-9),
        "cpu_us_per_msg": dispatched["cpu"] / dispatched["received"] * 1e6,
        "resubscribe_s": resubscribed["at"] - killed_at,
        "told_of_loss": resubscribed["told"],
        "flowing_again_s": probed["at"] - killed_at,
    }


def measure_or_failure(client: str, mode: str, *args) -> dict:
    """`measure`, or a row saying how the client failed: a client the server disconnects (redis-py's
    ClusterPubSub did so under load, before its messages had arrived) is a finding, not the end of the run."""
    try:
        return measure(client, mode, *args)
    except Exception as exc:
        return {"client": client, "mode": mode, "failed": f"{type(exc).__name__}: {exc}"[:200]}


def _pin_to_client_cpu(pids: list[int]) -> None:
    from bench.harness import CLIENT_CPU

    if (os.cpu_count() or 1) > 1:
        for pid in pids:
            os.sched_setaffinity(pid, {CLIENT_CPU})


def run(stack, quick: bool):
    """bench/run entry point: both clients on a single Redis, then on a 3+3 cluster; ratios ours/redis-py."""
    import redis

    from bench.results import BenchResult, Figure

    sys.path.insert(0, str(ROOT / "tests"))
    from redis_topologies import RedisClusterTopology

    channels = 2000 if quick else 20000
    messages = 20000 if quick else 200000
    result = BenchResult("pubsub")
    rows = []
    single_url = stack.redis_url.rsplit("/", 1)[0]
    single = redis.Redis.from_url(single_url)
    single_address = (
        single.connection_pool.connection_kwargs["host"],
        single.connection_pool.connection_kwargs["port"],
    )
    single.close()
    for client in ("ours", "redis-py"):
        rows.append(measure_or_failure(client, "single", single_url, [single_address], channels, messages))
    cluster = RedisClusterTopology(stack.tmp / "cluster")
    try:
        cluster.start()
        _pin_to_client_cpu([node.proc.pid for node in cluster.nodes])
        masters = [(node.host, node.port) for node in cluster.masters()]
        for client in ("ours", "redis-py"):
            rows.append(measure_or_failure(client, "cluster", cluster.url, masters, channels, messages))
    finally:
        cluster.stop()
    result.series["rows"] = rows
    by = {(r["client"], r["mode"]): r for r in rows}
    for mode, label in (("single", "single Redis"), ("cluster", "cluster 3+3, sharded")):
        ours, peer = by[("ours", mode)], by[("redis-py", mode)]
        size = f"{label}, {channels} channels"
        failures = "; ".join(f"{r['client']} failed: {r['failed']}" for r in (ours, peer) if "failed" in r)
        for metric, unit, key in (
            ("subscribe all", "s", "subscribe_s"),
            ("subscribe CPU", "s", "subscribe_cpu_s"),
            ("dispatch", "msg/s", "dispatch_msg_s"),
            ("CPU per message", "us", "cpu_us_per_msg"),
            ("resubscribed after a kill", "s", "resubscribe_s"),
            ("messages flow again after a kill", "s", "flowing_again_s"),
        ):
            result.figures.append(
                Figure("pubsub", metric, size, unit, ours.get(key), peer.get(key), "redis-py PubSub", note=failures)
            )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", nargs=5, metavar=("CLIENT", "MODE", "URL", "CHANNELS", "MESSAGES"))
    args = parser.parse_args()
    if args.worker:
        client, mode, url, channels, messages = args.worker
        asyncio.run(worker(client, mode, url, int(channels), int(messages)))
        return 0
    from bench.harness import Stack
    from bench.results import table

    with Stack() as stack:
        result = run(stack, args.quick)
    print(table([result]))
    print(json.dumps(result.series["rows"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
