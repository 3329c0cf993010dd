"""Code that runs inside the render worker processes (spawned, not forked).

Each worker keeps one `CardRenderer`, so its background, avatar and text-width
caches live as long as the worker. ImageMagick's own threads are limited to one
(MAGICK_THREAD_LIMIT is set before wand loads): the pool's processes are the
parallelism, and threads inside one render only fought over the 2 cores.
The server passes the font tables in (render/og_fonts.py), so a new worker
does not spend a second reading them again.

A render process runs at a lower priority (`NICENESS`) than the server's workers: a card is
drawn once and then cached, while a page visitor is waiting now. A render process's start
(interpreter, wand and ImageMagick, the first card with its fonts and emoji: ~0.4 s of CPU
idle, 0.6-1.2 s on a loaded machine) is most of a replica's start, and at the workers'
priority it took the cores from the pages the other replicas were serving (deploy/rehearse).
"""

from __future__ import annotations

import os
import signal

from common.process import die_with_parent
from render.og_card import CardInput
from render.og_fonts import FontTables

NICENESS = 10  # added to the server's: ~1/10 of a core's share against a busy worker at the server's own
# The ImageMagick that scripts/install.sh and the Dockerfile install (libmagickwand-6.q16-6). Without a suffix,
# wand asks ctypes.util.find_library for 24 other names first, each an ldconfig and a gcc run that find
# nothing: 0.35 s of CPU and 0.55 s per render process. A wrong guess costs two lookups, then wand's own search.
MAGICK_LIBRARY_SUFFIX = "-6.Q16"

_renderer = None


def init(fonts: FontTables | None = None) -> None:
    os.nice(NICENESS)  # first: the start itself is the costliest part
    os.environ["MAGICK_THREAD_LIMIT"] = "1"
    os.environ.setdefault("WAND_MAGICK_LIBRARY_SUFFIX", MAGICK_LIBRARY_SUFFIX)  # an operator's own comes first
    os.environ["OMP_NUM_THREADS"] = "1"
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops us through the pool
    die_with_parent()  # never outlive the server
    global _renderer
    from render.og_draw import CardRenderer  # wand loads here, after the environment above is set

    _renderer = CardRenderer(fonts=fonts)


def render(card: CardInput) -> bytes:
    assert _renderer is not None, "init() runs first in every worker"
    return _renderer.render(card)


def warm(card: CardInput) -> int:
    """First renders load fonts and coders (0.3-0.4 s); do that before traffic arrives."""
    render(card)
    return os.getpid()
