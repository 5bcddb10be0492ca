"""The `cached` decorator: concurrent callers with the same arguments compute once."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from flowstate_client import AsyncClient, Client


def test_concurrent_callers_compute_once(url: str) -> None:
    calls = 0
    lock = threading.Lock()
    with Client(url) as fs:

        @fs.cached("summarizer", lease_ms=10_000, wait_ms=10_000)
        def summarize(text: str, *, style: str = "short") -> dict[str, str]:
            nonlocal calls
            with lock:
                calls += 1
            time.sleep(0.3)
            return {"summary": f"{style}:{text[:5]}"}

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: summarize("hello world", style="bullet"), range(8)))
        assert calls == 1
        assert results == [{"summary": "bullet:hello"}] * 8
        summarize("other text")
        assert calls == 2
        stats = fs.cache_stats("summarizer")
        assert stats["hit"] >= 7
        assert fs.cache_invalidate("summarizer") == 2
        summarize("other text")
        assert calls == 3


def test_async_cached(url: str) -> None:
    async def run() -> None:
        calls = 0
        async with AsyncClient(url) as fs:

            @fs.cached("planner", lease_ms=10_000, wait_ms=10_000)
            async def plan(goal: str) -> list[str]:
                nonlocal calls
                calls += 1
                await asyncio.sleep(0.3)
                return [goal, "done"]

            results = await asyncio.gather(*(plan("ship") for _ in range(6)))
            assert calls == 1
            assert results == [["ship", "done"]] * 6

    asyncio.run(run())


def test_a_failed_computation_hands_the_lease_on(url: str) -> None:
    """The lease holder raises: its lease is given up, so the caller waiting on it computes
    at once instead of after the 20 s wait (the lease itself would hold for 30 s)."""
    attempts = 0
    lock = threading.Lock()
    with Client(url) as fs:

        @fs.cached("flaky", lease_ms=30_000, wait_ms=20_000)
        def flaky(x: int) -> int:
            nonlocal attempts
            with lock:
                attempts += 1
                first = attempts == 1
            time.sleep(0.3)
            if first:
                raise RuntimeError("model timed out")
            return x * 2

        with ThreadPoolExecutor(2) as pool:
            holder = pool.submit(flaky, 21)
            time.sleep(0.1)
            waiter = pool.submit(flaky, 21)
            with pytest.raises(RuntimeError):
                holder.result()
            started = time.monotonic()
            assert waiter.result() == 42
            assert time.monotonic() - started < 10, "the waiter waited for the lease to lapse"
        assert attempts == 2
