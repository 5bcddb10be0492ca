"""The flowstate HTTP API described once, as requests and how to read their answers; the sync
and async clients only send them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from . import _types as t

T = TypeVar("T")


def _json(response: httpx.Response) -> Any:
    return response.json()


def _none(_: httpx.Response) -> None:
    return None


def _key(name: str) -> Callable[[httpx.Response], Any]:
    return lambda response: response.json()[name]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: Mapping[str, str] = field(default_factory=dict)
    #: Error statuses whose body is still the answer (health's 503).
    accept: tuple[int, ...] = ()


def _seg(value: str) -> str:
    # Ids are `[A-Za-z0-9_.:-]` (the server refuses anything else); quoting keeps a bad one a
    # clear 400 or 404 instead of another path.
    return quote(value, safe="")


def _flow(flow_id: str, *rest: str) -> str:
    return "/".join(["/v1/flows", _seg(flow_id), *(_seg(r) for r in rest)])


def _drop_none(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


def _bool(value: bool) -> str:
    return "true" if value else "false"


# Flows


def register_flow(
    flow_type: str,
    *,
    flow_id: str | None,
    parent_flow_id: str | None,
    metadata: t.JSON | None,
    sensitive: bool = False,
) -> Call[t.Flow]:
    body = _drop_none(
        {
            "flow_type": flow_type,
            "flow_id": flow_id,
            "parent_flow_id": parent_flow_id,
            "metadata": metadata,
            "sensitive": True if sensitive else None,
        }
    )
    return Call("POST", "/v1/flows", _json, json=body)


def get_flow(flow_id: str) -> Call[t.Flow]:
    return Call("GET", _flow(flow_id), _json)


def list_flows(
    *,
    status: str | None,
    flow_type: str | None,
    parent_flow_id: str | None,
    limit: int | None,
    cursor: str | None,
) -> Call[t.FlowPage]:
    params = _drop_none(
        {
            "status": status,
            "flow_type": flow_type,
            "parent_flow_id": parent_flow_id,
            "limit": None if limit is None else str(limit),
            "cursor": cursor,
        }
    )
    return Call("GET", "/v1/flows", _json, params=params)


def children(flow_id: str, *, recursive: bool) -> Call[list[str]]:
    return Call(
        "GET",
        _flow(flow_id, "children"),
        _key("children"),
        params={"recursive": _bool(recursive)},
    )


def delete_flow(flow_id: str, *, recursive: bool) -> Call[None]:
    return Call("DELETE", _flow(flow_id), _none, params={"recursive": _bool(recursive)})


# Transitions


def transition(
    flow_id: str, from_status: str, to_status: str, metadata: t.JSON | None
) -> Call[t.Transitioned]:
    body = _drop_none({"from": from_status, "to": to_status, "metadata": metadata})
    return Call("POST", _flow(flow_id, "transitions"), _json, json=body)


def transitions(flow_id: str, *, after: int | None, limit: int | None) -> Call[list[t.Transition]]:
    params = _drop_none(
        {
            "after": None if after is None else str(after),
            "limit": None if limit is None else str(limit),
        }
    )
    return Call("GET", _flow(flow_id, "transitions"), _key("transitions"), params=params)


# Documents: state, phases, agent results


def put_state(flow_id: str, state: t.JSON) -> Call[t.StateDoc]:
    return Call("PUT", _flow(flow_id, "state"), _json, json={"state": state})


def get_state(flow_id: str) -> Call[t.StateDoc]:
    return Call("GET", _flow(flow_id, "state"), _json)


def put_phase(flow_id: str, phase: str, state: t.JSON) -> Call[t.PhaseDoc]:
    return Call("PUT", _flow(flow_id, "phases", phase), _json, json={"state": state})


def get_phase(flow_id: str, phase: str) -> Call[t.PhaseDoc]:
    return Call("GET", _flow(flow_id, "phases", phase), _json)


def phases(flow_id: str) -> Call[list[str]]:
    return Call("GET", _flow(flow_id, "phases"), _key("phases"))


def put_agent(flow_id: str, agent: str, results: t.JSON) -> Call[t.AgentDoc]:
    return Call("PUT", _flow(flow_id, "agents", agent), _json, json={"results": results})


def get_agent(flow_id: str, agent: str) -> Call[t.AgentDoc]:
    return Call("GET", _flow(flow_id, "agents", agent), _json)


def agents(flow_id: str) -> Call[list[str]]:
    return Call("GET", _flow(flow_id, "agents"), _key("agents"))


# Snapshots


def snapshot(flow_id: str, state: t.JSON, snapshot_id: str | None) -> Call[t.Snapshot]:
    body = _drop_none({"state": state, "snapshot_id": snapshot_id})
    return Call("POST", _flow(flow_id, "snapshots"), _json, json=body)


def snapshots(flow_id: str) -> Call[list[str]]:
    return Call("GET", _flow(flow_id, "snapshots"), _key("snapshots"))


def get_snapshot(flow_id: str, snapshot_id: str) -> Call[t.Snapshot]:
    return Call("GET", _flow(flow_id, "snapshots", snapshot_id), _json)


def restore(flow_id: str, snapshot_id: str) -> Call[t.FlowWithState]:
    return Call("POST", _flow(flow_id, "snapshots", snapshot_id, "restore"), _json)


def fork(
    flow_id: str, snapshot_id: str, new_flow_id: str | None, flow_type: str | None
) -> Call[t.FlowWithState]:
    body = _drop_none({"flow_id": new_flow_id, "flow_type": flow_type})
    return Call("POST", _flow(flow_id, "snapshots", snapshot_id, "fork"), _json, json=body)


# Events


def publish(flow_id: str, event_type: str, payload: Any) -> Call[str]:
    body = _drop_none({"event_type": event_type, "payload": payload})
    return Call("POST", _flow(flow_id, "events"), _key("id"), json=body)


def connections(flow_id: str) -> Call[list[t.SseConnection]]:
    return Call("GET", _flow(flow_id, "connections"), _key("connections"))


# Locks


def acquire_lock(name: str, ttl_ms: int, wait_ms: int | None) -> Call[t.LockGrant]:
    body = _drop_none({"ttl_ms": ttl_ms, "wait_ms": wait_ms})
    return Call("POST", f"/v1/locks/{_seg(name)}", _json, json=body)


def refresh_lock(name: str, token: str, ttl_ms: int) -> Call[t.LockGrant]:
    body = {"token": token, "ttl_ms": ttl_ms}
    return Call("POST", f"/v1/locks/{_seg(name)}/refresh", _json, json=body)


def release_lock(name: str, token: str) -> Call[None]:
    return Call("DELETE", f"/v1/locks/{_seg(name)}", _none, json={"token": token})


# Agent cache


def cache_lookup(
    agent: str,
    input: t.JSON,
    *,
    context: t.JSON | None,
    lease_ms: int | None,
    wait_ms: int | None,
) -> Call[t.Lookup]:
    body = _drop_none(
        {"input": input, "context": context, "lease_ms": lease_ms, "wait_ms": wait_ms}
    )
    return Call("POST", f"/v1/agent-cache/{_seg(agent)}/lookup", _json, json=body)


def cache_store(
    agent: str,
    input: t.JSON,
    output: t.JSON,
    *,
    context: t.JSON | None,
    execution_time: float | None,
    lease_token: str | None,
) -> Call[t.Stored]:
    body = _drop_none(
        {
            "input": input,
            "output": output,
            "context": context,
            "execution_time": execution_time,
            "lease_token": lease_token,
        }
    )
    return Call("PUT", f"/v1/agent-cache/{_seg(agent)}", _json, json=body)


def cache_release(
    agent: str, input: t.JSON, lease_token: str, *, context: t.JSON | None
) -> Call[None]:
    body = _drop_none({"input": input, "context": context, "lease_token": lease_token})
    return Call("POST", f"/v1/agent-cache/{_seg(agent)}/release", _none, json=body)


def cache_stats(agent: str) -> Call[t.CacheStats]:
    return Call("GET", f"/v1/agent-cache/{_seg(agent)}/stats", _json)


def cache_invalidate(agent: str, pattern: str | None) -> Call[int]:
    params = _drop_none({"pattern": pattern})
    return Call("DELETE", f"/v1/agent-cache/{_seg(agent)}", _key("deleted"), params=params)


# Checkpoints (LangGraph)


def _thread(thread_id: str, *rest: str) -> str:
    return "/".join(["/v1/threads", _seg(thread_id), *(_seg(r) for r in rest)])


def put_checkpoint(
    thread_id: str,
    checkpoint_id: str,
    *,
    checkpoint_ns: str,
    parent_checkpoint_id: str | None,
    kind: str,
    data: str,
    metadata: t.JSON,
) -> Call[None]:
    body = _drop_none(
        {
            "checkpoint_ns": checkpoint_ns,
            "parent_checkpoint_id": parent_checkpoint_id,
            "type": kind,
            "checkpoint": data,
            "metadata": metadata,
        }
    )
    return Call("PUT", _thread(thread_id, "checkpoints", checkpoint_id), _none, json=body)


def put_checkpoint_writes(
    thread_id: str,
    checkpoint_id: str,
    *,
    checkpoint_ns: str,
    task_id: str,
    task_path: str,
    writes: list[t.WriteItem],
) -> Call[None]:
    body = {
        "checkpoint_ns": checkpoint_ns,
        "task_id": task_id,
        "task_path": task_path,
        "writes": writes,
    }
    return Call("PUT", _thread(thread_id, "checkpoints", checkpoint_id, "writes"), _none, json=body)


def search_checkpoints(
    *,
    thread_id: str | None,
    checkpoint_ns: str | None,
    checkpoint_id: str | None,
    before: str | None,
    limit: int | None,
    filter: t.JSON | None,
) -> Call[list[t.CheckpointTuple]]:
    body = _drop_none(
        {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
            "before": before,
            "limit": limit,
            "filter": filter,
        }
    )
    return Call("POST", "/v1/checkpoints/search", _key("checkpoints"), json=body)


def delete_thread(thread_id: str) -> Call[None]:
    return Call("DELETE", _thread(thread_id), _none)


def copy_thread(thread_id: str, target_thread_id: str) -> Call[None]:
    body = {"target_thread_id": target_thread_id}
    return Call("POST", _thread(thread_id, "copy"), _none, json=body)


def delete_runs(run_ids: list[str]) -> Call[None]:
    return Call("POST", "/v1/checkpoints/delete-runs", _none, json={"run_ids": run_ids})


def prune_threads(thread_ids: list[str], strategy: str) -> Call[None]:
    body = {"thread_ids": thread_ids, "strategy": strategy}
    return Call("POST", "/v1/checkpoints/prune", _none, json=body)


# Operations


def memory(flow_id: str) -> Call[t.JSON]:
    return Call("GET", _flow(flow_id, "memory"), _json)


def fallbacks(limit: int | None) -> Call[list[t.JSON]]:
    params = _drop_none({"limit": None if limit is None else str(limit)})
    return Call("GET", "/v1/fallbacks", _key("fallbacks"), params=params)


# Backups


def create_backup(backup_id: str | None, patterns: list[str] | None) -> Call[t.JSON]:
    body = _drop_none({"backup_id": backup_id, "patterns": patterns})
    return Call("POST", "/v1/backups", _json, json=body)


def list_backups() -> Call[list[t.JSON]]:
    return Call("GET", "/v1/backups", _key("backups"))


def get_backup(backup_id: str) -> Call[t.JSON]:
    return Call("GET", f"/v1/backups/{_seg(backup_id)}", _json)


def restore_backup(backup_id: str, patterns: list[str] | None) -> Call[t.JSON]:
    body = _drop_none({"patterns": patterns})
    return Call("POST", f"/v1/backups/{_seg(backup_id)}/restore", _json, json=body)


# Health


def health() -> Call[t.JSON]:
    # 503 still carries the report: read it either way.
    return Call("GET", "/v1/health", _json, accept=(503,))
