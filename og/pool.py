"""A bounded pool of render processes, awaited from the event loop.

Workers start on the first render (or on `warm()`), not when the pool is
built: a server that never renders a card never spawns one, and a fresh pool
costs nothing. At most `size` renders run at once (one per process); callers
beyond that wait on a semaphore in the event loop instead of piling into the
executor's queue. A crashed worker breaks a ProcessPoolExecutor for good, so
the pool is rebuilt on the next render and the failed call raises `RenderError`.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from og import worker
from render.og_card import CardInput, RenderError
from render.og_fonts import FontTables, font_tables

log = logging.getLogger("hepgg.og")

WARM_SECONDS = 30.0  # a process spawns in 1-2 s on a busy 2-core machine; warm() gives up (and says so) after this


class RenderPool:
    def __init__(self, size: int, timeout: float = 10.0, fonts: FontTables | None = None):
        self.size = max(1, size)
        self.timeout = timeout
        self.fonts = fonts  # read once (by `serve` before it forks), handed to every render process
        self._slots = asyncio.Semaphore(self.size)
        self._starting = asyncio.Lock()  # concurrent first renders read the fonts once and build one executor
        self._executor: ProcessPoolExecutor | None = None
        self._context = multiprocessing.get_context("spawn")  # never fork a process that runs an event loop

    async def _ready(self) -> ProcessPoolExecutor:
        """The executor, made on first use; its processes are spawned as renders need them (up to `size`)."""
        async with self._starting:
            if self.fonts is None:
                self.fonts = await asyncio.to_thread(font_tables)  # FontError if a font is missing
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    self.size, mp_context=self._context, initializer=worker.init, initargs=(self.fonts,)
                )
            return self._executor

    async def warm(self, sample: CardInput) -> list[int]:
        """Spawn every worker and render one card in each, so the first visitor waits for nobody.

        One card per process is not enough: a process that is up renders the next card too while another is
        still starting (a spawn imports everything again), and that one would then face its first visitor cold
        (CI caught a warmed pool with a process that had not yet run `worker.init`). So cards are sent in
        rounds until every process has rendered one, for at most WARM_SECONDS."""
        executor = await self._ready()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WARM_SECONDS
        warmed: set[int] = set()
        while True:
            cards = (loop.run_in_executor(executor, worker.warm, sample) for _ in range(self.size))
            warmed.update(await asyncio.gather(*cards))
            if len(warmed) >= self.size:
                return sorted(warmed)
            if loop.time() >= deadline:
                log.warning("%d of %d render processes warmed in %.0fs", len(warmed), self.size, WARM_SECONDS)
                return sorted(warmed)

    def pids(self) -> list[int]:
        """The worker processes running now (none before the first render or `warm()`)."""
        processes = getattr(self._executor, "_processes", None) or {}
        return sorted(processes)

    async def render(self, card: CardInput) -> bytes:
        async with self._slots:
            try:
                executor = await self._ready()
            except Exception as exc:  # a missing or unreadable font: this card cannot be drawn right
                raise RenderError(f"render pool cannot start: {exc}") from exc
            try:
                future = asyncio.get_running_loop().run_in_executor(executor, worker.render, card)
                return await asyncio.wait_for(future, self.timeout)
            except BrokenProcessPool as exc:
                self._discard(executor)
                raise RenderError("render worker died") from exc
            except TimeoutError as exc:
                self._discard(executor)  # a stuck worker would hold its slot forever
                raise RenderError(f"render took longer than {self.timeout:.0f}s") from exc
            except RenderError:
                raise
            except Exception as exc:  # wand errors arrive pickled from the worker
                raise RenderError(f"render failed: {exc!r}") from exc

    def _discard(self, executor: ProcessPoolExecutor) -> None:
        if self._executor is executor:
            self._executor = None
            log.warning("rebuilding the OG render pool")
            _kill(executor)
            executor.shutdown(wait=False, cancel_futures=True)

    async def close(self) -> None:
        """Stop the render processes now: they hold nothing worth waiting for, and shutdown has a deadline."""
        executor, self._executor = self._executor, None
        if executor is not None:
            processes = list((getattr(executor, "_processes", None) or {}).values())
            executor.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                if process.is_alive():
                    process.terminate()
            deadline = asyncio.get_running_loop().time() + 1.0
            while any(p.is_alive() for p in processes) and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)


def _kill(executor: ProcessPoolExecutor) -> None:
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        if process.is_alive():
            process.kill()
