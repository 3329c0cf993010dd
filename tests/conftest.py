"""Fixtures: real embedded MongoDB (SecantusDB) and Redis (Valkey), and the real app on a real socket.

The embedded servers start once per test session (their own data dir under
pytest's tmp); every test gets its own MongoDB database and an empty Redis, and
a server built exactly as `serve` builds a worker (`build_services` + `make_http_server`).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import itertools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's modules, even if another one is pip-installed

import pytest  # noqa: E402
import redis  # noqa: E402
import redis.utils  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tornado.httpclient import AsyncHTTPClient, HTTPResponse  # noqa: E402
from tornado.httpserver import HTTPServer  # noqa: E402
from tornado.netutil import bind_sockets  # noqa: E402

from handlers.services import Services  # noqa: E402
from runtime.config import Config, load_config  # noqa: E402
from runtime.embedded import EmbeddedStores  # noqa: E402
from runtime.http_server import make_http_server  # noqa: E402
from runtime.services import build_services  # noqa: E402
from store.importer import import_document  # noqa: E402

# fixtures: `fakes` (contact third parties), `private_stores`, `upstream` (a local music worker),
# `redis_cluster`, `make_redis_cluster`, `redis_sentinel` (real topologies from Debian's redis packages);
# the session's OG render processes (shared_render)
pytest_plugins = ["contact_fakes", "private_stores", "music_upstream", "redis_topology_fixtures", "shared_render"]


# redis-py looks its own version up in the installed packages' metadata for every client it makes (~5 ms, three
# clients per test server); the answer cannot change within a run.
redis.utils.get_lib_version = functools.cache(redis.utils.get_lib_version)


# The files whose tests take longest, longest first (seconds of their slowest tests, `--durations` of the README's
# command, 2026-12-02). `--dist loadfile` hands files to the workers in collection order (with
# `--no-loadscope-reorder`, setup.cfg): the image build, the soak and the rehearsal, one test each, had come last
# and ran after everything else, one or two at a time. Started first, they run beside the many short files
# instead. A file not named here keeps its place.
LONGEST_FIRST = (
    "test_image.py",  # 163 s: builds and checks the container image
    "test_page_quality.py",  # 128 s: axe and Lighthouse in Chromium
    "test_soak.py",  # 99 s
    "test_rehearsal.py",  # 95 s
    "test_page_options.py",  # 71 s
    "test_change_stream_idle.py",  # 62 s: a minute idle is what it tests
    "test_redis_cluster.py",
    "test_contact_credits.py",
    "test_redis_sentinel.py",
    "test_embedded_stores.py",
    "test_faults.py",
    "test_cli.py",
    "test_xss_browser.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A browser test is a slow one too: `-m "not slow"` is the quick tier without further flags. The longest
    files go first (LONGEST_FIRST)."""
    for item in items:
        if item.get_closest_marker("browser") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@dataclass
class StoreUrls:
    mongo_uri: str
    redis_url: str
    data_dir: Path


@pytest.fixture(scope="session")
def store_urls(tmp_path_factory) -> StoreUrls:
    data_dir = tmp_path_factory.mktemp("embedded")
    stores = EmbeddedStores(data_dir)
    endpoints = stores.start()
    yield StoreUrls(endpoints.mongo_uri, endpoints.redis_url, data_dir)
    stores.stop()


_db_counter = itertools.count()


@pytest.fixture
def make_config(store_urls):
    """Config for a test: unique database, embedded store URLs, no env leaking in."""
    db_name = f"t{os.getpid()}_{next(_db_counter)}_{uuid.uuid4().hex[:6]}"

    def factory(**overrides: Any):
        values = {
            "mongo_uri": store_urls.mongo_uri,
            "redis_url": store_urls.redis_url,
            "mongo_db": db_name,
            "port": 0,
            "profile_cache_ttl": 0.2,
            "view_flush_interval": 0.1,
            # Every allowed music stream is a curl handle made with the server: the default 2000 cost a test
            # server ~50 ms to make and close. Tests about the caps set their own.
            "music_max_streams": 64,
        }
        values.update(overrides)
        return load_config(environ={}, **values)

    return factory


@pytest.fixture(autouse=False)
def clean_redis(store_urls):
    client = redis.Redis.from_url(store_urls.redis_url)
    client.flushdb()
    client.close()


class TestServer:
    """The app on 127.0.0.1:<random port>, and a fetch helper that never raises on HTTP errors."""

    def __init__(self, config: Config, services: Services, server: HTTPServer, port: int):
        self.config = config
        self.services = services
        self.http_server = server
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.client = AsyncHTTPClient()

    async def fetch(self, path: str, host: str | None = None, **kwargs: Any) -> HTTPResponse:
        headers = dict(kwargs.pop("headers", None) or {})
        if host is not None:
            headers["Host"] = host
        kwargs.setdefault("follow_redirects", False)
        kwargs.setdefault("request_timeout", 20)
        if "json" in kwargs:
            kwargs["body"] = json.dumps(kwargs.pop("json"))
            kwargs.setdefault("method", "POST")
            headers.setdefault("Content-Type", "application/json")
        return await self.client.fetch(self.url + path, headers=headers, raise_error=False, **kwargs)

    async def load(self, document: dict) -> None:
        report = await import_document(self.services.db, copy.deepcopy(document))
        assert report.ok, report.errors
        self.services.sites.invalidate()


async def start_test_server(config: Config, *, own_render_pool: bool = False, **build_kwargs: Any) -> TestServer:
    """The app as `serve` builds a worker, except that OG cards render in the session's processes
    (tests/shared_render.py) unless the test asks for the server's own pool (or warms it, as serve does)."""
    services = await build_services(config, config.mongo_uri, config.redis_url, **build_kwargs)
    if not own_render_pool and not build_kwargs.get("warm_og"):
        from shared_render import SharedRenderPool  # a plugin (pytest_plugins): imported once pytest has it

        services.og.pool = SharedRenderPool(config.og_render_processes)  # the server's own never started
    sockets = bind_sockets(0, "127.0.0.1")
    server = make_http_server(
        services,
        json_logs=config.json_logs,
        max_body_size=1024 * 1024,
        header_timeout=config.header_timeout,
        idle_connection_timeout=config.idle_timeout,
    )
    server.add_sockets(sockets)
    return TestServer(config, services, server, sockets[0].getsockname()[1])


async def stop_test_server(test_server: TestServer) -> None:
    """Stop like a worker on SIGTERM; a step that hangs fails the test with its name."""
    test_server.http_server.stop()
    await asyncio.wait_for(test_server.services.lifecycle.drain(0.5), 15)
    await asyncio.wait_for(test_server.http_server.close_all_connections(), 15)
    failed = await test_server.services.lifecycle.close(timeout_each=15)
    assert not failed, f"closers failed or hung: {failed}"


def _own_render_pool(request) -> bool:
    return request.node.get_closest_marker("own_render_pool") is not None


@pytest.fixture
async def app_server(make_config, clean_redis, request):
    """A running server on default test settings; tests needing other settings use make_server."""
    server = await start_test_server(make_config(), own_render_pool=_own_render_pool(request))
    yield server
    await stop_test_server(server)


@pytest.fixture
async def make_server(make_config, clean_redis, request):
    servers: list[TestServer] = []

    async def factory(**overrides: Any) -> TestServer:
        server = await start_test_server(make_config(**overrides), own_render_pool=_own_render_pool(request))
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await stop_test_server(server)


async def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str = "",
    retry_on: tuple[type[BaseException], ...] = (),
) -> Any:
    """Call `predicate` (sync or async) until it returns something truthy, and return that.

    The suite's one polling helper: a test waits for a condition with a deadline, never sleeps and hopes.
    A sync predicate may block (urllib, a subprocess): the subprocess tests have nothing else on the loop.
    `retry_on`: exceptions that mean "not yet" (a store still coming back), polled through like a false result.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
        except retry_on:
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, message or f"condition not met within {timeout} s"
        await asyncio.sleep(interval)


def metric_value(exposition: str | bytes, name: str, **labels: str) -> float:
    """A metric from Prometheus text (what /metrics answers): the sum of the samples named `name` (counters by
    their `_total` name) whose labels include `labels`, so all labels give one sample; 0 when none match."""
    text = exposition.decode() if isinstance(exposition, bytes) else exposition
    return sum(
        float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def scrape(server: TestServer, name: str, **labels: str) -> float:
    """A metric as the server's /metrics reports it (the public view, never the client's internals)."""
    response = await server.fetch("/metrics")
    assert response.code == 200, response.code
    return metric_value(response.body, name, **labels)


def base_document(**profile_overrides: Any) -> dict:
    """One premium owner with everything enabled and one published profile at alice.hep.gg."""
    doc = {
        "users": [
            {
                "id": "u1",
                "premium_until": "2099-01-01T00:00:00Z",
                "suspended": False,
                "sms": {"enabled": True, "key": "sms-key-u1", "phone": "+15550100", "phone_verified": True},
                "sms_credits": 5,
                "email": {"enabled": True, "key": "email-key-u1", "address": "owner@example.com", "verified": True},
                "email_credits": 5,
                "discord": {"channel_id": "1234567890", "bot_present": True},
                "music": {"enabled": True, "key": "music-key-u1"},
            }
        ],
        "profiles": [
            {
                "id": "p1",
                "owner_id": "u1",
                "domain": "alice.hep.gg",
                "template": "classic",
                "is_public": 1,
                "suspended": 0,
                "expires_at": None,
                "created_at": "2026-01-01T00:00:00Z",
                "theme": {"accent": "#7c3aed", "background": "#0b0b10", "font": "Inter"},
                "content": {
                    "display_name": "Alice",
                    "bio": "Hello there",
                    "avatar_url": None,
                    "links": [{"label": "GitHub", "url": "https://github.com/alice"}],
                    "music": [{"isrc": "USRC17607839", "title": "Song", "artist": "Band"}],
                },
                "toggles": {
                    "presence": True,
                    "powered_by": False,
                    "contact_sms": True,
                    "contact_email": True,
                    "contact_discord": True,
                },
            }
        ],
    }
    doc["profiles"][0].update(profile_overrides)
    return doc


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, patch: str = "", **kwargs
) -> subprocess.CompletedProcess:
    """Run `python hepgg_server.py ARGS` as a separate process, like an operator would.

    `patch`: Python run first in that process (a font or a package made missing), then the same `main`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HEPGG_")}
    full_env.update(env or {})
    program = [str(ROOT / "hepgg_server.py")]
    if patch:
        program = ["-c", f"{patch}; import sys, hepgg_server; sys.exit(hepgg_server.main(sys.argv[1:]))"]
    return subprocess.run(
        [sys.executable, *program, *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(proc: subprocess.Popen, port: int, path: str = "/healthz", timeout: float = 60) -> None:
    """Block until a `serve` subprocess answers 200 on `path`; fail at once if it exits.

    Blocking on purpose (urllib): a slow answer while a loaded machine starts the server is one more
    try, whatever the client library would call its timeout. Async tests call it through to_thread.
    """
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"serve exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:  # not listening yet, not ready (HTTPError is one), or too slow to answer
            pass
        assert time.monotonic() < deadline, f"serve did not answer {path} within {timeout} s"
        time.sleep(0.2)


def http_status(port: int, path: str, host: str = "127.0.0.1", timeout: float = 10, **headers: str) -> int:
    """The status of a blocking GET to a `serve` subprocess; 0 when nothing answered (down, refused, too slow)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host, **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--host-resolver-rules=MAP *.hep.gg 127.0.0.1",
]  # profile hosts resolve to the test server


async def launch_chromium(playwright, *extra_args: str):
    """Debian's Chromium (never a downloaded browser), with every *.hep.gg host on loopback."""
    return await playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args])
