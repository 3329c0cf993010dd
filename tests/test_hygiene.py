"""Repository hygiene: no tracked file may depend on one machine's layout.

A fresh clone on a new machine must work as the README says, so no tracked file
may name an absolute path of a particular machine (a home directory, a
workspace, a virtualenv outside the checkout) or a relative path that climbs out
of the repository (a sibling folder that only existed where the file was written).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Absolute paths that only exist on the machine where they were typed.
MACHINE_PATH = re.compile(
    r"(?<![\w.~-])/(?:work|home/[\w.-]+|root|Users/[\w.-]+|srv|mnt)/"  # workspaces and home directories
    r"|(?<![\w.~-])/[\w.-]+(?:/[\w.-]+)*/\.?venv/bin/"  # a virtualenv that is not the checkout's .venv
)
# A relative path that climbs: `../x`, possibly several times.
CLIMBING_PATH = re.compile(r"(?<![\w.])(?:\.\./)+[\w.-]+")


def tracked_text_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = []
    for name in listed.decode().split("\0"):
        path = ROOT / name
        if name and path.is_file() and b"\0" not in path.read_bytes()[:8192]:
            files.append(path)
    return files


def machine_paths(text: str) -> list[str]:
    return [match.group(0) for match in MACHINE_PATH.finditer(text)]


def paths_leaving(text: str, directory: Path) -> list[str]:
    """The `../` paths in `text` that, read from `directory`, point outside the repository."""
    found = []
    for match in CLIMBING_PATH.finditer(text):
        target = (directory / match.group(0)).resolve()
        if ROOT != target and ROOT not in target.parents:
            found.append(match.group(0))
    return found


def test_the_checks_catch_what_they_are_for():
    # The examples are assembled at run time, so this file does not itself hold the paths it forbids.
    workspace, home, admin, tools = "/" + "work/", "/" + "home/alice/", "/" + "root/", "/opt/tools/" + "venv/bin/"
    assert machine_paths(f"run {workspace}venv/bin/python x") == [workspace]
    assert machine_paths(f"see {home}src and {admin}.cache") == [home, admin]
    assert machine_paths(f"python={tools}python") == [tools]
    assert machine_paths(".venv/bin/python -m pytest; og/worker.py; /usr/bin/chromium; /app/data") == []
    assert paths_leaving("the spec is in `../shared/spec/`", ROOT) == ["../shared"]
    assert paths_leaving("[bench](../bench/README.md)", ROOT / "docs") == []


def test_no_tracked_file_names_another_machines_paths():
    offenders = []
    for path in tracked_text_files():
        text = path.read_text(errors="replace")
        relative = path.relative_to(ROOT)
        offenders += [f"{relative}: {found}" for found in machine_paths(text)]
        offenders += [f"{relative}: {found} (outside the repository)" for found in paths_leaving(text, path.parent)]
    assert not offenders, "tracked files depend on one machine's layout:\n" + "\n".join(offenders)
