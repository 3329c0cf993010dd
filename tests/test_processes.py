"""--processes N: forked workers on one socket, embedded stores started once, metrics summed."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from datetime import UTC

import pytest
from test_cli import _get, _views_flushed, _wait_dead

from conftest import ROOT, free_port, run_cli, wait_until, wait_until_serving

pytestmark = pytest.mark.slow


async def test_forked_workers_share_one_socket_and_stores(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEPGG_", "PROMETHEUS_"))}
    log_path = tmp_path / "server.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "hepgg_server.py"),
            "serve",
            "--processes",
            "2",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=ROOT,
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        # "worker <pid> ready", not the render pools' "OG render pool ready" logged before it: a worker listens
        # only once it is ready (runtime/listen.py), so until then a connect is refused.
        workers_ready = re.compile(r"worker \d+ ready")
        await wait_until(lambda: len(workers_ready.findall(log_path.read_text())) == 2, timeout=60)
        assert _get(port, "/healthz", "localhost")[0] == 200
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        # 2 workers + 2 embedded servers are children of the supervisor (render workers are the workers')
        assert len(children) == 4
        assert run_cli("seed-demo", "--data-dir", str(tmp_path / "data")).returncode == 0
        for i in range(20):  # distinct visitors; SO_REUSEPORT spreads them over both workers
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/",
                headers={"Host": "demo.localhost", "User-Agent": f"Mozilla/5.0 visitor-{i}"},
            )
            assert urllib.request.urlopen(request, timeout=10).status == 200
        await wait_until(lambda: _views_flushed(port) >= 20)  # summed over the workers
        assert _views_flushed(port) == 20
        log = log_path.read_text()
        served_by = {line.split("[")[1].split("]")[0] for line in log.splitlines() if "200 GET demo.localhost/" in line}
        assert len(served_by) == 2, "both workers should have served visitors"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()
    assert await _wait_dead([int(pid) for pid in children])


async def test_view_dedup_and_reconciler_lock_are_global_across_servers(make_server):
    from datetime import datetime

    from runtime.reconciler import ReconcilerBusy, run_once
    from store.stats import read_stats

    from conftest import base_document

    first = await make_server(reconcile_interval=0)
    second = await make_server(reconcile_interval=0, mongo_db=first.config.mongo_db)
    await first.load(base_document())
    headers = {"User-Agent": "Mozilla/5.0 same visitor"}
    assert (await first.fetch("/", host="alice.hep.gg", headers=headers)).code == 200
    assert (await second.fetch("/", host="alice.hep.gg", headers=headers)).code == 200
    await first.services.stats.flush()
    await second.services.stats.flush()
    assert (await read_stats(first.services.db, "p1"))["views"] == 1

    await first.services.redis.client.set("hepgg:{reconciler}:lock", "held-by-first", px=5000)
    try:
        await run_once(second.services.db, second.services.redis.client, datetime.now(UTC))
        raise AssertionError("the second server ran while the first held the lock")
    except ReconcilerBusy:
        pass


class ServeProcess:
    """`hepgg_server.py serve` on shared external stores, as one replica of a deployment."""

    def __init__(self, store_urls, tmp_path, name: str, **options: str):
        self.port = free_port()
        self.log_path = tmp_path / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HEPGG_", "PROMETHEUS_"))}
        env.update(
            HEPGG_MONGO_URI=store_urls.mongo_uri,
            HEPGG_REDIS_URL=store_urls.redis_url,
            HEPGG_MONGO_DB=f"shared_{tmp_path.name}",
            HEPGG_PORT=str(self.port),
            HEPGG_LOG_LEVEL="warning",
        )
        env.update({f"HEPGG_{k.upper()}": v for k, v in options.items()})
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "hepgg_server.py"), "serve"],
            cwd=ROOT,
            env=env,
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
        )
        wait_until_serving(self.proc, self.port)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


async def test_sigterm_under_sse_load_every_listener_reconnects_and_misses_nothing(store_urls, tmp_path, clean_redis):
    import asyncio

    import redis.asyncio as aioredis

    from presence.writer import write_presence

    from presence_client import SSEClient

    first = ServeProcess(store_urls, tmp_path, "first", shutdown_grace="2")
    second = ServeProcess(store_urls, tmp_path, "second")
    redis = aioredis.Redis.from_url(store_urls.redis_url, decode_responses=True)
    path = "/api/v1/profiles/presence/owner-1/stream"
    try:
        await write_presence(redis, "owner-1", {"status": "online"})
        listeners = [await SSEClient.open(first.port, path) for _ in range(40)]
        assert {(await c.event())["status"] for c in listeners} == {"online"}

        stopping = asyncio.get_running_loop().run_in_executor(None, first.stop)
        # Each listener is told when to come back and then closed: the browser's EventSource would reconnect.
        retry_hints = []  # the last hint each listener got before its stream ended
        for client in listeners:
            while (block := await client.block(10)) is not None:
                if block.startswith("retry:"):
                    client.retry = int(block.split(":", 1)[1])
            retry_hints.append(client.retry)
        assert all(hint is not None and 500 <= hint <= 6000 for hint in retry_hints)
        # A change made while they were away...
        await write_presence(redis, "owner-1", {"status": "dnd"})
        # ...is the first thing each one gets from the other replica.
        reconnected = [await SSEClient.open(second.port, path) for _ in listeners]
        assert [(await c.event())["status"] for c in reconnected] == ["dnd"] * len(listeners)
        await write_presence(redis, "owner-1", {"status": "idle"})
        assert [(await c.event())["status"] for c in reconnected] == ["idle"] * len(listeners)
        assert await stopping == 0  # the stopped replica exited cleanly
        for client in listeners + reconnected:
            client.close()
    finally:
        await redis.aclose()
        if first.proc.poll() is None:
            first.stop()
        assert second.stop() == 0


async def test_presence_set_reaches_listeners_on_every_server(make_server):
    from presence.writer import write_presence

    from presence_client import SSEClient

    servers = [await make_server(), await make_server()]
    path = "/api/v1/profiles/presence/owner-2/stream"
    clients = [await SSEClient.open(server.port, path) for server in servers for _ in range(3)]
    assert [await c.event() for c in clients] == [None] * 6
    await write_presence(servers[0].services.redis.client, "owner-2", {"status": "idle"})
    assert [(await c.event())["status"] for c in clients] == ["idle"] * 6
    for client in clients:
        client.close()


def _refused(port: int) -> bool:
    """True if a connect to the port is refused; False if it is accepted (whether or not anyone serves it)
    or hangs."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


async def test_connects_are_refused_until_a_worker_is_ready_and_from_the_moment_of_sigterm(
    private_stores, upstream, tmp_path
):
    """In front of replicas, a proxy sends a request to whatever accepts its connect (runtime/listen.py):
    a replica must not accept before it can serve, nor while it drains after SIGTERM."""
    import asyncio
    import json

    from conftest import base_document

    upstream.mode = "stream"  # a track that never ends: the music drain keeps the replica stopping for its grace
    document = tmp_path / "doc.json"
    document.write_text(json.dumps(base_document()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEPGG_", "PROMETHEUS_"))}
    env.update(
        HEPGG_MONGO_URI=private_stores.mongo_uri,
        HEPGG_REDIS_URL=private_stores.redis_url,
        HEPGG_MUSIC_UPSTREAM_URL=upstream.url,
        HEPGG_SHUTDOWN_GRACE="6",
        HEPGG_LOG_LEVEL="info",
    )
    assert (await asyncio.to_thread(run_cli, "import", str(document), env=env)).returncode == 0
    port = free_port()
    log_path = tmp_path / "serve.log"
    private_stores.mongo.pause()  # the workers cannot finish starting: they wait for MongoDB
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "hepgg_server.py"), "serve", "--processes", "2", "--port", str(port)],
        cwd=ROOT,
        env={**env, "HEPGG_PROCESSES": "2"},
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    listener = None
    try:

        def bound() -> bool:  # the port is taken
            assert proc.poll() is None, log_path.read_text()
            return f":{port} (embedded stores" in log_path.read_text()

        await wait_until(bound, timeout=60, interval=0.1, message="serve did not bind its port")
        for _ in range(5):  # bound, workers started, none ready: every connect is refused
            assert await asyncio.to_thread(_refused, port), "a worker that is not ready accepted a connection"
            await asyncio.sleep(0.3)
        private_stores.mongo.resume()
        await asyncio.to_thread(wait_until_serving, proc, port, "/readyz")

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/v1/profiles/p1/music/USRC17607839 HTTP/1.1\r\nHost: alice.hep.gg\r\n\r\n")
        assert b" 200 " in await asyncio.wait_for(reader.readline(), 10)
        listener = writer  # reads no further: its stream stays open through the drain
        proc.send_signal(signal.SIGTERM)
        await wait_until(
            lambda: asyncio.to_thread(_refused, port),
            timeout=3,
            interval=0,
            message="a stopping server accepted new connections",
        )
        assert proc.poll() is None, "the server should still be draining the music stream (grace 6 s)"
    finally:
        if listener is not None:
            listener.close()
        private_stores.mongo.resume()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0, log_path.read_text()[-3000:]
