"""deploy/: the nginx config passes `nginx -t`, and the compose file has the production shape."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import struct
import subprocess

import pytest
import yaml

from runtime.config import OPTIONS

from conftest import ROOT

DEPLOY = ROOT / "deploy"


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is installed by scripts/install.sh --test")
def test_nginx_config_is_valid(tmp_path):
    # The upstream names resolve only inside the compose network: point them at loopback for the check.
    config = (DEPLOY / "nginx.conf").read_text()
    for app in ("app1", "app2", "app3"):
        config = config.replace(f"server {app}:8888", "server 127.0.0.1:8888")
    config = config.replace("pid /tmp/nginx-hepgg.pid;", f"pid {tmp_path}/nginx.pid;")
    path = tmp_path / "nginx.conf"
    path.write_text(config)
    result = subprocess.run(
        ["nginx", "-t", "-c", str(path), "-e", str(tmp_path / "error.log")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_streams_unbuffered_and_replaces_forwarded_for():
    config = (DEPLOY / "nginx.conf").read_text()
    assert config.count("proxy_buffering off;") == 2  # SSE and audio
    assert "proxy_read_timeout 1h;" in config
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in config


def test_nginx_drops_an_idle_upstream_connection_before_the_app_does():
    """Else nginx may send a request onto a connection the app is closing: a POST there is a 502."""
    config = (DEPLOY / "nginx.conf").read_text()
    upstream = re.search(r"upstream hepgg \{(.*?)\}", config, re.S).group(1)
    seconds = float(re.search(r"keepalive_timeout (\d+)s;", upstream).group(1))
    [idle] = [option for option in OPTIONS if option.attr == "idle_timeout"]
    assert seconds < idle.default


def test_compose_has_production_shape():
    compose = (DEPLOY / "compose.yaml").read_text()
    assert "--replSet" in compose  # change streams need a replica set
    for service in ("mongo:", "redis:", "app1:", "app2:", "app3:", "nginx:"):
        assert f"\n  {service}" in compose
    assert "HEPGG_TRUSTED_PROXIES: 172.30.0.0/24" in compose and "subnet: 172.30.0.0/24" in compose


STREAM_PATHS = [
    "/api/v1/profiles/presence/u1/stream",
    "/api/v1/profiles/presence//stream",
    "/api/v1/profiles/presence/a%20b%2F/stream",
    "/api/v1/profiles/presence/123456789012345678/stream",
    "/api/v1/profiles/presence/u1/stream/",
    "/api/v1/profiles/presence/a/b/stream",
    "/api/v1/profiles/presence/u1",
    "/api/v1/profiles/presence/u1/streams",
    "/api/v1/profiles/presence/u1/stream.json",
    "/api/v1/profiles/p1/presence/u1/stream",
    "/x/api/v1/profiles/presence/u1/stream",
    "/API/v1/profiles/presence/u1/stream",
]


def test_nginx_streams_exactly_the_paths_our_stream_route_takes():
    from presence.sse import STREAM_ROUTE
    from render.page import presence_stream_path

    config = (DEPLOY / "nginx.conf").read_text()
    locations = [re.compile(pattern) for pattern in re.findall(r"location ~ (\S+) \{", config)]
    [nginx] = [location for location in locations if location.search("/api/v1/profiles/presence/u1/stream")]
    ours = re.compile(STREAM_ROUTE + "$")  # as Tornado anchors a route
    taken = [path for path in STREAM_PATHS if ours.match(path)]
    assert taken == STREAM_PATHS[:4]  # the list means what it says
    assert [path for path in STREAM_PATHS if nginx.search(path)] == taken
    assert ours.match(presence_stream_path("owner 1/x"))  # the page points its EventSource at the route


def test_compose_agrees_with_the_image():
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name in ("app1", "app2", "app3"):
        app = services[name]
        assert app["build"]["target"] == "production"
        env = app["environment"]
        assert set(env) <= {option.env for option in OPTIONS}, "an environment name that no option reads"
        assert "HEPGG_MONGO_URI" in env and "HEPGG_REDIS_URL" in env  # the production image has no stand-ins
        # SIGKILL comes stop_grace_period after SIGTERM: the drain (HEPGG_SHUTDOWN_GRACE) must fit, with margin.
        stop = float(re.fullmatch(r"(\d+)s", app["stop_grace_period"]).group(1))
        assert stop >= float(env["HEPGG_SHUTDOWN_GRACE"]) + 5
        assert app["ulimits"]["nofile"]["soft"] >= 65536 and app["ulimits"]["nofile"]["hard"] >= 65536
        assert "healthcheck" not in app  # the image's HEALTHCHECK follows HEPGG_PORT; nothing to keep in step
        assert services["nginx"]["depends_on"][name] == {"condition": "service_healthy"}
        port = env.get("HEPGG_PORT", re.search(r"HEPGG_PORT=(\d+)", dockerfile).group(1))
        assert f"server {name}:{port}" in (DEPLOY / "nginx.conf").read_text()


class _Upstream:
    """A replica stand-in on loopback: `answers` replies 200 to each request, or (a replica dying under its
    requests) reads each request whole and resets the connection without a reply."""

    def __init__(self, answers: bool):
        self.answers = answers
        self.requests: list[bytes] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                self.requests.append(head + await reader.readexactly(length))
                if not self.answers:
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                    break
                writer.write(
                    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


async def _post_through(port: int, path: str) -> int:
    body = b'{"message":"hi","turnstileToken":"t"}'
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: p1.hep.gg\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    status = int((await reader.readline()).split()[1])
    writer.close()
    return status


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is installed by scripts/install.sh --test")
async def test_nginx_sends_a_contact_post_cut_by_a_dying_replica_to_the_next_one(tmp_path):
    """The rehearsal's 502: nginx retries no POST, so a contact send written to a replica in the instant it died
    failed. deploy/nginx.conf sends contact POSTs cut by a connection error on to the next replica (a Turnstile
    token is single-use, so a retry cannot deliver twice), and only those: another POST still gets the 502."""
    dying, alive = _Upstream(answers=False), _Upstream(answers=True)
    ports = [await dying.start(), await alive.start(), await alive.start()]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        listen = probe.getsockname()[1]
    config = (DEPLOY / "nginx.conf").read_text().replace("pid /tmp/nginx-hepgg.pid;", f"pid {tmp_path}/nginx.pid;")
    for app, port in zip(("app1", "app2", "app3"), ports, strict=True):
        config = config.replace(f"server {app}:8888", f"server 127.0.0.1:{port}")
    config = re.sub(r"/tmp/nginx-([\w-]+);", rf"{tmp_path}/\1;", config)
    config = config.replace("worker_processes auto;", "worker_processes 1;")  # one round robin to reason about
    config = re.sub(r"listen 8080 [^;]*;", f"listen 127.0.0.1:{listen};", config)
    (tmp_path / "nginx.conf").write_text(config)
    nginx = subprocess.Popen(
        ["nginx", "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "error.log"), "-g", "daemon off;"]
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                await _post_through(listen, "/")
                break
            await asyncio.sleep(0.05)
        sent_to_dying = len(dying.requests)
        contact = [await _post_through(listen, f"/api/v1/profiles/p1/contact/{c}") for c in ["sms", "email"] * 6]
        assert contact == [200] * 12
        assert len(dying.requests) - sent_to_dying >= 3  # round robin gave the dying replica its share
        other = [await _post_through(listen, "/api/v1/other") for _ in range(6)]
        assert 502 in other  # not retried: the rule is the contact route's alone
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
