"""common/singleflight.py: concurrent callers share one load, and one caller leaving never fails the others."""

from __future__ import annotations

import asyncio

import pytest

from common.singleflight import SingleFlight


async def test_concurrent_callers_share_one_load():
    flights: SingleFlight[int] = SingleFlight()
    loads = []
    release = asyncio.Event()

    async def load() -> int:
        loads.append(1)
        await release.wait()
        return 42

    callers = [asyncio.create_task(flights.run("k", load)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*callers) == [42] * 5
    assert loads == [1] and len(flights) == 0


async def test_a_cancelled_first_caller_does_not_fail_the_others():
    flights: SingleFlight[str] = SingleFlight()
    started, release = asyncio.Event(), asyncio.Event()

    async def load() -> str:
        started.set()
        await release.wait()
        return "card"

    first = asyncio.create_task(flights.run("k", load))
    await started.wait()
    second = asyncio.create_task(flights.run("k", load))
    await asyncio.sleep(0)
    first.cancel()  # the first visitor hangs up
    with pytest.raises(asyncio.CancelledError):
        await first
    release.set()
    assert await asyncio.wait_for(second, 2) == "card"  # not the first caller's CancelledError


async def test_a_failed_load_fails_its_waiters_and_the_next_call_loads_again():
    flights: SingleFlight[int] = SingleFlight()
    attempts = []

    async def load() -> int:
        attempts.append(1)
        await asyncio.sleep(0.01)
        if len(attempts) == 1:
            raise RuntimeError("store hiccup")
        return 7

    results = await asyncio.gather(flights.run("k", load), flights.run("k", load), return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError] and len(attempts) == 1
    assert await flights.run("k", load) == 7
