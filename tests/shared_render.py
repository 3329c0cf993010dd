"""One set of OG render processes for the whole test session.

A fresh render process costs ~2.5 s before its first card (spawn, wand and ImageMagick,
fonts, cold caches) and ~0.07 s per card after; the suite renders cards in some forty
tests. Test servers get a `SharedRenderPool`: a real `RenderPool` (its slots and
timeout, rendering in real worker processes) whose executor is the session's, kept
across tests instead of shut down with each server. A test that kills a worker or
times out breaks that executor; the pool drops it and the next render builds another.

Tests about the pool's own life (laziness, warm-up, crashes, a missing font) mark
themselves `own_render_pool` and get the server's real, private pool.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest

from og import worker
from og.pool import RenderPool
from render.og_fonts import FontTables, font_tables

SHARED_PROCESSES = 2  # the test config's og_render_processes


class _Session:
    executor: ProcessPoolExecutor | None = None
    fonts: FontTables | None = None


def _executor() -> ProcessPoolExecutor:
    if _Session.fonts is None:
        _Session.fonts = font_tables()
    if _Session.executor is None:
        _Session.executor = ProcessPoolExecutor(
            SHARED_PROCESSES,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=worker.init,
            initargs=(_Session.fonts,),
        )
    return _Session.executor


class SharedRenderPool(RenderPool):
    async def _ready(self) -> ProcessPoolExecutor:
        async with self._starting:
            if self._executor is None:
                self._executor = _executor()  # the first call reads the font tables (once per session)
                self.fonts = _Session.fonts
            return self._executor

    def _discard(self, executor: ProcessPoolExecutor) -> None:
        super()._discard(executor)  # kills and shuts down a broken or stuck executor
        if _Session.executor is executor:
            _Session.executor = None

    async def close(self) -> None:
        self._executor = None  # the session's processes outlive this server


@pytest.fixture(scope="session", autouse=True)
def shared_render_processes():
    """Stops the session's render processes at the end (if any test rendered a card)."""
    yield
    executor, _Session.executor = _Session.executor, None
    if executor is not None:
        executor.shutdown(wait=True, cancel_futures=True)


def late_second_init(started, fonts: FontTables | None) -> None:
    """A render process's init in which the second process to start takes 1.5 s longer (test_og's warm-up test):
    the first renders every card sent meanwhile."""
    import time

    with started.get_lock():
        order = started.value
        started.value += 1
    if order == 1:
        time.sleep(1.5)
    worker.init(fonts)
