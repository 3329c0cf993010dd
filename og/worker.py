"""Code that runs inside the render worker processes (spawned, not forked).

Each worker keeps one `CardRenderer`, so its background, avatar and text-width
caches live as long as the worker. ImageMagick's own threads are limited to one
(MAGICK_THREAD_LIMIT is set before wand loads): the pool's processes are the
parallelism, and threads inside one render only fought over the 2 cores.
"""

from __future__ import annotations

import ctypes
import os
import signal

_renderer = None


def init() -> None:
    os.environ["MAGICK_THREAD_LIMIT"] = "1"
    os.environ["OMP_NUM_THREADS"] = "1"
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops us through the pool
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: never outlive the server
    except (OSError, AttributeError):
        pass
    global _renderer
    from render.og_card import CardRenderer

    _renderer = CardRenderer()


def render(card) -> bytes:
    return _renderer.render(card)


def warm(card) -> int:
    """First renders load fonts and coders (0.3-0.4 s); do that before traffic arrives."""
    _renderer.render(card)
    return os.getpid()
