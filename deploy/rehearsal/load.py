"""Starting and stopping the load processes (deploy/rehearsal/load_*.py), all inside the load namespace.

One process per kind of visitor, SSE listeners split over several (each process holds at most ~19,900
sockets here, and two share the CPU better than one): every process counts what it did on its own side
and writes it to `<workdir>/load/<name>.json` when stopped.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.rehearsal import netns
from deploy.rehearsal.procs import Child, python_argv, wait_for
from deploy.rehearsal.stack import ISRC, SLUG_PREFIX, Stack, profile_id

VISITOR_BLOCK = 100_000  # visitor numbers per process, so no two processes share an address and User-Agent


@dataclass(frozen=True)
class Sizes:
    """The load, every number a flag of deploy/rehearse (defaults: the full run on this 2-core machine)."""

    sse_listeners: int = 3000
    sse_processes: int = 2
    sse_users: int = 100
    sse_connect_rate: float = 400.0
    publish_interval: float = 2.0
    music_listeners: int = 200
    music_kbps: float = 320.0
    page_rate: float = 40.0
    contact_rate: float = 3.0
    profiles: int = 100

    def describe(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Load:
    stack: Stack
    sizes: Sizes
    seconds: float  # hard bound for every load process
    children: dict[str, Child] = field(default_factory=dict)
    stopped: set[str] = field(default_factory=set)

    @property
    def directory(self) -> Path:
        return self.stack.workdir / "load"

    def _start(self, name: str, module: str, *args: str, index: int, pipe: bool = False) -> Child:
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = python_argv(
            module,
            "--target",
            self.stack.nginx_target,
            "--out",
            str(self.directory / f"{name}.json"),
            "--seconds",
            str(self.seconds),
            "--visitor-base",
            str(index * VISITOR_BLOCK),
            "--seed",
            str(index + 1),
            *args,
            prefix=netns.exec_prefix(netns.LOAD),
        )
        child = self.stack.child(f"load-{name}", argv).start(stdout_pipe=pipe)
        self.children[name] = child
        return child

    def start(self) -> None:
        sizes = self.sizes
        publisher = self._start(
            "publisher",
            "deploy.rehearsal.load_publisher",
            "--redis-url",
            self.stack.redis_url,
            "--users",
            str(sizes.sse_users),
            "--interval",
            str(sizes.publish_interval),
            index=0,
            pipe=True,
        )
        if json.loads(publisher.read_line(120)) != {"ready": True}:
            raise RuntimeError("the presence publisher did not get ready")
        per_process = -(-sizes.sse_listeners // sizes.sse_processes)
        for n in range(sizes.sse_processes):
            count = min(per_process, sizes.sse_listeners - n * per_process)
            self._start(
                f"sse-{n}",
                "deploy.rehearsal.load_sse",
                "--listeners",
                str(count),
                "--users",
                str(sizes.sse_users),
                "--first-index",
                str(n * per_process),
                "--connect-rate",
                str(sizes.sse_connect_rate / sizes.sse_processes),
                "--api-host",
                f"{profile_id(0)}.hep.gg",
                index=1 + n,
            )
        self._start(
            "http",
            "deploy.rehearsal.load_http",
            "--page-rate",
            str(sizes.page_rate),
            "--contact-rate",
            str(sizes.contact_rate),
            "--profiles",
            str(sizes.profiles),
            "--slug-prefix",
            SLUG_PREFIX,
            index=10,
        )
        self._start(
            "music",
            "deploy.rehearsal.load_music",
            "--listeners",
            str(sizes.music_listeners),
            "--kbps",
            str(sizes.music_kbps),
            "--profiles",
            str(sizes.profiles),
            "--isrc",
            ISRC,
            "--slug-prefix",
            SLUG_PREFIX,
            index=11,
        )

    def live(self, name: str) -> dict[str, Any]:
        try:
            return json.loads((self.directory / f"{name}.live").read_text())
        except (OSError, ValueError):
            return {}

    def open_streams(self) -> int:
        return sum(self.live(f"sse-{n}").get("open", 0) for n in range(self.sizes.sse_processes))

    def check_running(self) -> None:
        for name, child in self.children.items():
            if name not in self.stopped and not child.running:
                raise RuntimeError(f"load process {name} exited early ({child.proc.poll()}):\n{child.tail()}")

    def wait_ramp(self, timeout: float) -> float:
        started = time.monotonic()

        def ramped() -> bool:
            self.check_running()
            return self.open_streams() >= self.sizes.sse_listeners

        wait_for(ramped, timeout, f"{self.sizes.sse_listeners} SSE listeners streaming", interval=0.5)
        return time.monotonic() - started

    def stop(self, names: list[str], timeout: float = 90) -> None:
        self.stopped.update(names)
        for name in names:
            self.children[name].send(signal.SIGTERM)
        for name in names:
            if self.children[name].wait(timeout) is None:
                self.children[name].stop(signal.SIGKILL)
                raise RuntimeError(f"load process {name} did not stop within {timeout:.0f}s")

    def results(self) -> dict[str, dict[str, Any]]:
        return {
            name: json.loads((self.directory / f"{name}.json").read_text())
            for name in self.children
            if (self.directory / f"{name}.json").exists()
        }
