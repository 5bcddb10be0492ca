"""LangGraph steps per second through one checkpointer: the same four-node graph, invoked on
fresh threads one after another (sync, `invoke`) and from 16 concurrent tasks (`ainvoke`).

    python langgraph_steps.py flowstate URL [seconds]
    python langgraph_steps.py sqlite PATH [seconds]
    python langgraph_steps.py postgres POSTGRES_URL [seconds]
    python langgraph_steps.py redis REDIS_URL [seconds]

Prints one JSON line: steps/s and per-invoke p50/p99 for each mode. A step is one node run,
which LangGraph checkpoints (with its pending writes) before the next."""

from __future__ import annotations

import asyncio
import json
import operator
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

NODES = ("plan", "research", "write", "review")
CONCURRENCY = 16


class State(TypedDict, total=False):
    topic: str
    log: Annotated[list[str], operator.add]


def node(name: str) -> Callable[[State], dict[str, Any]]:
    def run(state: State) -> dict[str, Any]:
        return {"log": [f"{name}:{state['topic']}"]}

    return run


def build(saver: BaseCheckpointSaver[Any]) -> Any:
    graph = StateGraph(State)
    previous = START
    for name in NODES:
        graph.add_node(name, node(name))
        graph.add_edge(previous, name)
        previous = name
    graph.add_edge(previous, END)
    return graph.compile(checkpointer=saver)


def figures(latencies: list[float], elapsed: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "invokes": len(ordered),
        "steps_per_s": round(len(ordered) * len(NODES) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 2),
    }


def run_sync(graph: Any, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        out = graph.invoke({"topic": "x"}, {"configurable": {"thread_id": uuid.uuid4().hex}})
        latencies.append(time.perf_counter() - t0)
        assert len(out["log"]) == len(NODES), out
    return figures(latencies, time.perf_counter() - start)


async def run_async(graph: Any, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    start = time.perf_counter()

    async def worker() -> None:
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            config = {"configurable": {"thread_id": uuid.uuid4().hex}}
            out = await graph.ainvoke({"topic": "x"}, config)
            latencies.append(time.perf_counter() - t0)
            assert len(out["log"]) == len(NODES), out

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return figures(latencies, time.perf_counter() - start)


def savers(kind: str, where: str, stack: ExitStack) -> tuple[Any, Callable[[], Any]]:
    """The sync saver, and a factory for the async one (made inside the event loop)."""
    if kind == "flowstate":
        from flowstate_client.langgraph import FlowstateSaver

        saver = FlowstateSaver(base_url=where)
        return saver, lambda: _ready(saver)
    if kind == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        sync = stack.enter_context(SqliteSaver.from_conn_string(where))
        return sync, lambda: AsyncSqliteSaver.from_conn_string(where)
    if kind == "postgres":
        from langgraph.checkpoint.postgres import PostgresSaver
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        sync = stack.enter_context(PostgresSaver.from_conn_string(where))
        sync.setup()
        return sync, lambda: AsyncPostgresSaver.from_conn_string(where)
    if kind == "redis":
        from langgraph.checkpoint.redis import RedisSaver
        from langgraph.checkpoint.redis.aio import AsyncRedisSaver

        sync = stack.enter_context(RedisSaver.from_conn_string(where))
        sync.setup()
        return sync, lambda: AsyncRedisSaver.from_conn_string(where)
    raise SystemExit(f"unknown saver {kind}")


class _ready(AbstractContextManager[Any]):
    """An already-made saver, as an async context manager like the others' factories."""

    def __init__(self, saver: Any) -> None:
        self.saver = saver

    def __exit__(self, *exc: object) -> None:
        return None

    async def __aenter__(self) -> Any:
        return self.saver

    async def __aexit__(self, *exc: object) -> None:
        return None


async def async_mode(factory: Callable[[], Any], seconds: float) -> dict[str, float]:
    async with factory() as saver:
        if hasattr(saver, "asetup"):
            await saver.asetup()
        return await run_async(build(saver), seconds)


def main() -> None:
    kind, where = sys.argv[1:3]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
    with ExitStack() as stack:
        try:
            sync, factory = savers(kind, where, stack)
            result = {
                "saver": kind,
                "sync": run_sync(build(sync), seconds),
                "async_c16": asyncio.run(async_mode(factory, seconds)),
            }
        # A saver that cannot run here (e.g. missing Redis modules) is a result too.
        except Exception as e:
            result = {"saver": kind, "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
