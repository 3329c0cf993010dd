"""`serve`: start the stores, bind, fork workers, run until SIGTERM/SIGINT, shut down in order.

Shape with `--processes N` (N > 1, or 0 for one per usable CPU, runtime/cpus.py): the parent starts the
embedded stores once, binds the listening socket, forks N workers and
supervises them (a worker that dies is replaced; SIGTERM/SIGINT is passed on).
Each worker has its own event loop, store connections and background tasks.
Workers die with the parent (PR_SET_PDEATHSIG), so nothing outlives a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any

from common import metrics
from common.process import die_with_parent
from common.tasks import start_background
from render.og_fonts import FontError, FontTables, font_tables
from runtime.app import template_loader
from runtime.config import Config, ConfigError
from runtime.cpus import render_processes_per_worker, usable_cpus
from runtime.embedded import EmbeddedStores, resolve_store_urls
from runtime.http_server import make_http_server
from runtime.listen import bind, start_listening
from runtime.services import build_services
from runtime.shutdown import ShutdownClock, Watchdog, shutdown_worker

log = logging.getLogger("hepgg.serve")

MAX_BODY_BYTES = 1024 * 1024  # API handlers enforce their own, smaller limits with a JSON answer
STORE_CHECK_INTERVAL = 0.5  # seconds between looks at the embedded stores' processes
KILLED_REAP_WAIT = 0.1  # seconds the supervisor waits for SIGKILLed workers before it stops the stores


def raise_fd_limit() -> int:
    """Streams are sockets: use the whole hard RLIMIT_NOFILE, not the usual soft 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def fd_reserve(limit: int) -> int:
    """Descriptors kept out of the stream caps: /healthz, store connections, render pipes, logs."""
    return min(1000, max(64, limit // 10))


def fit_stream_caps(config: Config, limit: int) -> Config:
    """Stream caps within RLIMIT_NOFILE less a reserve: an SSE stream holds one descriptor, music two.

    Past a cap a new stream is shed (SSE: 200 with a `retry:` hint; music: 503 with Retry-After), so
    streams alone cannot run the worker out of descriptors (issue 18: 19,000 SSE streams plus 1,500
    silent sockets took /healthz down).
    """
    usable = max(1, limit - fd_reserve(limit))
    sse, music = min(config.sse_max_streams, usable), min(config.music_max_streams, max(1, usable // 2))
    if (sse, music) != (config.sse_max_streams, config.music_max_streams):
        log.warning(
            "file descriptor limit %d (%d kept in reserve): at most %d SSE streams (asked %d) and %d music streams"
            " (asked %d) per process",
            limit,
            limit - usable,
            sse,
            config.sse_max_streams,
            music,
            config.music_max_streams,
        )
    return replace(config, sse_max_streams=sse, music_max_streams=music)


def serve(config: Config, metrics_dir: str | None = None) -> int:
    """Run until SIGTERM/SIGINT; `metrics_dir` is where workers write metrics (runtime/metrics_dir.py)."""
    limit = raise_fd_limit()
    log.info("file descriptor limit %d", limit)
    config = fit_stream_caps(config, limit)
    try:
        # Once, before the workers fork: they share the tables, and each hands them to its render processes
        # (reading them took each worker 0.3-0.7 s of CPU). A missing font stops serve here.
        fonts = font_tables()
    except FontError as exc:
        raise ConfigError(str(exc)) from exc
    template_loader()  # compiled once here, not by each worker's first visitors
    clock = ShutdownClock(config.shutdown_grace)  # SIGTERM to exit within the grace (runtime/shutdown.py)
    stores, mongo_uri, redis_url = resolve_store_urls(config, exclusive=True, command="serve")
    try:
        sockets = bind(config.port, config.address)  # listening starts when a worker is ready (runtime/listen.py)
        bound_port = sockets[0].getsockname()[1]
        log.info(
            "bound http://%s:%s (embedded stores: %s)",
            config.address,
            bound_port,
            "yes" if stores.owner else "no",
        )
        cpus = usable_cpus()  # affinity and cgroup quota, not the host's cores
        processes = config.processes or cpus
        og_processes = render_processes_per_worker(config.og_render_processes, processes, cpus)
        config = replace(config, og_render_processes=og_processes)
        log.info(
            "%d worker process(es), %d OG render process(es) each (usable CPUs: %d)", processes, og_processes, cpus
        )
        worker = Worker(config, sockets, mongo_uri, redis_url, metrics_dir, clock, fonts, forked=processes != 1)
        if processes == 1:
            worker.embedded = stores
            return run_loop(config, worker.run())
        return _supervise(worker, processes, stores)
    finally:
        # What is left of the grace (all of it when no SIGTERM came); a stopped store is woken to stop.
        stores.stop(timeout=clock.left(clock.budget.grace - clock.budget.exit))


@dataclass
class Worker:
    """What one worker process needs to serve: the settings, the bound sockets, the stores' URLs."""

    config: Config
    sockets: list[socket.socket]
    mongo_uri: str
    redis_url: str
    metrics_dir: str | None
    clock: ShutdownClock
    fonts: FontTables  # the OG card's font tables, read by the supervisor
    forked: bool  # under a supervisor, which stops the stores after its workers: exit before its share
    embedded: EmbeddedStores | None = None  # a single process supervises the stores it started itself

    @property
    def exit_by(self) -> float:
        """Seconds after SIGTERM by which this process must be gone."""
        budget = self.clock.budget
        return budget.worker if self.forked else budget.grace - budget.exit / 2

    async def run(self) -> int:
        """Build the services, serve until SIGTERM/SIGINT, drain, close."""
        config = self.config
        services = await build_services(
            config, self.mongo_uri, self.redis_url, metrics_dir=self.metrics_dir, warm_og=True, og_fonts=self.fonts
        )
        # Everything built so far lives as long as the worker: keep it out of the collector's generations, so
        # the collections triggered by per-chunk/per-connect allocations do not walk it again and again.
        gc.collect()
        gc.freeze()
        server = make_http_server(
            services,
            json_logs=config.json_logs,
            max_body_size=MAX_BODY_BYTES,
            header_timeout=config.header_timeout,
            idle_connection_timeout=config.idle_timeout,
            body_timeout=30,
        )
        if self.embedded is not None and self.embedded.servers:
            start_background(services.lifecycle, supervise_stores(self.embedded), "store-supervisor")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        start_listening(self.sockets)  # only now does a connect succeed: nothing waits for a worker not ready
        server.add_sockets(self.sockets)
        log.info("worker %d ready, accepting connections", os.getpid())
        try:
            await stop.wait()
        except BaseException:
            await services.lifecycle.close(budget=self.clock.budget.flush + self.clock.budget.close)
            raise
        self.clock.start()
        log.info("worker %d shutting down", os.getpid())
        # The orderly shutdown keeps deadlines of its own. The watchdog stays armed until the process is
        # gone: it ends it should anything still hold it (in single-process mode, past serve()'s stores.stop).
        wake_stores = self.embedded.resume if self.embedded is not None else None  # a stopped one cannot stop
        Watchdog(self.clock.left(self.exit_by), services.lifecycle, wake_stores)
        budget = self.clock.budget
        await shutdown_worker(self.clock, server, services.lifecycle, budget.worker - budget.slack)
        if self.forked:  # all is written and closed: the supervisor's share of the grace is not spent on teardown
            logging.shutdown()
            os._exit(0)
        return 0


async def supervise_stores(stores: EmbeddedStores, interval: float = STORE_CHECK_INTERVAL) -> None:
    """Restart a dead embedded store (runtime/embedded.py); a non-blocking check, in the worker's loop."""
    while True:
        await asyncio.sleep(interval)
        stores.check()


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop class for `--event-loop` (None: asyncio's own). uvloop is optional (`pip install .[fast]`)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SystemExit(
                "--event-loop uvloop: uvloop is not installed (pip install 'hepgg_server[fast]')"
            ) from None
        return None
    return uvloop.new_event_loop


def run_loop(config: Config, main: Coroutine[Any, Any, int]) -> int:
    factory = loop_factory(config.event_loop)
    log.info("event loop: %s", "uvloop" if factory else "asyncio")
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def _reap_one(children: dict[int, int]) -> tuple[int, int] | None:
    for pid in list(children):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return done, status
    return None


def _supervise(worker: Worker, processes: int, stores: EmbeddedStores) -> int:
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            die_with_parent()  # nothing outlives the supervisor
            code = 1
            try:
                code = run_loop(worker.config, worker.run())
            except BaseException:
                log.exception("worker crashed")
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = index

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        worker.clock.start()
        # Our copy of the listening socket would keep it open after the workers close theirs: the kernel
        # would go on accepting connections that nobody serves until every worker has drained.
        for sock in worker.sockets:
            sock.close()
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    for index in range(processes):
        spawn(index)
    recent_crashes: list[float] = []
    killed_at: float | None = None
    last_store_check = 0.0
    while children:
        if not stopping and time.monotonic() - last_store_check >= STORE_CHECK_INTERVAL:
            last_store_check = time.monotonic()
            stores.check()
        # Wait for our workers only: os.wait() would also reap the embedded servers behind Popen's back.
        exited = _reap_one(children)
        if exited is None:
            if stopping and killed_at is None and worker.clock.left(worker.clock.budget.worker) == 0:
                killed_at = time.monotonic()  # a worker past its share of the grace: the stores' share is not for it
                log.error("workers %s still running at their shutdown deadline; killing them", sorted(children))
                for pid in list(children):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            elif killed_at is not None and time.monotonic() - killed_at > KILLED_REAP_WAIT:
                # A big process killed on a loaded machine can take most of a second to go: the stores are
                # stopped meanwhile (init reaps what is left once we exit).
                for pid in children:
                    metrics.worker_exited(pid, worker.metrics_dir)
                break
            time.sleep(0.05 if stopping else 0.2)
            continue
        pid, status = exited
        index = children.pop(pid)
        metrics.worker_exited(pid, worker.metrics_dir)
        if stopping:
            continue
        code = os.waitstatus_to_exitcode(status)
        log.error("worker %d exited with %s; starting a new one", pid, code)
        recent_crashes = [t for t in recent_crashes if t > time.monotonic() - 10] + [time.monotonic()]
        if len(recent_crashes) > 5 * processes:
            log.critical("workers keep crashing; giving up")
            request_stop(signal.SIGTERM, None)
            continue
        spawn(index)
    for sock in worker.sockets:
        sock.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run: python hepgg_server.py serve")
