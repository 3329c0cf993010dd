"""The container image: scripts/image-test.sh builds both targets with podman and checks them end to end.

CI (.ci/run) runs the README's test command, and with it this test. In a checkout that ran it before, it finds
the base, the build cache and the layers of that run in the same work dir (.image-test) and mostly re-runs the
checks (1-4 minutes); a clean clone makes the stand-in base and builds cold. Skipped where rootful podman and
apt are not to be had.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


@pytest.mark.container
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_image_builds_and_passes_its_checks():
    if os.geteuid() != 0:
        pytest.skip("the image test needs root (rootful podman; apt installs podman, mmdebstrap, runc)")
    if not Path("/etc/debian_version").exists():
        pytest.skip("the image test needs Debian (apt, mmdebstrap for the stand-in base)")
    result = subprocess.run(
        [str(ROOT / "scripts" / "image-test.sh")],
        env={**os.environ, "HEPGG_IMAGE_TEST_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=2300,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "image-test: all checks passed" in result.stdout
