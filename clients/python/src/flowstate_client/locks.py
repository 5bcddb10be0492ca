"""Holding a lock for a block of code: acquired on entry (waiting up to `wait_ms`), refreshed in
the background every `ttl_ms / 3`, released on exit. The fencing token goes with every write
to what the lock protects, which refuses tokens below the highest it has seen: that is what
keeps a holder that stalled past its lock (a pause, a slow network) from doing harm."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING

from ._types import LockGrant
from .errors import FlowstateError, LockNotHeld, Unavailable

if TYPE_CHECKING:
    from .client import AsyncClient, Client


class _Held:
    def __init__(self, name: str, ttl_ms: int, wait_ms: int) -> None:
        self.name = name
        self.ttl_ms = ttl_ms
        self.wait_ms = wait_ms
        self._grant: LockGrant | None = None
        #: Set when a refresh found the lock gone (expired and granted to someone else, or
        #: moved away with a lost Redis): stop writing.
        self.lost = False
        #: The last refresh error other than losing the lock (the refresher keeps trying).
        self.last_error: FlowstateError | None = None

    @property
    def grant(self) -> LockGrant:
        if self._grant is None:
            raise RuntimeError("the lock is not held: use it as a context manager")
        return self._grant

    @property
    def token(self) -> str:
        return self.grant["token"]

    @property
    def fencing_token(self) -> int:
        return self.grant["fencing_token"]

    @property
    def interval(self) -> float:
        return self.ttl_ms / 3000


class HeldLock(_Held):
    """`with client.lock(name) as held:` (see `Client.lock`)."""

    def __init__(self, client: Client, name: str, ttl_ms: int, wait_ms: int) -> None:
        super().__init__(name, ttl_ms, wait_ms)
        self._client = client
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> HeldLock:
        self._grant = self._client.acquire_lock(self.name, self.ttl_ms, wait_ms=self.wait_ms)
        self._thread = threading.Thread(
            target=self._refresh, name=f"flowstate-lock-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._client.refresh_lock(self.name, self.token, self.ttl_ms)
                self.last_error = None
            except LockNotHeld:
                self.lost = True
                return
            except FlowstateError as e:
                self.last_error = e

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self.lost:
            # Already gone (lapsed, moved), or the server cannot release it now: either way
            # it lapses by its TTL, and the block's own outcome matters more.
            with contextlib.suppress(LockNotHeld, Unavailable):
                self._client.release_lock(self.name, self.token)


class AsyncHeldLock(_Held):
    """`async with client.lock(name) as held:` (see `AsyncClient.lock`)."""

    def __init__(self, client: AsyncClient, name: str, ttl_ms: int, wait_ms: int) -> None:
        super().__init__(name, ttl_ms, wait_ms)
        self._client = client
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncHeldLock:
        self._grant = await self._client.acquire_lock(self.name, self.ttl_ms, wait_ms=self.wait_ms)
        self._task = asyncio.create_task(self._refresh())
        return self

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._client.refresh_lock(self.name, self.token, self.ttl_ms)
                self.last_error = None
            except LockNotHeld:
                self.lost = True
                return
            except FlowstateError as e:
                self.last_error = e

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.lost:
            with contextlib.suppress(LockNotHeld, Unavailable):
                await self._client.release_lock(self.name, self.token)
