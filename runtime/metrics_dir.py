"""The directory where `serve`'s workers write their metrics, so any worker reports the sum.

prometheus_client decides on multiprocess mode once, when it is first imported,
from PROMETHEUS_MULTIPROC_DIR. So `serve` (and only `serve`: `--help` and the
other commands create nothing) makes a fresh directory and sets the variable
before anything imports prometheus_client, passes the same path on explicitly
(common/metrics.py reads no environment), and removes the directory on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def metrics_directory() -> Iterator[str]:
    """A new directory for this server's metrics, set up for prometheus_client, removed afterwards."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the metrics directory was set")
    path = tempfile.mkdtemp(prefix="hepgg-metrics-")
    previous = os.environ.get(ENV)
    os.environ[ENV] = path  # for prometheus_client (read at its import), and for forked workers
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
