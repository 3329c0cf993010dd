"""The production shape as the deployment files describe it, read from them so the rehearsal cannot drift.

- A replica's environment is the image's (`ENV HEPGG_*` of the Dockerfile's runtime stage), then
  deploy/compose.yaml's `x-app` environment with its `${VARIABLES}` filled in, then what only the rehearsal
  differs in (the stores' and fakes' addresses, the rehearsal network as trusted proxies), each listed in
  the results.
- SIGKILL follows SIGTERM after compose's `stop_grace_period`, as `docker stop` does.
- nginx runs deploy/nginx.conf itself; only the upstream addresses (compose's service names become the
  replicas' addresses), the pid/temp paths and the access log (for attributing answers to replicas) are
  replaced, and each replacement must match exactly what it expects, or the rehearsal refuses to start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent
ROOT = DEPLOY.parent

_VARIABLE = re.compile(r"\$\{(\w+)(?::([?-])([^}]*))?\}")
_UPSTREAM = re.compile(r"server app(\d+):(\d+)")
ACCESS_FORMAT = (
    'log_format rehearsal "$msec $remote_addr $remote_port $request_method $status '
    '[$upstream_addr] [$upstream_status] $request_time $bytes_sent $request_uri";'
)


class ShapeError(RuntimeError):
    """A deployment file is not what the rehearsal expects; the message says which and what."""


def image_environment(dockerfile: Path = ROOT / "Dockerfile") -> dict[str, str]:
    """`HEPGG_*` set by ENV in the runtime stage (what every replica starts with)."""
    text = dockerfile.read_text()
    stage = re.search(r"(?:\A|\n)FROM \S+ AS runtime\n(.*?)\nFROM ", text, re.S)
    if stage is None:
        raise ShapeError("Dockerfile: no `FROM … AS runtime` stage")
    environment: dict[str, str] = {}
    for instruction in re.findall(r"^ENV ((?:.*\\\n)*.*)$", stage.group(1), re.M):  # ENV with its continuations
        environment.update(re.findall(r"\b(HEPGG_\w+)=([^\s\\]+)", instruction))
    return environment


@dataclass(frozen=True)
class ComposeApp:
    environment: dict[str, str]  # still with ${VARIABLES}
    stop_grace: float  # seconds from SIGTERM to SIGKILL
    replicas: list[str]  # the app service names (app1, app2, ...)
    nofile: int


def compose_app(path: Path = DEPLOY / "compose.yaml") -> ComposeApp:
    services = yaml.safe_load(path.read_text())["services"]
    names = sorted(name for name in services if re.fullmatch(r"app\d+", name))
    if not names:
        raise ShapeError(f"{path}: no app services")
    app = services[names[0]]
    grace = re.fullmatch(r"(\d+)s", str(app["stop_grace_period"]))
    if grace is None:
        raise ShapeError(f"{path}: stop_grace_period {app['stop_grace_period']!r} is not N s")
    return ComposeApp(
        environment={k: str(v) for k, v in app["environment"].items()},
        stop_grace=float(grace.group(1)),
        replicas=names,
        nofile=int(app["ulimits"]["nofile"]["hard"]),
    )


def substitute(value: str, variables: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?}` (which must be given)."""

    def one(match: re.Match[str]) -> str:
        name, kind, default = match.group(1), match.group(2), match.group(3) or ""
        if name in variables:
            return variables[name]
        if kind == "-":
            return default
        raise ShapeError(f"compose variable {name} is required and the rehearsal does not set it")

    return _VARIABLE.sub(one, value)


def replica_environment(
    app: ComposeApp, variables: dict[str, str], overrides: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(environment, what the rehearsal changed from image + compose) for one replica."""
    environment = image_environment()
    environment.update({name: substitute(value, variables) for name, value in app.environment.items()})
    changed = {name: value for name, value in overrides.items() if environment.get(name) != value}
    environment.update(overrides)
    return environment, changed


def nginx_config(upstreams: list[str], directory: Path, path: Path = DEPLOY / "nginx.conf") -> str:
    """deploy/nginx.conf with the replicas' addresses, paths under `directory` and an access log."""
    text = path.read_text()
    found = _UPSTREAM.findall(text)
    if len(found) != len(upstreams):
        raise ShapeError(f"{path}: {len(found)} `server appN:PORT` lines, the rehearsal runs {len(upstreams)}")
    for (number, port), address in zip(found, upstreams, strict=True):
        text = text.replace(f"server app{number}:{port}", f"server {address}:{port}", 1)
    replacements = [
        (r"pid /tmp/[\w.-]+;", f"pid {directory}/nginx.pid;"),
        (r"(\w+_temp_path) /tmp/nginx-([\w-]+);", rf"\1 {directory}/\2;"),
        (r"access_log off;", f"{ACCESS_FORMAT}\n    access_log {directory}/access.log rehearsal;"),
    ]
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text)
        if count == 0:
            raise ShapeError(f"{path}: expected `{pattern}` to replace; the rehearsal needs updating")
    left = re.findall(r"/tmp/\S+", text.replace(str(directory), ""))
    if left:
        raise ShapeError(f"{path}: a /tmp path the rehearsal does not move: {left}")
    return text


def listen_port(path: Path = DEPLOY / "nginx.conf") -> int:
    match = re.search(r"(?:\A|\n)[ \t]*listen (\d+)", path.read_text())
    if match is None:
        raise ShapeError(f"{path}: no `listen PORT`")
    return int(match.group(1))


def app_port(path: Path = DEPLOY / "nginx.conf") -> int:
    return int(_UPSTREAM.findall(path.read_text())[0][1])
