"""Imports point one way: every project module's imports (function-level ones too) go down the layers.

    hepgg_server.py                     the entry: parse, config, logging, the command
    runtime/                            the composition root: config, serve, services, app, cli, embedded, ...
    handlers/                           the HTTP layer
    og/ music/ contact/ presence/       the features (none imports another)
    render/                             pure rendering (may read store's read models)
    store/                              MongoDB/Redis access and domain rules
    common/                             the leaf: imports nothing of the project

A module may import its own package and any package in a lower layer; nothing else.
(README, "How it is built", has the same picture.)
"""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest

from conftest import ROOT

LAYERS: dict[str, int] = {
    "hepgg_server": 6,
    "runtime": 5,
    "handlers": 4,
    "og": 3,
    "music": 3,
    "contact": 3,
    "presence": 3,
    "demo": 3,  # `serve --demo`'s stand-ins for the third parties (imports nothing of the project)
    "render": 2,
    "store": 1,
    "common": 0,
}


def project_modules() -> dict[str, str]:
    """Path (relative to the checkout) -> source, for the entry and every module of every layer's package."""
    sources = {"hepgg_server.py": (ROOT / "hepgg_server.py").read_text()}
    for package in LAYERS:
        if package == "hepgg_server":
            continue
        for path in sorted((ROOT / package).rglob("*.py")):
            sources[str(path.relative_to(ROOT))] = path.read_text()
    return sources


def imported_packages(source: str) -> set[str]:
    """The top-level names a module imports anywhere in it (module level, functions, TYPE_CHECKING blocks)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def violations(sources: dict[str, str]) -> list[str]:
    wrong = []
    for path, source in sources.items():
        package = Path(path).parts[0].removesuffix(".py")
        for imported in sorted(imported_packages(source) & set(LAYERS)):
            if imported != package and LAYERS[imported] >= LAYERS[package]:
                wrong.append(f"{path} imports {imported} (layer {LAYERS[package]} may only import lower layers)")
    return wrong


def test_every_import_points_down():
    assert violations(project_modules()) == []


@pytest.mark.parametrize(
    "path, source",
    [
        ("store/x.py", "def f():\n    from render.colour import luminance\n"),  # function level, store -> render
        ("common/x.py", "import runtime.config\n"),  # the leaf imports nothing of the project
        ("presence/x.py", "from contact import errors\n"),  # one feature -> another
        ("handlers/x.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from runtime.services import S\n"),
    ],
)
def test_a_wrong_way_import_is_caught(path, source):
    assert violations({path: source}) != []


def test_every_package_has_a_layer():
    """A new top-level package must be placed in the picture (and in setup.cfg's package list)."""
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests", "bench", "loadtest"}
    assert packages <= set(LAYERS), f"unplaced packages: {sorted(packages - set(LAYERS))}"
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    included = setup["options.packages.find"]["include"].split()
    for package in packages:
        assert {package, f"{package}.*"} <= set(included), f"{package} is missing from setup.cfg's package list"
