"""deploy/: the nginx config passes `nginx -t`, and the compose file has the production shape."""

from __future__ import annotations

import shutil
import subprocess

import pytest

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


def test_compose_has_production_shape():
    compose = (DEPLOY / "compose.yaml").read_text()
    assert "--replSet" in compose  # change streams need a replica set
    for service in ("mongo:", "redis:", "app1:", "app2:", "app3:", "nginx:"):
        assert f"\n  {service}" in compose
    assert "HEPGG_TRUSTED_PROXIES: 172.30.0.0/24" in compose and "subnet: 172.30.0.0/24" in compose
