"""LangGraph's own checkpointer conformance suite against `FlowstateSaver` on the real server:
all 8 capabilities, 81 tests, on the async methods and again on the sync ones (the suite calls
only async methods, so a subclass routes each to its sync twin in a thread)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.conformance import checkpointer_test, validate

from flowstate_client.langgraph import FlowstateSaver

EXPECTED = 81


class SyncRoutedSaver(FlowstateSaver):
    """Every async method runs its sync twin in a thread: the suite then tests the sync ones."""

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit))
        )
        for item in found:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)


def _run_suite(saver_cls: type[FlowstateSaver], url: str) -> tuple[int, int, list[str]]:
    @checkpointer_test(name=saver_cls.__name__)
    async def saver() -> AsyncIterator[FlowstateSaver]:
        s = saver_cls(base_url=url)
        yield s
        await s.aclose()
        s.close()

    report = asyncio.run(validate(saver))
    passed = sum(r.tests_passed for r in report.results.values())
    failed = sum(r.tests_failed for r in report.results.values())
    failures = [str(f) for r in report.results.values() for f in r.failures]
    return passed, failed, failures


@pytest.mark.parametrize("saver_cls", [FlowstateSaver, SyncRoutedSaver])
def test_conformance(url: str, saver_cls: type[FlowstateSaver]) -> None:
    passed, failed, failures = _run_suite(saver_cls, url)
    assert (passed, failed) == (EXPECTED, 0), failures
