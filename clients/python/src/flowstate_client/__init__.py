"""Python client for flowstate: flow state, snapshots, events, locks and the agent cache of
multi-agent AI flows. `Client` blocks, `AsyncClient` awaits; both cover the whole API."""

from ._types import (
    AgentDoc,
    CacheStats,
    Event,
    Flow,
    FlowPage,
    FlowWithState,
    LockGrant,
    Lookup,
    PhaseDoc,
    Snapshot,
    StateDoc,
    Stored,
    Transition,
    Transitioned,
)
from .client import AsyncClient, Client
from .errors import (
    Conflict,
    FlowstateError,
    InvalidInput,
    LockHeld,
    LockNotHeld,
    NotFound,
    StaleLease,
    TooLarge,
    Unavailable,
)
from .events import AsyncEventStream, EventStream, Reset
from .locks import AsyncHeldLock, HeldLock

__all__ = [
    "AgentDoc",
    "AsyncClient",
    "AsyncEventStream",
    "AsyncHeldLock",
    "CacheStats",
    "Client",
    "Conflict",
    "Event",
    "EventStream",
    "Flow",
    "FlowPage",
    "FlowWithState",
    "FlowstateError",
    "HeldLock",
    "InvalidInput",
    "LockGrant",
    "LockHeld",
    "LockNotHeld",
    "Lookup",
    "NotFound",
    "PhaseDoc",
    "Reset",
    "Snapshot",
    "StaleLease",
    "StateDoc",
    "Stored",
    "TooLarge",
    "Transition",
    "Transitioned",
    "Unavailable",
]
