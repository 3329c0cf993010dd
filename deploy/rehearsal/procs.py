"""Processes the rehearsal starts: each logs to a file of its own and dies with the rehearsal.

Every child gets PR_SET_PDEATHSIG (SIGKILL) and its own process group, so a rehearsal that is killed, even
with SIGKILL, takes its children with it; whatever still survives (nginx's workers, a replica's forked
workers) lives in one of the rehearsal's namespaces and is killed when the namespaces are removed
(netns.remove_leftovers), at the end of this run or at the start of the next.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:  # between fork and exec
    os.setpgrp()  # Ctrl-C on the terminal reaches the rehearsal only; it stops children in order
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, *, stdout_pipe: bool = False) -> Child:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=dict(self.env) if self.env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else log,
                stderr=log,
                preexec_fn=_child_setup,
                close_fds=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def read_line(self, timeout: float) -> str:
        """The next line of a child started with `stdout_pipe` (bounded in time)."""
        assert self.proc is not None and self.proc.stdout is not None
        import select

        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (not self.running and not select.select([self.proc.stdout], [], [], 0)[0]):
                raise TimeoutError(f"{self.name} printed no line within {timeout:.0f}s (see {self.log})")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(remaining, 0.2))
            if ready:
                byte = os.read(self.proc.stdout.fileno(), 1)
                if not byte:
                    raise TimeoutError(f"{self.name} closed its output (exit {self.proc.poll()}; see {self.log})")
                line += byte
        return line.decode()

    def send(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if still running after `timeout` seconds."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """`sig`, then SIGKILL after `timeout` seconds; the exit status."""
        if self.proc is None:
            return None
        self.send(sig)
        code = self.wait(timeout)
        if code is None:
            self.send(signal.SIGKILL)
            code = self.wait(10)
        return code

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll `predicate` until it returns something true; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
        except (OSError, ValueError) as exc:
            last_error, result = exc, None
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s" + (f" (last: {last_error})" if last_error else ""))
        time.sleep(interval)


def python_argv(module: str, *args: str, prefix: Sequence[str] = ()) -> list[str]:
    import sys

    return [*prefix, sys.executable, "-m", module, *args]
