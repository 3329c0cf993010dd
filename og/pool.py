"""A bounded pool of render processes, awaited from the event loop.

At most `size` renders run at once (one per process); callers beyond that wait
on a semaphore in the event loop instead of piling into the executor's queue.
A crashed worker breaks a ProcessPoolExecutor for good, so the pool is
rebuilt on the next render and the failed call raises `RenderError`.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from og import worker
from render.og_card import CardInput, RenderError
from render.og_fonts import Charsets

log = logging.getLogger("hepgg.og")


class RenderPool:
    def __init__(self, size: int, timeout: float = 10.0):
        self.size = max(1, size)
        self.timeout = timeout
        self.charsets: Charsets | None = None  # handed to every worker, so none reads the fonts' maps again
        self._slots = asyncio.Semaphore(self.size)
        self._executor: ProcessPoolExecutor | None = None
        self._context = multiprocessing.get_context("spawn")  # never fork a process that runs an event loop

    def _ensure(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                self.size, mp_context=self._context, initializer=worker.init, initargs=(self.charsets,)
            )
        return self._executor

    async def start(self, sample: CardInput, charsets: Charsets | None = None) -> list[int]:
        """Spawn every worker and render one card in each, so the first visitor waits for nobody."""
        self.charsets = charsets
        executor = self._ensure()
        loop = asyncio.get_running_loop()
        pids = await asyncio.gather(*(loop.run_in_executor(executor, worker.warm, sample) for _ in range(self.size)))
        return sorted(set(pids))

    def pids(self) -> list[int]:
        processes = getattr(self._executor, "_processes", None) or {}
        return sorted(processes)

    async def render(self, card: CardInput) -> bytes:
        async with self._slots:
            executor = self._ensure()
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
