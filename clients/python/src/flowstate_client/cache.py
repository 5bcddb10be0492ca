"""The agent cache as a decorator: a function's result cached under an agent name, keyed by
its arguments, computed once however many callers ask at the same time (the first gets a
lease and computes; the others wait for its result). If the computation raises, the lease is
given up at once, so a waiter computes instead of waiting for the lease to lapse."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._types import JSON
from .errors import FlowstateError, StaleLease

if TYPE_CHECKING:
    from .client import AsyncClient, Client

T = TypeVar("T")


def _input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> JSON:
    # The server canonicalises JSON (sorted keys) before hashing: argument order by keyword
    # does not matter. Arguments must be JSON values.
    return {"args": list(args), "kwargs": kwargs}


def cached(
    client: Client, agent: str, *, lease_ms: int, wait_ms: int
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """See `Client.cached`. The result must be a JSON value."""

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            key = _input(args, kwargs)
            found = client.cache_lookup(agent, key, lease_ms=lease_ms, wait_ms=wait_ms)
            if found["hit"]:
                value: T = (found.get("output") or {})["value"]
                return value
            started = time.perf_counter()
            token = found.get("lease_token")
            try:
                result = fn(*args, **kwargs)
            except BaseException:
                # Waiters take the lease at once instead of after lease_ms.
                if token is not None:
                    with contextlib.suppress(FlowstateError):
                        client.cache_release(agent, key, token)
                raise
            # A stale lease: ours lapsed and another caller stored first; its result stands.
            with contextlib.suppress(StaleLease):
                client.cache_store(
                    agent,
                    key,
                    {"value": result},
                    execution_time=time.perf_counter() - started,
                    lease_token=token,
                )
            return result

        return wrapper

    return decorate


def acached(
    client: AsyncClient, agent: str, *, lease_ms: int, wait_ms: int
) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """See `AsyncClient.cached`."""

    def decorate(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> T:
            key = _input(args, kwargs)
            found = await client.cache_lookup(agent, key, lease_ms=lease_ms, wait_ms=wait_ms)
            if found["hit"]:
                value: T = (found.get("output") or {})["value"]
                return value
            started = time.perf_counter()
            token = found.get("lease_token")
            try:
                result = await fn(*args, **kwargs)
            except BaseException:
                if token is not None:
                    with contextlib.suppress(FlowstateError):
                        await client.cache_release(agent, key, token)
                raise
            with contextlib.suppress(StaleLease):
                await client.cache_store(
                    agent,
                    key,
                    {"value": result},
                    execution_time=time.perf_counter() - started,
                    lease_token=token,
                )
            return result

        return wrapper

    return decorate
