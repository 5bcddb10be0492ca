"""`FlowstateSaver`: a LangGraph checkpoint saver that keeps checkpoints in flowstate.

A LangGraph thread's checkpoints live in flowstate's ledger, each with its namespace, parent,
metadata (queryable by top-level equality, `run_id` included) and the serializer's opaque
`(type, bytes)`; pending writes with it. About one HTTP call per checkpoint and one per batch
of writes. Both the sync methods (LangGraph calls them from `invoke`/`stream`) and the async
ones (`ainvoke`/`astream`) are here, plus `delete_for_runs`, `copy_thread` and `prune`.

    from flowstate_client.langgraph import FlowstateSaver

    graph = builder.compile(checkpointer=FlowstateSaver(base_url="http://127.0.0.1:8080"))

Needs the `langgraph` extra: `pip install "./clients/python[langgraph]"`.
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from . import _types as t
from .client import AsyncClient, Client

#: Most checkpoints one `list` answers (the server's cap).
LIST_MAX = 10_000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _configurable(config: RunnableConfig) -> dict[str, Any]:
    return dict(config.get("configurable") or {})


class FlowstateSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer backed by a flowstate server."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        token: str | None = None,
        serde: SerializerProtocol | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(serde=serde)
        # Credentials stay in the clients, never in what the saver serializes.
        self._base_url = base_url
        self._token = token
        self._timeout = timeout
        self._client = Client(base_url, token=token, timeout=timeout)
        self._aclients: dict[asyncio.AbstractEventLoop, AsyncClient] = {}

    def close(self) -> None:
        self._client.close()

    async def aclose(self) -> None:
        client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def _aclient(self) -> AsyncClient:
        # An httpx.AsyncClient belongs to the loop it first ran on; LangGraph may be driven
        # from several loops (asyncio.run per call), so one client per loop.
        loop = asyncio.get_running_loop()
        for other in [lp for lp in self._aclients if lp.is_closed()]:
            del self._aclients[other]
        client = self._aclients.get(loop)
        if client is None:
            client = AsyncClient(self._base_url, token=self._token, timeout=self._timeout)
            self._aclients[loop] = client
        return client

    # Encoding

    def _checkpoint_body(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata
    ) -> tuple[str, str, dict[str, Any]]:
        conf = _configurable(config)
        kind, data = self.serde.dumps_typed(checkpoint)
        body = {
            "checkpoint_ns": conf.get("checkpoint_ns", ""),
            "parent_checkpoint_id": conf.get("checkpoint_id"),
            "kind": kind,
            "data": _b64(data),
            "metadata": dict(get_serializable_checkpoint_metadata(config, metadata)),
        }
        return conf["thread_id"], checkpoint["id"], body

    def _writes(self, writes: Sequence[tuple[str, Any]]) -> list[t.WriteItem]:
        items: list[t.WriteItem] = []
        for i, (channel, value) in enumerate(writes):
            kind, data = self.serde.dumps_typed(value)
            items.append(
                {
                    "idx": WRITES_IDX_MAP.get(channel, i),
                    "channel": channel,
                    "type": kind,
                    "value": _b64(data),
                }
            )
        return items

    def _tuple(self, item: t.CheckpointTuple) -> CheckpointTuple:
        ids = {"thread_id": item["thread_id"], "checkpoint_ns": item["checkpoint_ns"]}
        parent = item.get("parent_checkpoint_id")
        return CheckpointTuple(
            config={"configurable": {**ids, "checkpoint_id": item["checkpoint_id"]}},
            checkpoint=self.serde.loads_typed((item["type"], base64.b64decode(item["checkpoint"]))),
            metadata=cast(CheckpointMetadata, item["metadata"]),
            parent_config={"configurable": {**ids, "checkpoint_id": parent}} if parent else None,
            pending_writes=[
                (
                    w["task_id"],
                    w["channel"],
                    self.serde.loads_typed((w["type"], base64.b64decode(w["value"]))),
                )
                for w in item["pending_writes"]
            ],
        )

    @staticmethod
    def _one(config: RunnableConfig) -> dict[str, Any]:
        conf = _configurable(config)
        return {
            "thread_id": conf["thread_id"],
            "checkpoint_ns": conf.get("checkpoint_ns", ""),
            "checkpoint_id": get_checkpoint_id(config),
            "limit": 1,
        }

    @staticmethod
    def _search(
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> dict[str, Any]:
        conf = _configurable(config) if config else {}
        return {
            "thread_id": conf.get("thread_id"),
            "checkpoint_ns": conf.get("checkpoint_ns"),
            "checkpoint_id": conf.get("checkpoint_id") or None,
            "before": get_checkpoint_id(before) if before else None,
            "limit": LIST_MAX if limit is None else min(limit, LIST_MAX),
            "filter": filter or None,
        }

    @staticmethod
    def _written(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint_id,
            }
        }

    def get_next_version(self, current: str | None, channel: None) -> str:
        # Zero-padded strings compare in order, as LangGraph's own savers make them.
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    # Sync

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        found = self._client.search_checkpoints(**self._one(config))
        return self._tuple(found[0]) if found else None

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        for item in self._client.search_checkpoints(**self._search(config, filter, before, limit)):
            yield self._tuple(item)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        thread_id, checkpoint_id, body = self._checkpoint_body(config, checkpoint, metadata)
        self._client.put_checkpoint(thread_id, checkpoint_id, **body)
        return self._written(thread_id, body["checkpoint_ns"], checkpoint_id)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        conf = _configurable(config)
        self._client.put_checkpoint_writes(
            conf["thread_id"],
            conf["checkpoint_id"],
            self._writes(writes),
            task_id=task_id,
            task_path=task_path,
            checkpoint_ns=conf.get("checkpoint_ns", ""),
        )

    def delete_thread(self, thread_id: str) -> None:
        self._client.delete_thread(thread_id)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._client.delete_runs(list(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._client.copy_thread(source_thread_id, target_thread_id)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._client.prune_threads(list(thread_ids), strategy)

    # Async

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        found = await self._aclient().search_checkpoints(**self._one(config))
        return self._tuple(found[0]) if found else None

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found = await self._aclient().search_checkpoints(
            **self._search(config, filter, before, limit)
        )
        for item in found:
            yield self._tuple(item)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        thread_id, checkpoint_id, body = self._checkpoint_body(config, checkpoint, metadata)
        await self._aclient().put_checkpoint(thread_id, checkpoint_id, **body)
        return self._written(thread_id, body["checkpoint_ns"], checkpoint_id)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        conf = _configurable(config)
        await self._aclient().put_checkpoint_writes(
            conf["thread_id"],
            conf["checkpoint_id"],
            self._writes(writes),
            task_id=task_id,
            task_path=task_path,
            checkpoint_ns=conf.get("checkpoint_ns", ""),
        )

    async def adelete_thread(self, thread_id: str) -> None:
        await self._aclient().delete_thread(thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._aclient().delete_runs(list(run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._aclient().copy_thread(source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._aclient().prune_threads(list(thread_ids), strategy)
