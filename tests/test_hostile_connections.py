"""Out of file descriptors, the server pauses accepting instead of spinning, and frees silent sockets.

Issue 18: under a 1,024-fd limit, 1,100 silent sockets made Tornado's accept handler fail with EMFILE
on every loop turn (114 MB of log and 10 s of CPU in 10 s) and /healthz stayed unreachable for the 60 s
the sockets stayed open. Here `serve` runs under a 256-descriptor limit and 400 sockets connect and say
nothing, and stay open on the client's side for the whole test.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import time

import pytest

from common.address_caps import StreamOpens
from presence.sse import DRAIN_RETRY_MS
from runtime.config import load_config
from runtime.serve import fd_reserve, fit_stream_caps
from runtime.services import stream_opens

from conftest import ROOT, free_port, http_status, wait_until, wait_until_serving
from presence_client import SSEClient

LIMIT = 256
SILENT = 400


@pytest.mark.parametrize("limit", [256, 1024, 20000, 1_000_000])
def test_stream_caps_leave_descriptors_in_reserve(limit):
    fitted = fit_stream_caps(load_config(environ={}), limit)
    reserve = fd_reserve(limit)
    assert 64 <= reserve <= 1000
    assert fitted.sse_max_streams <= limit - reserve
    assert 2 * fitted.music_max_streams <= limit - reserve
    if limit >= 1_000_000:  # room for the defaults: untouched
        assert (fitted.sse_max_streams, fitted.music_max_streams) == (19000, 2000)


async def test_one_address_holds_at_most_its_share_of_connections(make_server):
    server = await make_server(connections_per_address=3)
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
    try:
        await wait_until(lambda: server.services.address_caps.open == {"127.0.0.1": 3}, timeout=5)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        answer = await asyncio.wait_for(reader.read(), 5)  # refused before it says anything
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 5" in answer
        held.pop()[1].close()  # one closes: the address may open another
        await wait_until(lambda: server.services.address_caps.open.get("127.0.0.1") == 2, timeout=5)
        response = await server.fetch("/healthz")
        assert response.code == 200
    finally:
        for _, writer in held:
            writer.close()


async def test_a_trusted_proxy_is_not_capped(make_server):
    server = await make_server(connections_per_address=2, trusted_proxies="127.0.0.1/32")
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(4)]
    try:
        assert (await server.fetch("/healthz")).code == 200
        assert server.services.address_caps.open == {}
    finally:
        for _, writer in held:
            writer.close()


STREAM = "/api/v1/profiles/presence/cap1/stream"


async def forwarded_stream(server, forwarded: str | None, routed: bool) -> SSEClient:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else None
    return await SSEClient.open(server.port, STREAM, headers=headers, in_pieces=routed)


@pytest.mark.parametrize("routed", [False, True], ids=["fast-path", "routed"])
async def test_streams_through_a_trusted_proxy_count_against_the_forwarded_address(make_server, routed):
    """Behind nginx every stream comes from the proxy: the per-address rule applies to the forwarded client."""
    server = await make_server(connections_per_address=2, trusted_proxies="127.0.0.1/32", sse_opens_per_address=0)
    caps = server.services.address_caps
    held: list[SSEClient] = []
    try:
        for forwarded in ("2001:db8:1::1", "2001:db8:1::2"):  # one /64: one address
            held.append(await forwarded_stream(server, forwarded, routed))
            assert held[-1].status == 200
            assert await held[-1].event() is None  # the first event: no snapshot
        assert caps.open == {"2001:db8:1::/64": 2}
        extra = await forwarded_stream(server, "2001:db8:1::ff", routed)  # shed as a full worker sheds
        assert extra.status == 200
        assert (await extra.block()).startswith("retry: ")
        assert await extra.block() is None
        other = await forwarded_stream(server, "198.51.100.7", routed)  # another address still streams
        held.append(other)
        assert await other.event() is None  # the first event: no snapshot
        unforwarded = await forwarded_stream(server, None, routed)  # the proxy's own: not counted
        held.append(unforwarded)
        assert await unforwarded.event() is None  # the first event: no snapshot
        assert caps.open == {"2001:db8:1::/64": 2, "198.51.100.7": 1}
        assert caps.refused["SSE streams"] == 1
        held.pop(0).writer.close()  # one ends: its address may open another
        await wait_until(lambda: caps.open.get("2001:db8:1::/64") == 1, timeout=5)
        held.append(await forwarded_stream(server, "2001:db8:1::3", routed))
        assert await held[-1].event() is None  # the first event: no snapshot
    finally:
        for stream in held:
            stream.writer.close()


async def test_an_untrusted_peer_s_forwarded_for_is_ignored(make_server):
    server = await make_server(connections_per_address=2, trusted_proxies="127.0.0.1/32")
    held = []
    try:
        for forwarded in ("198.51.100.1", "198.51.100.2"):
            stream = await SSEClient.open(
                server.port, STREAM, headers={"X-Forwarded-For": forwarded}, source="127.0.0.2"
            )
            held.append(stream)
            assert await stream.event() is None  # the first event: no snapshot
        assert server.services.address_caps.open == {"127.0.0.2": 2}  # the peer's, whatever the header says
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.2", 0))
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503 ")
    finally:
        for stream in held:
            stream.writer.close()


async def shed_hint(stream: SSEClient) -> int:
    """The retry hint of a shed stream (200, `retry:` alone, the end), asserting that it is one."""
    assert stream.status == 200
    block = await stream.block()
    assert block is not None and block.startswith("retry: ") and "\n" not in block, block
    assert await stream.block() is None  # the body ends: shed, not streaming
    stream.close()
    return int(block.split()[1])


async def open_and_close(server, count: int, **kwargs) -> None:
    """`count` streams that each get their first event and end, released before the next (the cap is not hit)."""
    caps = server.services.address_caps
    for _ in range(count):
        stream = await SSEClient.open(server.port, STREAM, **kwargs)
        assert await stream.event() is None  # streaming: the first event, no snapshot
        stream.close()
        await wait_until(lambda: not caps.open and server.services.presence.hub.listener_count == 0, timeout=5)


@pytest.mark.parametrize("routed", [False, True], ids=["fast-path", "routed"])
async def test_one_address_opening_streams_past_its_rate_is_shed_until_its_bucket_refills(make_server, routed):
    """The reconnect storm: an address that keeps reopening streams holds few at once, so only a rate stops it."""
    server = await make_server(sse_opens_per_address=0.5)  # a burst of 3 (6 s of the rate), then 1 per 2 s
    caps = server.services.address_caps
    server.services.presence.held_sheds.hold = 0.3  # (1 s by default)
    start = time.monotonic()
    caps.stream_opens.clock = lambda: start  # time stands still until the test moves it
    await open_and_close(server, 3, in_pieces=routed)  # the burst: each streams
    asked = time.monotonic()
    over = await SSEClient.open(server.port, STREAM, in_pieces=routed)
    assert time.monotonic() - asked >= 0.3  # answered once its hold is over, not at once
    assert 5000 <= await shed_hint(over) <= 20000  # shed as overload is: a long, jittered hint
    assert caps.refused["SSE streams opened too fast"] == 1
    assert await shed_hint(await SSEClient.open(server.port, STREAM, in_pieces=routed)) >= 5000  # still empty
    await open_and_close(server, 1, source="127.0.0.2", in_pieces=routed)  # another address streams
    caps.stream_opens.clock = lambda: start + 2.0  # one token back (0.5 a second)
    await open_and_close(server, 1, in_pieces=routed)
    assert await shed_hint(await SSEClient.open(server.port, STREAM, in_pieces=routed)) >= 5000
    assert caps.refused["SSE streams opened too fast"] == 3


async def test_held_sheds_are_answered_when_the_worker_drains(make_server):
    server = await make_server(sse_opens_per_address=0.01)  # a burst of 1
    server.services.address_caps.stream_opens.clock = lambda: 0.0
    held = server.services.presence.held_sheds
    held.hold = 600.0  # longer than the test: only the drain can answer it
    await open_and_close(server, 1)
    over = asyncio.ensure_future(SSEClient.open(server.port, STREAM))
    await wait_until(lambda: len(held.held) == 1, timeout=5)
    await server.services.lifecycle.drain(0.5)
    assert await shed_hint(await asyncio.wait_for(over, 5)) >= 5000
    assert not held.held


async def test_behind_a_trusted_proxy_the_forwarded_address_is_rate_limited(make_server):
    server = await make_server(trusted_proxies="127.0.0.1/32", sse_opens_per_address=1 / 3)  # a burst of 2
    server.services.presence.held_sheds.hold = 0.1
    caps = server.services.address_caps
    caps.stream_opens.clock = lambda: 0.0
    await open_and_close(server, 2, headers={"X-Forwarded-For": "2001:db8:7::1"})
    over = await SSEClient.open(server.port, STREAM, headers={"X-Forwarded-For": "2001:db8:7::2"})  # the same /64
    assert await shed_hint(over) >= 5000
    await open_and_close(server, 1, headers={"X-Forwarded-For": "198.51.100.9"})  # another client streams
    await open_and_close(server, 3)  # the proxy's own streams (no X-Forwarded-For) are not limited
    assert caps.refused["SSE streams opened too fast"] == 1
    assert set(caps.stream_opens.buckets) == {"2001:db8:7::/64", "198.51.100.9"}


def test_a_reconnect_wave_is_never_shed_and_a_storm_gets_little_past_the_burst():
    """The defaults: after a deploy an address's streams come back spread over the drain hint (0.5-6 s): 110 of
    them (the burst and 5.5 s of the rate is 115: far more than one visitor's tabs or a NAT of a few) are let
    in; a storm of 1,000 opens a second for 10 s from one address gets the burst and 10 s of the rate, 160."""
    config = load_config(environ={})
    low, high = (ms / 1000 for ms in DRAIN_RETRY_MS)
    opens = stream_opens(config)
    now = [0.0]
    opens.clock = lambda: now[0]
    wave = 110
    for i in range(wave):
        now[0] = low + (high - low) * i / (wave - 1)
        assert opens.allow("192.0.2.1"), f"stream {i} of the wave, at {now[0]:.2f} s"
    storm = stream_opens(config)
    storm.clock = lambda: now[0]
    let_in = 0
    for i in range(10_000):
        now[0] = 100 + i / 1000
        let_in += storm.allow("192.0.2.2")
    assert 155 <= let_in <= 160


def test_the_open_rate_table_forgets_addresses_whose_bucket_is_full_again():
    opens = StreamOpens(per_second=10, burst=5)
    now = [100.0]
    opens.clock = lambda: now[0]
    for address in ("192.0.2.1", "192.0.2.2"):
        assert all(opens.allow(address) for _ in range(5))
        assert not opens.allow(address)
    assert set(opens.buckets) == {"192.0.2.1", "192.0.2.2"}
    now[0] += 0.5  # both full again (5 tokens at 10 a second)
    assert opens.allow("192.0.2.3")  # a pass over the table, at most once per refill time, drops them
    assert set(opens.buckets) == {"192.0.2.3"}
    assert StreamOpens(per_second=0, burst=1).allow("192.0.2.1")  # 0: no limit


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def healthz(port: int) -> int:
    return http_status(port, "/healthz", timeout=2)


def limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


@pytest.mark.slow
async def test_silent_sockets_past_the_fd_limit_cost_neither_the_log_nor_healthz(private_stores, tmp_path):
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEPGG_", "PROMETHEUS_"))}
    argv = [sys.executable, str(ROOT / "hepgg_server.py"), "serve", "--port", str(port), "--processes", "1"]
    argv += ["--mongo-uri", private_stores.mongo_uri, "--redis-url", private_stores.redis_url]
    argv += ["--og-render-processes", "1", "--header-timeout", "1", "--log-level", "info"]
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT, preexec_fn=limit_descriptors
    )
    sockets: list[socket.socket] = []
    try:
        wait_until_serving(proc, port, "/readyz")
        lines_before = len(log_path.read_text().splitlines())
        cpu_before = cpu_seconds(proc.pid)
        started = time.monotonic()
        for _ in range(SILENT):  # each completes its handshake (the kernel's backlog), then says nothing
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        # While they stay open, /healthz is answered within a few header timeouts (the server closes the
        # silent ones it accepted, accepts more from the backlog, and so reaches ours).
        await wait_until(lambda: healthz(port) == 200, timeout=20, interval=0.2, message="/healthz unreachable")
        reached = time.monotonic() - started
        await asyncio.sleep(max(0.0, 10 - reached))  # ten seconds of pressure in all
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(proc.pid) - cpu_before
        text = log_path.read_text()
        lines = text.splitlines()[lines_before:]
        refused = [line for line in lines if "accept failed" in line]
        assert "Traceback" not in text
        assert 1 <= len(refused) <= elapsed / 10 + 2, refused  # one line per interval, with a count
        assert len(lines) <= 20, lines[:20]
        assert cpu < 0.5 * elapsed, f"{cpu:.1f}s of CPU in {elapsed:.1f}s"
        assert healthz(port) == 200
    finally:
        for sock in sockets:
            sock.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
