"""`Client` and `AsyncClient`: the whole flowstate API over httpx, with typed errors and
capped retries of `503` answers (the server says when to come back with `Retry-After`)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from . import _api
from . import _types as t
from .errors import FlowstateError, error_for
from .events import AsyncEventStream, EventStream
from .locks import AsyncHeldLock, HeldLock

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0


class _Settings:
    """What both clients share: where, who, and how patiently."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        timeout: float,
        max_retries: int,
        max_backoff: float,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_backoff = max_backoff

    def delay(self, attempt: int, error: FlowstateError) -> float:
        """How long to wait before retry `attempt` (1-based) of a 503 or 429."""
        backoff = min(self.max_backoff, 0.1 * 2 ** (attempt - 1))
        wanted = error.retry_after if error.retry_after is not None else backoff
        return min(self.max_backoff, wanted) * (0.8 + 0.4 * random.random())


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _retryable(error: FlowstateError) -> bool:
    """A 503 or 429 whose request was not applied. A `request_timeout` may have been: the
    caller decides."""
    return error.status in (429, 503) and error.code != "request_timeout"


def _read(call: _api.Call[T], response: httpx.Response) -> T:
    if response.is_success or response.status_code in call.accept:
        return call.parse(response)
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    raise error_for(response.status_code, body, _retry_after(response))


class Client:
    """The flowstate API, blocking. Use as a context manager or call `close()`.

    `token` is sent as `Authorization: Bearer <token>`. A `503` or `429` is retried up to
    `max_retries` times, waiting what `Retry-After` says (capped at `max_backoff` seconds),
    then raised as `Unavailable` or `RateLimited`; a `503 request_timeout` is raised at once
    (the request may have been applied).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        max_backoff: float = 2.0,
        http: httpx.Client | None = None,
    ) -> None:
        self._s = _Settings(base_url, token, timeout, max_retries, max_backoff)
        self._http = http or httpx.Client(
            base_url=self._s.base_url, headers=self._s.headers, timeout=timeout
        )

    @property
    def base_url(self) -> str:
        return self._s.base_url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: _api.Call[T]) -> T:
        attempt = 0
        while True:
            response = self._http.request(
                call.method, call.path, json=call.json, params=dict(call.params)
            )
            try:
                return _read(call, response)
            except FlowstateError as e:
                attempt += 1
                if not _retryable(e) or attempt > self._s.max_retries:
                    raise
                time.sleep(self._s.delay(attempt, e))

    # Flows

    def register_flow(
        self,
        flow_type: str,
        *,
        flow_id: str | None = None,
        parent_flow_id: str | None = None,
        metadata: t.JSON | None = None,
        sensitive: bool = False,
    ) -> t.Flow:
        """Registers a flow (`flow_id` generated when absent) under an optional parent;
        `sensitive` stores its data encrypted (the server needs encryption keys)."""
        return self._send(
            _api.register_flow(
                flow_type,
                flow_id=flow_id,
                parent_flow_id=parent_flow_id,
                metadata=metadata,
                sensitive=sensitive,
            )
        )

    def get_flow(self, flow_id: str) -> t.Flow:
        return self._send(_api.get_flow(flow_id))

    def list_flows(
        self,
        *,
        status: str | None = None,
        flow_type: str | None = None,
        parent_flow_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> t.FlowPage:
        """One page of flows; pass its `next_cursor` back for the next."""
        return self._send(
            _api.list_flows(
                status=status,
                flow_type=flow_type,
                parent_flow_id=parent_flow_id,
                limit=limit,
                cursor=cursor,
            )
        )

    def children(self, flow_id: str, *, recursive: bool = False) -> list[str]:
        return self._send(_api.children(flow_id, recursive=recursive))

    def delete_flow(self, flow_id: str, *, recursive: bool = False) -> None:
        self._send(_api.delete_flow(flow_id, recursive=recursive))

    # Transitions

    def transition(
        self, flow_id: str, from_status: str, to_status: str, metadata: t.JSON | None = None
    ) -> t.Transitioned:
        """Moves the flow from `from_status` to `to_status` (409 if it is not in `from_status`)."""
        return self._send(_api.transition(flow_id, from_status, to_status, metadata))

    def transitions(
        self, flow_id: str, *, after: int | None = None, limit: int | None = None
    ) -> list[t.Transition]:
        return self._send(_api.transitions(flow_id, after=after, limit=limit))

    # Documents

    def put_state(self, flow_id: str, state: t.JSON) -> t.StateDoc:
        return self._send(_api.put_state(flow_id, state))

    def get_state(self, flow_id: str) -> t.StateDoc:
        return self._send(_api.get_state(flow_id))

    def put_phase(self, flow_id: str, phase: str, state: t.JSON) -> t.PhaseDoc:
        return self._send(_api.put_phase(flow_id, phase, state))

    def get_phase(self, flow_id: str, phase: str) -> t.PhaseDoc:
        return self._send(_api.get_phase(flow_id, phase))

    def phases(self, flow_id: str) -> list[str]:
        return self._send(_api.phases(flow_id))

    def put_agent(self, flow_id: str, agent: str, results: t.JSON) -> t.AgentDoc:
        return self._send(_api.put_agent(flow_id, agent, results))

    def get_agent(self, flow_id: str, agent: str) -> t.AgentDoc:
        return self._send(_api.get_agent(flow_id, agent))

    def agents(self, flow_id: str) -> list[str]:
        return self._send(_api.agents(flow_id))

    # Snapshots

    def snapshot(
        self, flow_id: str, state: t.JSON, *, snapshot_id: str | None = None
    ) -> t.Snapshot:
        return self._send(_api.snapshot(flow_id, state, snapshot_id))

    def snapshots(self, flow_id: str) -> list[str]:
        """Snapshot ids, newest first."""
        return self._send(_api.snapshots(flow_id))

    def get_snapshot(self, flow_id: str, snapshot_id: str) -> t.Snapshot:
        return self._send(_api.get_snapshot(flow_id, snapshot_id))

    def restore(self, flow_id: str, snapshot_id: str) -> t.FlowWithState:
        return self._send(_api.restore(flow_id, snapshot_id))

    def fork(
        self,
        flow_id: str,
        snapshot_id: str,
        *,
        new_flow_id: str | None = None,
        flow_type: str | None = None,
    ) -> t.FlowWithState:
        return self._send(_api.fork(flow_id, snapshot_id, new_flow_id, flow_type))

    # Events

    def publish(self, flow_id: str, event_type: str, payload: Any = None) -> str:
        """Publishes a custom event; its id."""
        return self._send(_api.publish(flow_id, event_type, payload))

    def events(
        self,
        flow_id: str,
        *,
        last_event_id: str | None = None,
        reconnect: bool = True,
    ) -> EventStream:
        """The flow's events as an iterator of `Event` dicts and `Reset`s: from now on, or
        after `last_event_id` (`"0"`: the whole history kept). It reconnects on its own,
        resuming after the last event it yielded; it ends after `FLOW_DELETED` or `close()`."""
        return EventStream(self._http, flow_id, last_event_id, reconnect, self._s.max_backoff)

    def connections(self, flow_id: str) -> list[t.SseConnection]:
        return self._send(_api.connections(flow_id))

    # Locks

    def acquire_lock(self, name: str, ttl_ms: int, *, wait_ms: int | None = None) -> t.LockGrant:
        return self._send(_api.acquire_lock(name, ttl_ms, wait_ms))

    def refresh_lock(self, name: str, token: str, ttl_ms: int) -> t.LockGrant:
        return self._send(_api.refresh_lock(name, token, ttl_ms))

    def release_lock(self, name: str, token: str) -> None:
        self._send(_api.release_lock(name, token))

    def lock(self, name: str, *, ttl_ms: int = 30_000, wait_ms: int = 30_000) -> HeldLock:
        """`with client.lock(name) as held:` holds the lock for the block, refreshing it in
        the background every `ttl_ms / 3`; `held.fencing_token` goes with every write to what
        it protects, and `held.lost` tells whether a refresh found it gone."""
        return HeldLock(self, name, ttl_ms, wait_ms)

    # Agent cache

    def cache_lookup(
        self,
        agent: str,
        input: t.JSON,
        *,
        context: t.JSON | None = None,
        lease_ms: int | None = None,
        wait_ms: int | None = None,
    ) -> t.Lookup:
        return self._send(
            _api.cache_lookup(agent, input, context=context, lease_ms=lease_ms, wait_ms=wait_ms)
        )

    def cache_store(
        self,
        agent: str,
        input: t.JSON,
        output: t.JSON,
        *,
        context: t.JSON | None = None,
        execution_time: float | None = None,
        lease_token: str | None = None,
    ) -> t.Stored:
        return self._send(
            _api.cache_store(
                agent,
                input,
                output,
                context=context,
                execution_time=execution_time,
                lease_token=lease_token,
            )
        )

    def cache_release(
        self, agent: str, input: t.JSON, lease_token: str, *, context: t.JSON | None = None
    ) -> None:
        """Gives up a lease without a result (the computation failed): a waiting caller takes
        it at once. `StaleLease` if the token no longer holds it."""
        self._send(_api.cache_release(agent, input, lease_token, context=context))

    def cache_stats(self, agent: str) -> t.CacheStats:
        return self._send(_api.cache_stats(agent))

    def cache_invalidate(self, agent: str, pattern: str | None = None) -> int:
        """Deletes the agent's entries (those whose hash matches `pattern`); how many."""
        return self._send(_api.cache_invalidate(agent, pattern))

    def cached(
        self, agent: str, *, lease_ms: int = 60_000, wait_ms: int = 30_000
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorates a function whose result is cached under `agent`, keyed by its
        arguments (JSON); concurrent callers with the same arguments compute it once."""
        from .cache import cached

        return cached(self, agent, lease_ms=lease_ms, wait_ms=wait_ms)

    # Checkpoints (LangGraph; `flowstate_client.langgraph.FlowstateSaver` is the saver)

    def put_checkpoint(
        self,
        thread_id: str,
        checkpoint_id: str,
        *,
        kind: str,
        data: str,
        metadata: t.JSON,
        checkpoint_ns: str = "",
        parent_checkpoint_id: str | None = None,
    ) -> None:
        """Stores a checkpoint: `kind` and base64 `data` are the serializer's output."""
        self._send(
            _api.put_checkpoint(
                thread_id,
                checkpoint_id,
                checkpoint_ns=checkpoint_ns,
                parent_checkpoint_id=parent_checkpoint_id,
                kind=kind,
                data=data,
                metadata=metadata,
            )
        )

    def put_checkpoint_writes(
        self,
        thread_id: str,
        checkpoint_id: str,
        writes: list[t.WriteItem],
        *,
        task_id: str,
        task_path: str = "",
        checkpoint_ns: str = "",
    ) -> None:
        self._send(
            _api.put_checkpoint_writes(
                thread_id,
                checkpoint_id,
                checkpoint_ns=checkpoint_ns,
                task_id=task_id,
                task_path=task_path,
                writes=writes,
            )
        )

    def search_checkpoints(
        self,
        *,
        thread_id: str | None = None,
        checkpoint_ns: str | None = None,
        checkpoint_id: str | None = None,
        before: str | None = None,
        limit: int | None = None,
        filter: t.JSON | None = None,
    ) -> list[t.CheckpointTuple]:
        """Checkpoints newest first, with their pending writes."""
        return self._send(
            _api.search_checkpoints(
                thread_id=thread_id,
                checkpoint_ns=checkpoint_ns,
                checkpoint_id=checkpoint_id,
                before=before,
                limit=limit,
                filter=filter,
            )
        )

    def delete_thread(self, thread_id: str) -> None:
        self._send(_api.delete_thread(thread_id))

    def copy_thread(self, thread_id: str, target_thread_id: str) -> None:
        self._send(_api.copy_thread(thread_id, target_thread_id))

    def delete_runs(self, run_ids: list[str]) -> None:
        self._send(_api.delete_runs(run_ids))

    def prune_threads(self, thread_ids: list[str], strategy: str = "keep_latest") -> None:
        self._send(_api.prune_threads(thread_ids, strategy))

    # Operations

    def memory(self, flow_id: str) -> t.JSON:
        """The flow's Redis footprint: `{keys: {key: bytes}, total_bytes}`."""
        return self._send(_api.memory(flow_id))

    def fallbacks(self, limit: int | None = None) -> list[t.JSON]:
        """The fallback log (times the hot tier was bypassed), newest first."""
        return self._send(_api.fallbacks(limit))

    # Backups (Redis data into the ledger)

    def create_backup(
        self, *, backup_id: str | None = None, patterns: list[str] | None = None
    ) -> t.JSON:
        """Backs up the keys matching `patterns` (the server's configured ones by default);
        answers when done. Pass `backup_id` to follow progress with `get_backup` meanwhile."""
        return self._send(_api.create_backup(backup_id, patterns))

    def list_backups(self) -> list[t.JSON]:
        return self._send(_api.list_backups())

    def get_backup(self, backup_id: str) -> t.JSON:
        return self._send(_api.get_backup(backup_id))

    def restore_backup(self, backup_id: str, *, patterns: list[str] | None = None) -> t.JSON:
        """Writes the backup's keys (those matching `patterns`, or all) back to Redis."""
        return self._send(_api.restore_backup(backup_id, patterns))

    # Health

    def health(self) -> t.JSON:
        """The health report (also when the server answers 503: see its `status`)."""
        return self._send(_api.health())


class AsyncClient:
    """The flowstate API for asyncio; the same methods as `Client`, awaited."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        max_backoff: float = 2.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._s = _Settings(base_url, token, timeout, max_retries, max_backoff)
        self._http = http or httpx.AsyncClient(
            base_url=self._s.base_url, headers=self._s.headers, timeout=timeout
        )

    @property
    def base_url(self) -> str:
        return self._s.base_url

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: _api.Call[T]) -> T:
        attempt = 0
        while True:
            response = await self._http.request(
                call.method, call.path, json=call.json, params=dict(call.params)
            )
            try:
                return _read(call, response)
            except FlowstateError as e:
                attempt += 1
                if not _retryable(e) or attempt > self._s.max_retries:
                    raise
                await asyncio.sleep(self._s.delay(attempt, e))

    async def register_flow(
        self,
        flow_type: str,
        *,
        flow_id: str | None = None,
        parent_flow_id: str | None = None,
        metadata: t.JSON | None = None,
        sensitive: bool = False,
    ) -> t.Flow:
        return await self._send(
            _api.register_flow(
                flow_type,
                flow_id=flow_id,
                parent_flow_id=parent_flow_id,
                metadata=metadata,
                sensitive=sensitive,
            )
        )

    async def get_flow(self, flow_id: str) -> t.Flow:
        return await self._send(_api.get_flow(flow_id))

    async def list_flows(
        self,
        *,
        status: str | None = None,
        flow_type: str | None = None,
        parent_flow_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> t.FlowPage:
        return await self._send(
            _api.list_flows(
                status=status,
                flow_type=flow_type,
                parent_flow_id=parent_flow_id,
                limit=limit,
                cursor=cursor,
            )
        )

    async def children(self, flow_id: str, *, recursive: bool = False) -> list[str]:
        return await self._send(_api.children(flow_id, recursive=recursive))

    async def delete_flow(self, flow_id: str, *, recursive: bool = False) -> None:
        await self._send(_api.delete_flow(flow_id, recursive=recursive))

    async def transition(
        self, flow_id: str, from_status: str, to_status: str, metadata: t.JSON | None = None
    ) -> t.Transitioned:
        return await self._send(_api.transition(flow_id, from_status, to_status, metadata))

    async def transitions(
        self, flow_id: str, *, after: int | None = None, limit: int | None = None
    ) -> list[t.Transition]:
        return await self._send(_api.transitions(flow_id, after=after, limit=limit))

    async def put_state(self, flow_id: str, state: t.JSON) -> t.StateDoc:
        return await self._send(_api.put_state(flow_id, state))

    async def get_state(self, flow_id: str) -> t.StateDoc:
        return await self._send(_api.get_state(flow_id))

    async def put_phase(self, flow_id: str, phase: str, state: t.JSON) -> t.PhaseDoc:
        return await self._send(_api.put_phase(flow_id, phase, state))

    async def get_phase(self, flow_id: str, phase: str) -> t.PhaseDoc:
        return await self._send(_api.get_phase(flow_id, phase))

    async def phases(self, flow_id: str) -> list[str]:
        return await self._send(_api.phases(flow_id))

    async def put_agent(self, flow_id: str, agent: str, results: t.JSON) -> t.AgentDoc:
        return await self._send(_api.put_agent(flow_id, agent, results))

    async def get_agent(self, flow_id: str, agent: str) -> t.AgentDoc:
        return await self._send(_api.get_agent(flow_id, agent))

    async def agents(self, flow_id: str) -> list[str]:
        return await self._send(_api.agents(flow_id))

    async def snapshot(
        self, flow_id: str, state: t.JSON, *, snapshot_id: str | None = None
    ) -> t.Snapshot:
        return await self._send(_api.snapshot(flow_id, state, snapshot_id))

    async def snapshots(self, flow_id: str) -> list[str]:
        return await self._send(_api.snapshots(flow_id))

    async def get_snapshot(self, flow_id: str, snapshot_id: str) -> t.Snapshot:
        return await self._send(_api.get_snapshot(flow_id, snapshot_id))

    async def restore(self, flow_id: str, snapshot_id: str) -> t.FlowWithState:
        return await self._send(_api.restore(flow_id, snapshot_id))

    async def fork(
        self,
        flow_id: str,
        snapshot_id: str,
        *,
        new_flow_id: str | None = None,
        flow_type: str | None = None,
    ) -> t.FlowWithState:
        return await self._send(_api.fork(flow_id, snapshot_id, new_flow_id, flow_type))

    async def publish(self, flow_id: str, event_type: str, payload: Any = None) -> str:
        return await self._send(_api.publish(flow_id, event_type, payload))

    def events(
        self,
        flow_id: str,
        *,
        last_event_id: str | None = None,
        reconnect: bool = True,
    ) -> AsyncEventStream:
        """`async for item in client.events(...)`: as `Client.events`."""
        return AsyncEventStream(self._http, flow_id, last_event_id, reconnect, self._s.max_backoff)

    async def connections(self, flow_id: str) -> list[t.SseConnection]:
        return await self._send(_api.connections(flow_id))

    async def acquire_lock(
        self, name: str, ttl_ms: int, *, wait_ms: int | None = None
    ) -> t.LockGrant:
        return await self._send(_api.acquire_lock(name, ttl_ms, wait_ms))

    async def refresh_lock(self, name: str, token: str, ttl_ms: int) -> t.LockGrant:
        return await self._send(_api.refresh_lock(name, token, ttl_ms))

    async def release_lock(self, name: str, token: str) -> None:
        await self._send(_api.release_lock(name, token))

    def lock(self, name: str, *, ttl_ms: int = 30_000, wait_ms: int = 30_000) -> AsyncHeldLock:
        """`async with client.lock(name) as held:`: as `Client.lock`."""
        return AsyncHeldLock(self, name, ttl_ms, wait_ms)

    async def cache_lookup(
        self,
        agent: str,
        input: t.JSON,
        *,
        context: t.JSON | None = None,
        lease_ms: int | None = None,
        wait_ms: int | None = None,
    ) -> t.Lookup:
        return await self._send(
            _api.cache_lookup(agent, input, context=context, lease_ms=lease_ms, wait_ms=wait_ms)
        )

    async def cache_store(
        self,
        agent: str,
        input: t.JSON,
        output: t.JSON,
        *,
        context: t.JSON | None = None,
        execution_time: float | None = None,
        lease_token: str | None = None,
    ) -> t.Stored:
        return await self._send(
            _api.cache_store(
                agent,
                input,
                output,
                context=context,
                execution_time=execution_time,
                lease_token=lease_token,
            )
        )

    async def cache_release(
        self, agent: str, input: t.JSON, lease_token: str, *, context: t.JSON | None = None
    ) -> None:
        """As `Client.cache_release`."""
        await self._send(_api.cache_release(agent, input, lease_token, context=context))

    async def cache_stats(self, agent: str) -> t.CacheStats:
        return await self._send(_api.cache_stats(agent))

    async def cache_invalidate(self, agent: str, pattern: str | None = None) -> int:
        return await self._send(_api.cache_invalidate(agent, pattern))

    def cached(
        self, agent: str, *, lease_ms: int = 60_000, wait_ms: int = 30_000
    ) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
        """Decorates an `async def` whose result is cached under `agent`: as `Client.cached`."""
        from .cache import acached

        return acached(self, agent, lease_ms=lease_ms, wait_ms=wait_ms)

    async def put_checkpoint(
        self,
        thread_id: str,
        checkpoint_id: str,
        *,
        kind: str,
        data: str,
        metadata: t.JSON,
        checkpoint_ns: str = "",
        parent_checkpoint_id: str | None = None,
    ) -> None:
        await self._send(
            _api.put_checkpoint(
                thread_id,
                checkpoint_id,
                checkpoint_ns=checkpoint_ns,
                parent_checkpoint_id=parent_checkpoint_id,
                kind=kind,
                data=data,
                metadata=metadata,
            )
        )

    async def put_checkpoint_writes(
        self,
        thread_id: str,
        checkpoint_id: str,
        writes: list[t.WriteItem],
        *,
        task_id: str,
        task_path: str = "",
        checkpoint_ns: str = "",
    ) -> None:
        await self._send(
            _api.put_checkpoint_writes(
                thread_id,
                checkpoint_id,
                checkpoint_ns=checkpoint_ns,
                task_id=task_id,
                task_path=task_path,
                writes=writes,
            )
        )

    async def search_checkpoints(
        self,
        *,
        thread_id: str | None = None,
        checkpoint_ns: str | None = None,
        checkpoint_id: str | None = None,
        before: str | None = None,
        limit: int | None = None,
        filter: t.JSON | None = None,
    ) -> list[t.CheckpointTuple]:
        return await self._send(
            _api.search_checkpoints(
                thread_id=thread_id,
                checkpoint_ns=checkpoint_ns,
                checkpoint_id=checkpoint_id,
                before=before,
                limit=limit,
                filter=filter,
            )
        )

    async def delete_thread(self, thread_id: str) -> None:
        await self._send(_api.delete_thread(thread_id))

    async def copy_thread(self, thread_id: str, target_thread_id: str) -> None:
        await self._send(_api.copy_thread(thread_id, target_thread_id))

    async def delete_runs(self, run_ids: list[str]) -> None:
        await self._send(_api.delete_runs(run_ids))

    async def prune_threads(self, thread_ids: list[str], strategy: str = "keep_latest") -> None:
        await self._send(_api.prune_threads(thread_ids, strategy))

    async def memory(self, flow_id: str) -> t.JSON:
        return await self._send(_api.memory(flow_id))

    async def fallbacks(self, limit: int | None = None) -> list[t.JSON]:
        return await self._send(_api.fallbacks(limit))

    async def create_backup(
        self, *, backup_id: str | None = None, patterns: list[str] | None = None
    ) -> t.JSON:
        return await self._send(_api.create_backup(backup_id, patterns))

    async def list_backups(self) -> list[t.JSON]:
        return await self._send(_api.list_backups())

    async def get_backup(self, backup_id: str) -> t.JSON:
        return await self._send(_api.get_backup(backup_id))

    async def restore_backup(self, backup_id: str, *, patterns: list[str] | None = None) -> t.JSON:
        return await self._send(_api.restore_backup(backup_id, patterns))

    async def health(self) -> t.JSON:
        return await self._send(_api.health())


__all__ = ["AsyncClient", "Client"]
