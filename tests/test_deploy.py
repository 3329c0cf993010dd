"""deploy/: the nginx config passes `nginx -t`, and the compose file has the production shape."""

from __future__ import annotations

import re
import shutil
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
