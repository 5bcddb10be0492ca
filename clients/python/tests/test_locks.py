"""Locks as context managers: fencing tokens grow, the background refresh keeps a lock past
its TTL, exit releases it."""

from __future__ import annotations

import asyncio
import time

import pytest

from flowstate_client import AsyncClient, Client, LockHeld


def test_held_and_refreshed_then_released(url: str) -> None:
    with Client(url) as fs:
        with fs.lock("job", ttl_ms=600, wait_ms=0) as held:
            first = held.fencing_token
            time.sleep(1.5)  # well past the TTL: only the refreshes keep it
            with pytest.raises(LockHeld) as busy:
                fs.acquire_lock("job", 1000)
            assert busy.value.retry_after is not None
            assert not held.lost
        with fs.lock("job", ttl_ms=1000, wait_ms=0) as again:
            assert again.fencing_token > first


def test_async_lock_excludes(url: str) -> None:
    async def run() -> None:
        async with AsyncClient(url) as fs:
            inside = 0
            most = 0
            tokens: list[int] = []

            async def worker() -> None:
                nonlocal inside, most
                for _ in range(5):
                    async with fs.lock("shared", ttl_ms=2000, wait_ms=10_000) as held:
                        tokens.append(held.fencing_token)
                        inside += 1
                        most = max(most, inside)
                        await asyncio.sleep(0.005)
                        inside -= 1

            await asyncio.gather(*(worker() for _ in range(4)))
            assert most == 1
            assert tokens == sorted(tokens)
            assert len(set(tokens)) == 20

    asyncio.run(run())
