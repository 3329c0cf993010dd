"""`python -m runtime.healthcheck`: the container's HEALTHCHECK, probing where `serve` listens.

The address and port come from the same `load_config` as `serve` (HEPGG_ADDRESS, HEPGG_PORT, a HEPGG_CONFIG
file), so a container started with HEPGG_PORT=9999 is probed on 9999, never on a port some other process
on a host network may hold. A wildcard address is probed on loopback of the same family (Tornado binds
`::` as IPv6 only). Exit 0 when GET /healthz answers 200 within the timeout, else 1 with the reason on
stderr (the engine keeps it in the health log). Flags given to `serve` itself are not visible here: in a
container, set the port with HEPGG_PORT.
"""

from __future__ import annotations

import http.client
import sys

from runtime.config import ConfigError, load_config

WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def probe_target(address: str, port: int) -> tuple[str, int]:
    return WILDCARDS.get(address, address), port


def check(environ: dict[str, str] | None = None, timeout: float = 2.0) -> str | None:
    """None when healthy, else why not."""
    try:
        config = load_config(environ=environ)
    except ConfigError as exc:
        return f"configuration error: {exc}"
    host, port = probe_target(config.address, config.port)
    if port == 0:
        return "HEPGG_PORT is 0 (a random port): nothing to probe"
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", "/healthz")
        status = connection.getresponse().status
    except OSError as exc:
        return f"GET http://{host}:{port}/healthz: {exc}"
    finally:
        connection.close()
    return None if status == 200 else f"GET http://{host}:{port}/healthz answered {status}"


def main() -> int:
    problem = check()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
