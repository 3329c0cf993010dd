"""Embedded stores under `serve`: supervised (a dead one comes back on its port) and durable (kill -9 loses nothing).

Issue 18: after `kill -9` of the embedded Valkey and SecantusDB, `serve` stayed up forever with
/readyz 503 and every store-backed route 503; and SecantusDB, not syncing its log, lost the last
acknowledged writes on a kill -9. These run `hepgg_server.py serve` as an operator would, on its own
data dir, and kill the real processes.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis
from pymongo import MongoClient

from conftest import ROOT, base_document, free_port, metric_value, run_cli, wait_until, wait_until_serving
from conftest import http_status as status
from contact_fakes import third_party_flags

pytestmark = [pytest.mark.slow, pytest.mark.timeout(360)]  # two serve starts with embedded stores, under load

ISRC = "USRC17607839"


def program(pid: int) -> str:
    return Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()).name


def store_pids(server_pid: int) -> dict[str, int]:
    """The embedded servers among the children of `server_pid`, by name."""
    pids = {}
    for pid in map(int, subprocess.run(["pgrep", "-P", str(server_pid)], capture_output=True).stdout.split()):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if program(pid).startswith("valkey"):
            pids["valkey"] = pid
        elif b"secantus" in cmdline:
            pids["secantusdb"] = pid
    return pids


def off_loop(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """`predicate` (blocking: urllib) in a thread, so the test's own fakes keep answering on the loop meanwhile."""
    return lambda: asyncio.to_thread(predicate)


class Serve:
    """`hepgg_server.py serve` with embedded stores in `data`; its log in `log_path`."""

    def __init__(self, data: Path, log_path: Path, *flags: str):
        self.port = free_port()
        self.data = data
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HEPGG_", "PROMETHEUS_"))}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "hepgg_server.py"),
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(data),
                "--og-render-processes",
                "1",
                "--trusted-proxies",
                "127.0.0.1/32",
                *flags,
            ],
            cwd=ROOT,
            env=env,
            stdout=log_path.open("a"),
            stderr=subprocess.STDOUT,
        )
        wait_until_serving(self.proc, self.port, "/readyz", timeout=90)

    def visit(self, visitor: int) -> int:
        return status(
            self.port,
            "/",
            "alice.hep.gg",
            **{
                "User-Agent": f"Mozilla/5.0 visitor-{visitor}",
                "X-Forwarded-For": f"10.7.{visitor // 256}.{visitor % 256}",
            },
        )

    def metric(self, name: str, **labels: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            return metric_value(response.read(), name, **labels)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def send_sms(port: int, address: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/profiles/p1/contact/sms",
        data=json.dumps({"message": "durable?", "turnstileToken": "good-kill"}).encode(),
        headers={"Content-Type": "application/json", "X-Forwarded-For": address},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:  # the connection died with the server
        return 0


def import_document(data: Path, tmp_path: Path, document: dict) -> None:
    path = tmp_path / "import.json"
    path.write_text(json.dumps(document))
    done = run_cli("import", str(path), "--data-dir", str(data))
    assert done.returncode == 0, done.stdout + done.stderr


def stats(data: Path) -> dict:
    done = run_cli("stats", "p1", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("processes", [1, 2])
async def test_killed_stores_come_back_on_their_ports_and_nothing_is_lost(tmp_path, processes):
    data = tmp_path / "data"
    server = Serve(data, tmp_path / "serve.log", "--processes", str(processes), "--view-flush-interval", "0.2")
    try:
        import_document(data, tmp_path, base_document())
        urls = json.loads((data / "embedded.json").read_text())
        await wait_until(lambda: server.visit(0) == 200, 10, message="the imported profile")
        served = 1
        pids = store_pids(server.proc.pid)
        assert set(pids) == {"valkey", "secantusdb"}
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: status(server.port, "/readyz") == 503, 10, message="/readyz 503")
        # While they are down and coming back: pages may be 503 (no MongoDB), never a 500; the views of
        # the pages served wait in memory.
        visitor = 1
        down = time.monotonic()
        recovered = None
        while time.monotonic() - down < 60:
            code = server.visit(visitor)
            assert code in (200, 503), code
            served += code == 200
            visitor += 1
            if status(server.port, "/readyz") == 200:
                recovered = time.monotonic() - down
                break
            await asyncio.sleep(0.2)
        assert recovered is not None, "the stores never came back"
        after = store_pids(server.proc.pid)
        assert set(after) == {"valkey", "secantusdb"} and not set(after.values()) & set(pids.values())
        assert json.loads((data / "embedded.json").read_text()) == urls  # same ports: workers reconnected alone
        for _ in range(5):
            served += server.visit(visitor) == 200
            visitor += 1
        await wait_until(
            lambda: server.metric("hepgg_stats_flushed_total", kind="view") >= served, 30, message="views written"
        )
        assert stats(data)["views"] == served
        log = server.log_path.read_text()
        assert log.count("starting it again in") == 2 and log.count("started again: pid") == 2, log[-3000:]
    finally:
        assert server.stop() == 0


@pytest.fixture
def serve_with_fakes(tmp_path, fakes, upstream):
    def start(data: Path, log_name: str) -> Serve:
        return Serve(
            data,
            tmp_path / log_name,
            "--processes",
            "1",
            "--view-flush-interval",
            "0.3",
            "--music-upstream-url",
            upstream.url,
            *third_party_flags(fakes),
        )

    return start


async def test_kill_9_of_the_server_and_its_stores_right_after_a_flush_loses_nothing(tmp_path, serve_with_fakes, fakes):
    """Every view, play and credit MongoDB acknowledged is there after a kill -9 of everything and a restart.

    The kill comes from the SMS API itself: the third SMS request kills the server and both stores the
    moment it arrives, milliseconds after MongoDB acknowledged that send's credit debit (the debit
    comes before the delivery, contact/service.py). The views and plays were acknowledged before
    (the flushed counter), and the log keeps order: if the last write survives, so do they.
    Without `--sync-on-commit` the last debit was lost (runtime/embedded.py).
    """
    data = tmp_path / "data"
    server = await asyncio.to_thread(serve_with_fakes, data, "first.log")
    document = copy.deepcopy(base_document())
    document["users"][0]["sms_credits"] = 100
    victims: list[int] = []

    async def kill_on_the_third(handler) -> None:
        if len(fakes.sms.requests) == 3:
            for pid in victims:  # together: nothing gets a clean stop
                os.kill(pid, signal.SIGKILL)
        handler.finish({"id": f"sms{len(fakes.sms.requests)}"})

    fakes.sms.answer = kill_on_the_third
    try:
        await asyncio.to_thread(import_document, data, tmp_path, document)
        await wait_until(off_loop(lambda: server.visit(0) == 200), 10, message="the imported profile")
        views, plays = 1, 0
        for visitor in range(1, 40):
            views += await asyncio.to_thread(server.visit, visitor) == 200
        for listener in range(6):  # six visitors: one visitor's repeats within 30 s are one play (music/plays.py)
            headers = {"User-Agent": f"Mozilla/5.0 listener-{listener}", "X-Forwarded-For": f"10.9.0.{listener}"}
            path = f"/api/v1/profiles/p1/music/{ISRC}"
            plays += await asyncio.to_thread(status, server.port, path, "127.0.0.1", 10, **headers) == 200
        assert (views, plays) == (40, 6)
        # Acknowledged: the flusher counts a view or play once MongoDB has acknowledged its write.
        flushed = off_loop(lambda: server.metric("hepgg_stats_flushed_total") >= views + plays)
        await wait_until(flushed, 20, message="the flush")
        victims.extend([server.proc.pid, *store_pids(server.proc.pid).values()])
        # Valkey (appendfsync everysec) writes each command to its append-only file before it replies.
        redis_url = json.loads((data / "embedded.json").read_text())["redis_url"]
        probe = redis.Redis.from_url(redis_url)
        for i in range(100):
            probe.set(f"durable-probe-{i}", i)
        probe.close()
        codes = [await asyncio.to_thread(send_sms, server.port, f"10.8.0.{i}") for i in range(3)]
        assert codes[:2] == [200, 200] and codes[2] != 200  # the third never got its answer
        await asyncio.to_thread(server.proc.wait, 10)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    for pid in victims:
        await wait_until(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 10, message=f"{pid} not gone")
    again = await asyncio.to_thread(serve_with_fakes, data, "second.log")
    try:
        counted = await asyncio.to_thread(stats, data)
        assert (counted["views"], counted["plays"]) == (views, plays)
        assert counted["plays_by_isrc"] == {ISRC: plays}
        urls = json.loads((data / "embedded.json").read_text())
        client = MongoClient(urls["mongo_uri"], tz_aware=True)
        try:
            assert client.hepgg.users.find_one({"_id": "u1"})["sms_credits"] == 100 - len(fakes.sms.requests)
        finally:
            client.close()
        probe = redis.Redis.from_url(urls["redis_url"])
        assert [probe.get(f"durable-probe-{i}") for i in range(100)] == [str(i).encode() for i in range(100)]
        probe.close()
    finally:
        assert again.stop() == 0
