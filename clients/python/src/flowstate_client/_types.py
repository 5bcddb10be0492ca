"""The JSON shapes the flowstate API answers, as `TypedDict`s (see `docs/api.md`)."""

from __future__ import annotations

from typing import Any, TypedDict

from typing_extensions import NotRequired

JSON = dict[str, Any]


class Flow(TypedDict):
    flow_id: str
    flow_type: str
    status: str
    parent_flow_id: NotRequired[str | None]
    metadata: JSON
    created_at: str
    updated_at: str
    version: int
    sensitive: NotRequired[bool]


class FlowPage(TypedDict):
    flows: list[Flow]
    next_cursor: NotRequired[str | None]


# `from` is a Python keyword, hence the functional form.
Transition = TypedDict(
    "Transition", {"id": int, "from": str, "to": str, "at": str, "metadata": JSON}
)


class Transitioned(TypedDict):
    transition: Transition
    flow: Flow


class StateDoc(TypedDict):
    state: JSON
    saved_at: str
    version: int


class PhaseDoc(TypedDict):
    phase: str
    state: JSON
    saved_at: str
    version: int


class AgentDoc(TypedDict):
    agent: str
    results: JSON
    cached_at: str
    version: int


class Snapshot(TypedDict):
    flow_id: str
    snapshot_id: str
    parent_snapshot_id: NotRequired[str | None]
    state: JSON
    created_at: str


class StateVersion(TypedDict):
    state: JSON
    version: int


class FlowWithState(TypedDict):
    flow: Flow
    state: StateVersion


class LockGrant(TypedDict):
    token: str
    fencing_token: int
    expires_at: str


class Lookup(TypedDict):
    hit: bool
    output: NotRequired[JSON | None]
    cached_at: NotRequired[str | None]
    execution_time: NotRequired[float | None]
    lease_token: NotRequired[str | None]


class Stored(TypedDict):
    hash: str
    stored: bool


class CacheStats(TypedDict):
    hit: int
    miss: int
    set: int
    error: int
    hit_rate: float
    total_cached: int
    last_cached: NotRequired[str | None]


class Event(TypedDict):
    """One event of a flow's stream (also the `data:` of its SSE frame)."""

    id: str
    flow_id: str
    event_type: str
    payload: Any
    timestamp: str


class SseConnection(TypedDict):
    connection_id: str
    flow_id: str
    instance_id: str
    connected_at: str
    resumed_from: NotRequired[str | None]


# `type` is the serializer's tag; values are base64.
class WriteItem(TypedDict):
    idx: int
    channel: str
    type: str
    value: str


class PendingWrite(TypedDict):
    task_id: str
    task_path: str
    idx: int
    channel: str
    type: str
    value: str


class CheckpointTuple(TypedDict):
    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    type: str
    checkpoint: str
    metadata: JSON
    created_at: str
    pending_writes: list[PendingWrite]
