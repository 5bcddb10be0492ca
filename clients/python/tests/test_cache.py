"""The `cached` decorator: concurrent callers with the same arguments compute once."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

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
