"""Background loops stop on close even when a driver turns their cancellation into a timeout error."""

from __future__ import annotations

import asyncio

from common.lifecycle import Lifecycle
from common.tasks import cancel_and_wait, raise_if_cancelling, start_background


async def driver_call():
    """What asyncio.wait_for can do on 3.11 when a cancel lands as its timeout fires: swallow it."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        raise TimeoutError("driver timed out") from None


async def retrying_loop(guarded: bool, attempts: list, running: list | None = None):
    while running is None or running:
        try:
            await driver_call()
        except TimeoutError:
            attempts.append(1)
            if guarded:
                raise_if_cancelling()
            await asyncio.sleep(0.01)  # the retry back-off


async def test_a_guarded_loop_stops_when_its_cancel_is_swallowed():
    lifecycle, attempts = Lifecycle(), []
    task = start_background(lifecycle, retrying_loop(True, attempts), "guarded")
    await asyncio.sleep(0.05)
    [stop] = lifecycle.closers
    assert stop.__qualname__ == "stop guarded"
    await asyncio.wait_for(stop(), 2)
    assert task.cancelled() and attempts == [1]


async def test_an_unguarded_loop_would_retry_forever():
    """The failure the guard prevents (so the test above can fail)."""
    lifecycle, attempts, running = Lifecycle(), [], [True]
    task = start_background(lifecycle, retrying_loop(False, attempts, running), "unguarded")
    await asyncio.sleep(0.05)
    [stop] = lifecycle.closers
    try:
        done, _ = await asyncio.wait([asyncio.ensure_future(stop())], timeout=0.3)
        assert not done and not task.done()
        assert attempts == [1]  # it took its cancel for a timeout and went back to the driver
    finally:
        running.clear()  # end it for the test: the next (swallowed) cancel ends the loop
        task.cancel()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 2)


async def swallows_one_cancel_on_success(started: asyncio.Event):
    """What asyncio.wait_for can do on 3.11 when a cancel lands as the awaited call completes: return its
    result, the cancel gone; the loop then waits on an idle connection for good."""
    started.set()
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        pass  # "the call completed": carry on
    await asyncio.sleep(3600)  # reading an idle pub/sub connection


async def test_cancel_and_wait_cancels_again_a_task_that_swallowed_the_first():
    started = asyncio.Event()
    task = asyncio.create_task(swallows_one_cancel_on_success(started))
    await started.wait()
    await asyncio.wait_for(cancel_and_wait(task, again_after=0.05), 2)
    assert task.cancelled()
