"""runtime/healthcheck.py, the image's HEALTHCHECK: it probes where `serve` listens, as the environment says."""

from __future__ import annotations

import asyncio
import os
import socket
import sys

from runtime.healthcheck import check, probe_target

from conftest import ROOT


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_wildcard_addresses_are_probed_on_loopback_of_their_family():
    assert probe_target("0.0.0.0", 8888) == ("127.0.0.1", 8888)
    assert probe_target("", 8888) == ("127.0.0.1", 8888)
    assert probe_target("::", 9999) == ("::1", 9999)  # Tornado binds :: as IPv6 only
    assert probe_target("10.1.2.3", 80) == ("10.1.2.3", 80)


async def test_follows_port_and_address_from_the_environment(app_server):
    healthy = {"HEPGG_ADDRESS": "0.0.0.0", "HEPGG_PORT": str(app_server.port)}
    assert await asyncio.to_thread(check, healthy) is None
    wrong = await asyncio.to_thread(check, {"HEPGG_ADDRESS": "127.0.0.1", "HEPGG_PORT": str(closed_port())})
    assert wrong and "/healthz" in wrong
    assert "nothing to probe" in await asyncio.to_thread(check, {"HEPGG_PORT": "0"})
    assert "configuration error" in await asyncio.to_thread(check, {"HEPGG_PORT": "many"})


async def test_module_exit_codes(app_server):
    async def run(port: int) -> tuple[int, bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEPGG_")} | {"HEPGG_PORT": str(port)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "runtime.healthcheck", cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        return proc.returncode, err

    assert await run(app_server.port) == (0, b"")
    code, err = await run(closed_port())
    assert code == 1 and b"Connection refused" in err
