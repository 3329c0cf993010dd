"""`--event-loop`: asyncio by default, uvloop (the `fast` extra) on request, and a real server on uvloop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.serve import loop_factory

from conftest import free_port, run_cli, wait_until_serving

uvloop = pytest.importorskip("uvloop")
ROOT = Path(__file__).resolve().parent.parent


def test_loop_factory_choices():
    assert loop_factory("asyncio") is None
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("auto") is uvloop.new_event_loop  # installed here


@pytest.mark.slow  # the server as a subprocess
def test_unknown_event_loop_is_a_config_error():
    result = run_cli("serve", "--event-loop", "trio")
    assert result.returncode == 2 and "--event-loop must be auto, asyncio or uvloop" in result.stderr


def _raw_get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        while not (b"data: " in data and data.endswith(b"\n\n\r\n")) and b"ok" not in data:  # the first event
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


@pytest.mark.slow
def test_server_on_uvloop_serves_pages_and_streams(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEPGG_")}
    env.update(HEPGG_DATA_DIR=str(tmp_path / "data"), HEPGG_PORT=str(port), HEPGG_EVENT_LOOP="uvloop")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "hepgg_server.py"), "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_serving(proc, port)
        stream = _raw_get(port, "/api/v1/profiles/presence/uv1/stream")
        assert stream.startswith(b"HTTP/1.1 200 OK") and b"event: presence\ndata: null\n\n" in stream
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output
    assert "event loop: uvloop" in output
