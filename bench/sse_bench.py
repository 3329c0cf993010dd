"""SSE fan-out: our presence stream vs nginx + nchan, same client, same run.

    bench/run --only sse [--quick]

For each target, N and layout ("one": all N streams on one user; "spread": N/10 users x 10 streams) a
fresh server process is started (ours: `serve --processes 1` on the external Redis; nchan: one nginx
worker; both on CPU 0) and the load client (bench/sse_load_client.py, its own process on CPU 1) opens N
streams with 1,000 connects in flight. Measured:
  connect/s        N / time until every response head arrived
  KiB/stream       (server RSS after every stream got its first event - RSS before connecting) / N
  fan-out p50/p99  publish -> receipt at the client (ours: Redis PUBLISH; nchan: POST to its publisher)
  probe max        worst latency of a GET to the same server, issued every 5 ms during the one-user fan-outs
The fd hard limit here is 20,000 per process, so 19,000 streams is the top size.
"""

from __future__ import annotations

import http.client
import json
import random
import subprocess
import threading
import time

import redis

from bench.harness import CLIENT_CPU, PYTHON, ROOT, Stack, free_port, rss_bytes
from bench.results import BenchResult, Figure, Target

PAD = "x" * 150
FANOUT_TARGET = Target(
    "ratio<=",
    1.0,
    "issue 9: one-user 10,000-listener fan-out p99 <= nchan (research: nchan 168 ms, minimal Tornado 611 ms)",
)
KIB_TARGET = Target("<=", 12, "issue 9: 19,000 streams <= 12 KiB each (research: nchan ~10-14.7 KiB)")
CONNECT_TARGET = Target(">=", 5000, "issue 9: >= 5,000 connects/s (research: nchan ~9,900/s, Tornado ~2,400/s)")


class Ours:
    name = "ours"
    health = "/healthz"
    path_format = "/api/v1/profiles/presence/b{}/stream"

    def __init__(self, stack: Stack):
        self.stack = stack
        self.redis = redis.Redis.from_url(stack.redis_url)

    def start(self) -> None:
        self.proc, self.port = self.stack.hepgg("--sse-max-streams", "19990", name="hepgg-sse")
        time.sleep(0.5)

    def publish(self, user: int, payload: str) -> None:
        self.redis.publish(f"presence:b{user}", payload)

    def stop(self) -> None:
        self.stack.stop(self.proc)


class Nchan:
    name = "nchan"
    health = "/health"
    path_format = "/sub/b{}"

    def __init__(self, stack: Stack):
        self.stack = stack

    def start(self) -> None:
        self.port = free_port()
        self.proc = self.stack.nginx(
            "nchan",
            f"""
  server {{
    listen 127.0.0.1:{self.port} backlog=4096;
    location ~ ^/sub/(\\w+)$ {{ nchan_subscriber eventsource; nchan_channel_id $1; nchan_subscriber_first_message newest; }}
    location ~ ^/pub/(\\w+)$ {{ nchan_publisher; nchan_channel_id $1; nchan_message_buffer_length 1; }}
    location = /health {{ return 200 "ok"; }}
  }}""",
            nchan=True,
            health="/health",
            port=self.port,
        )
        self._pub = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def publish(self, user: int, payload: str) -> None:
        self._pub.request("POST", f"/pub/b{user}", body=payload, headers={"Content-Type": "application/json"})
        self._pub.getresponse().read()

    def stop(self) -> None:
        self._pub.close()
        self.stack.stop(self.proc)


class Client:
    """bench/sse_load_client.py: its own process (the fd limit is per process), JSON-line commands."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.proc = stack.spawn(
            "sse-client",
            [PYTHON, str(ROOT / "bench" / "sse_load_client.py")],
            cpu=CLIENT_CPU,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def call(self, **command) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the SSE load client died: {self.stack.log_tail('sse-client')}")
        return json.loads(line)

    def stop(self) -> None:
        self.stack.stop(self.proc)


def payload(seq: int) -> str:
    return json.dumps(
        {"status": "online", "activity": {"name": "bench", "type": 0, "details": PAD}, "seq": seq, "t": time.time_ns()},
        separators=(",", ":"),
    )


class Probe(threading.Thread):
    """GET the server every 5 ms and keep the worst latency: does a fan-out stall other requests?"""

    def __init__(self, port: int, path: str):
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.samples: list[float] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop_flag.is_set():
            started = time.perf_counter()
            conn.request("GET", self.path)
            conn.getresponse().read()
            self.samples.append((time.perf_counter() - started) * 1000)
            time.sleep(0.005)
        conn.close()


def scenario(target, client: Client, n: int, layout: str, events: int, spread_events: int) -> dict:
    users = 1 if layout == "one" else max(1, n // 10)
    target.start()
    try:
        pid = target.proc.pid
        before = rss_bytes(pid)
        connect = client.call(
            cmd="connect", port=target.port, path_format=target.path_format, users=users, n=n, inflight=1000
        )
        time.sleep(0.3)
        for user in range(users):  # the first event on every stream
            target.publish(user, payload(0))
        client.call(cmd="wait", count=connect["connected"], timeout=60)
        time.sleep(0.5)
        after = rss_bytes(pid)
        client.call(cmd="stats")  # reset
        probe = None
        if layout == "one":
            probe = Probe(target.port, target.health)
            probe.start()
            for seq in range(1, events + 1):
                target.publish(0, payload(seq))
                client.call(cmd="wait", count=seq * connect["connected"], timeout=30)
                time.sleep(0.2)
            probe.stop_flag.set()
            probe.join()
        else:
            for seq in range(1, spread_events + 1):
                target.publish(random.randrange(users), payload(seq))
                time.sleep(0.003)
            client.call(cmd="wait", count=spread_events * (connect["connected"] // users), timeout=30)
        stats = client.call(cmd="stats")
        client.call(cmd="close")
        row = {
            "target": target.name,
            "n": n,
            "layout": layout,
            "connected": connect["connected"],
            "failed": connect["failed"],
            "connect_per_s": connect["per_second"],
            "kib_per_stream": (after - before) / 1024 / max(1, connect["connected"]),
            "rss_before_mib": before / 2**20,
            "rss_after_mib": after / 2**20,
            "fanout_p50_ms": stats["p50_ms"],
            "fanout_p99_ms": stats["p99_ms"],
            "fanout_max_ms": stats["max_ms"],
            "deliveries": stats["n"],
        }
        if probe and probe.samples:
            row["probe_max_ms"] = max(probe.samples)
        return row
    finally:
        target.stop()
        time.sleep(0.5)


def run(stack: Stack, quick: bool) -> BenchResult:
    one_sizes = [500, 2000] if quick else [1000, 5000, 10000, 19000]
    spread_sizes = [1000] if quick else [1000, 10000]
    events, spread_events = (3, 100) if quick else (5, 300)
    client = Client(stack)
    rows = []
    try:
        plan = [(n, "one") for n in one_sizes] + [(n, "spread") for n in spread_sizes]
        for n, layout in plan:
            for target in (Ours(stack), Nchan(stack)):
                row = scenario(target, client, n, layout, events, spread_events)
                rows.append(row)
                print(
                    f"   sse {row['target']} n={n} {layout}: connect/s {row['connect_per_s']:.0f}, "
                    f"p99 {row['fanout_p99_ms']} ms, {row['kib_per_stream']:.1f} KiB/stream",
                    flush=True,
                )
    finally:
        client.stop()
    return summarize(rows, one_sizes, spread_sizes)


def pick_target_size(sizes: list[int], wanted: int) -> int:
    """The size a target is judged at: the one the issue names, else the largest run (quick mode)."""
    return wanted if wanted in sizes else max(s for s in sizes if s <= wanted) if min(sizes) <= wanted else sizes[0]


def summarize(rows: list[dict], one_sizes: list[int], spread_sizes: list[int]) -> BenchResult:
    result = BenchResult("sse")
    by = {(r["target"], r["n"], r["layout"]): r for r in rows}
    fanout_at, top = pick_target_size(one_sizes, 10000), max(one_sizes)
    for n in one_sizes:
        ours, peer = by[("ours", n, "one")], by[("nchan", n, "one")]
        size = f"{n} streams, one user"
        result.figures.append(
            Figure("sse", "fan-out p50", size, "ms", ours["fanout_p50_ms"], peer["fanout_p50_ms"], "nginx+nchan")
        )
        result.figures.append(
            Figure(
                "sse",
                "fan-out p99",
                size,
                "ms",
                ours["fanout_p99_ms"],
                peer["fanout_p99_ms"],
                "nginx+nchan",
                FANOUT_TARGET if n == fanout_at else None,
            )
        )
        result.figures.append(
            Figure(
                "sse",
                "connect rate",
                size,
                "conn/s",
                ours["connect_per_s"],
                peer["connect_per_s"],
                "nginx+nchan",
                CONNECT_TARGET if n == top else None,
            )
        )
        result.figures.append(
            Figure(
                "sse",
                "RSS per stream",
                size,
                "KiB",
                ours["kib_per_stream"],
                peer["kib_per_stream"],
                "nginx+nchan",
                KIB_TARGET if n == top else None,
            )
        )
        result.figures.append(
            Figure(
                "sse",
                "streams held",
                size,
                "streams",
                ours["connected"],
                peer["connected"],
                "nginx+nchan",
                note=f"failed {ours['failed']}",
            )
        )
        result.figures.append(
            Figure(
                "sse",
                "probe GET max during fan-out",
                size,
                "ms",
                ours.get("probe_max_ms"),
                peer.get("probe_max_ms"),
                "nginx+nchan",
            )
        )
    for n in spread_sizes:
        ours, peer = by[("ours", n, "spread")], by[("nchan", n, "spread")]
        size = f"{n} streams, {n // 10} users x 10"
        result.figures.append(
            Figure("sse", "fan-out p50", size, "ms", ours["fanout_p50_ms"], peer["fanout_p50_ms"], "nginx+nchan")
        )
        result.figures.append(
            Figure("sse", "fan-out p99", size, "ms", ours["fanout_p99_ms"], peer["fanout_p99_ms"], "nginx+nchan")
        )
    one = [r for r in rows if r["layout"] == "one"]
    result.series = {
        "fanout_p99": {
            label: [(r["n"], r["fanout_p99_ms"]) for r in one if r["target"] == key]
            for key, label in (("ours", "ours (1 process)"), ("nchan", "nginx+nchan (1 worker)"))
        },
        "rss": {
            label: [(r["n"], r["rss_after_mib"]) for r in one if r["target"] == key]
            for key, label in (("ours", "ours (1 process)"), ("nchan", "nginx+nchan (1 worker)"))
        },
        "rows": rows,
    }
    return result


if __name__ == "__main__":  # runnable alone: python -m bench.sse_bench [--quick]
    import sys

    from bench.suite import main

    sys.exit(main(["--only", "sse", *sys.argv[1:]]))
