"""CrewAI integration: flow state persistence, an event forwarder and a tool-result cache, all
kept in flowstate.

    from flowstate_client.crewai import (
        FlowstateCacheHandler, FlowstateEventListener, FlowstatePersistence)

    @persist(FlowstatePersistence(base_url="http://127.0.0.1:8080"))
    class ResearchFlow(Flow[ResearchState]): ...

    FlowstateEventListener(base_url="http://127.0.0.1:8080")   # once per process
    agent = Agent(..., cache_handler=FlowstateCacheHandler(base_url="http://127.0.0.1:8080"))

A CrewAI flow is a flowstate flow with the same id (registered on its first save or start);
its state is the flow's state document (`GET /v1/flows/{id}/state`). Needs the `crewai` extra:
`pip install "./clients/python[crewai]"`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from typing import Any

from crewai.agents.cache.cache_handler import CacheHandler
from crewai.events.base_event_listener import BaseEventListener
from crewai.events.event_bus import CrewAIEventsBus
from crewai.events.types.flow_events import (
    FlowFailedEvent,
    FlowFinishedEvent,
    FlowPausedEvent,
    FlowStartedEvent,
    MethodExecutionFailedEvent,
    MethodExecutionFinishedEvent,
    MethodExecutionStartedEvent,
)
from crewai.flow.async_feedback.types import PendingFeedbackContext
from crewai.flow.flow_context import current_flow_id
from crewai.flow.persistence.base import FlowPersistence
from pydantic import BaseModel, PrivateAttr
from pydantic_core import to_jsonable_python

from . import _types as t
from .client import Client
from .errors import Conflict, FlowstateError, NotFound

#: The phase document that holds a flow's pending human feedback.
FEEDBACK_PHASE = "crewai.pending_feedback"


def _json(value: Any) -> Any:
    """A JSON value for `value` (pydantic models, datetimes, ... as pydantic dumps them)."""
    return to_jsonable_python(value, fallback=str)


class _Flows:
    """Registers CrewAI flows as flowstate flows, once per process, and serialises what is
    done to each flow (CrewAI runs listeners and event handlers on several threads)."""

    def __init__(self, client: Client, flow_type: str) -> None:
        self.client = client
        self.flow_type = flow_type
        self._known: set[str] = set()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, flow_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(flow_id, threading.Lock())

    def ensure(self, flow_id: str, parent_flow_id: str | None = None) -> None:
        if flow_id in self._known:
            return
        if parent_flow_id is not None:
            self.ensure(parent_flow_id)
        try:
            self.client.register_flow(
                self.flow_type, flow_id=flow_id, parent_flow_id=parent_flow_id
            )
        except Conflict as e:
            if e.code != "flow_exists":
                raise
        self._known.add(flow_id)


class FlowstatePersistence(FlowPersistence):
    """A CrewAI `FlowPersistence` on flowstate: `save_state` writes the flow's state document,
    `load_state` reads it back (`kickoff(inputs={"id": ...})` resumes), pending human feedback
    is kept as a phase document. Safe under CrewAI's concurrent `save_state` calls (one flow's
    saves are serialised and each sends the state as it is when its turn comes). The token is
    kept out of the pydantic fields, which CrewAI writes into its checkpoints."""

    persistence_type: str = "flowstate"
    base_url: str = "http://127.0.0.1:8080"
    flow_type: str = "crewai"
    _token: str | None = PrivateAttr(default=None)
    _flows: _Flows | None = PrivateAttr(default=None)

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        token: str | None = None,
        flow_type: str = "crewai",
        **data: Any,
    ) -> None:
        super().__init__(base_url=base_url, flow_type=flow_type, **data)
        self._token = token

    @property
    def _registry(self) -> _Flows:
        if self._flows is None:
            self._flows = _Flows(Client(self.base_url, token=self._token), self.flow_type)
        return self._flows

    def init_db(self) -> None:
        """Nothing to create: the server's ledger has its tables. Checks the server answers."""
        self._registry.client.health()

    def save_state(
        self, flow_uuid: str, method_name: str, state_data: dict[str, Any] | BaseModel
    ) -> None:
        flows = self._registry
        with flows.lock(flow_uuid):
            flows.ensure(flow_uuid)
            # Dumped inside the turn: a later save never sends an older state.
            flows.client.put_state(flow_uuid, _json(state_data))

    def load_state(self, flow_uuid: str) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = self._registry.client.get_state(flow_uuid)["state"]
        except NotFound:
            return None
        return state

    def save_pending_feedback(
        self,
        flow_uuid: str,
        context: PendingFeedbackContext,
        state_data: dict[str, Any] | BaseModel,
    ) -> None:
        self.save_state(flow_uuid, context.method_name, state_data)
        body: t.JSON = {"pending": True, "context": _json(context.to_dict())}
        self._registry.client.put_phase(flow_uuid, FEEDBACK_PHASE, body)

    def load_pending_feedback(
        self, flow_uuid: str
    ) -> tuple[dict[str, Any], PendingFeedbackContext] | None:
        client = self._registry.client
        try:
            phase = client.get_phase(flow_uuid, FEEDBACK_PHASE)["state"]
        except NotFound:
            return None
        state = self.load_state(flow_uuid)
        if not phase.get("pending") or state is None:
            return None
        return state, PendingFeedbackContext.from_dict(phase["context"])

    def clear_pending_feedback(self, flow_uuid: str) -> None:
        self._registry.client.put_phase(flow_uuid, FEEDBACK_PHASE, {"pending": False})


class FlowstateEventListener(BaseEventListener):
    """Forwards CrewAI flow events to flowstate: a flow is registered (under its parent, for a
    flow started inside another) and moved `initializing` -> `running` when it starts, to
    `completed` when it finishes, to `failed` when a method or the flow fails (a pause for
    human feedback is published and moves nothing); every flow and method event
    is published on its flow's stream as `crewai.<event type>` with CrewAI's
    `emission_sequence` (handlers run on several threads: order by it). Create one per
    process; forwarding errors are logged by CrewAI's bus, never raised into the flow."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        token: str | None = None,
        flow_type: str = "crewai",
    ) -> None:
        self._flows = _Flows(Client(base_url, token=token), flow_type)
        super().__init__()

    def setup_listeners(self, crewai_event_bus: CrewAIEventsBus) -> None:
        @crewai_event_bus.on(FlowStartedEvent)
        def started(source: Any, event: FlowStartedEvent) -> None:
            parent = current_flow_id.get()
            flow_id = _flow_id(source)
            self._forward(
                source,
                event,
                {"inputs": _json(event.inputs)},
                parent=parent if parent and parent != flow_id else None,
                move=("initializing", "running"),
            )

        @crewai_event_bus.on(MethodExecutionStartedEvent)
        def method_started(source: Any, event: MethodExecutionStartedEvent) -> None:
            self._forward(source, event, {"method_name": event.method_name})

        @crewai_event_bus.on(MethodExecutionFinishedEvent)
        def method_finished(source: Any, event: MethodExecutionFinishedEvent) -> None:
            self._forward(source, event, {"method_name": event.method_name})

        @crewai_event_bus.on(MethodExecutionFailedEvent)
        def method_failed(source: Any, event: MethodExecutionFailedEvent) -> None:
            payload = {"method_name": event.method_name, "error": str(event.error)}
            self._forward(source, event, payload, move=(None, "failed"))

        @crewai_event_bus.on(FlowFailedEvent)
        def flow_failed(source: Any, event: FlowFailedEvent) -> None:
            self._forward(source, event, {"error": str(event.error)}, move=(None, "failed"))

        @crewai_event_bus.on(FlowPausedEvent)
        def paused(source: Any, event: FlowPausedEvent) -> None:
            payload = {"method_name": event.method_name, "message": event.message}
            self._forward(source, event, payload)

        @crewai_event_bus.on(FlowFinishedEvent)
        def finished(source: Any, event: FlowFinishedEvent) -> None:
            self._forward(source, event, {"result": _json(event.result)}, move=(None, "completed"))

    def _forward(
        self,
        source: Any,
        event: Any,
        payload: dict[str, Any],
        *,
        parent: str | None = None,
        move: tuple[str | None, str] | None = None,
    ) -> None:
        flow_id = _flow_id(source)
        flows = self._flows
        with flows.lock(flow_id):
            flows.ensure(flow_id, parent)
            body = {
                "flow_name": event.flow_name,
                "emission_sequence": event.emission_sequence,
                **payload,
            }
            flows.client.publish(flow_id, f"crewai.{event.type}", body)
            if move is not None:
                self._move(flow_id, *move)

    def _move(self, flow_id: str, from_status: str | None, to_status: str) -> None:
        current = self._flows.client.get_flow(flow_id)["status"]
        # Handlers may run out of order: a start seen after the finish moves nothing.
        if current == to_status or (from_status is not None and current != from_status):
            return
        if current in ("completed", "failed"):
            return
        # Another handler moved it first.
        with contextlib.suppress(Conflict):
            self._flows.client.transition(flow_id, current, to_status)


def _flow_id(source: Any) -> str:
    flow_id = getattr(source, "flow_id", None) or source.state.id
    return str(flow_id)


class FlowstateCacheHandler(CacheHandler):
    """A CrewAI `CacheHandler` on flowstate's agent cache: tool results shared across runs,
    processes and machines, under agent `crewai.tool.<tool>`. The tool input (CrewAI's
    `json.dumps` of the arguments, keys unsorted) is parsed again, so argument order does not
    change the key. A cache that cannot be reached is a miss, never an error of the crew.
    Pass it as `Agent(cache_handler=...)`; `Crew(cache=True)` replaces agents' handlers with
    its own."""

    base_url: str = "http://127.0.0.1:8080"
    _token: str | None = PrivateAttr(default=None)
    _client: Client | None = PrivateAttr(default=None)

    def __init__(
        self, base_url: str = "http://127.0.0.1:8080", *, token: str | None = None
    ) -> None:
        super().__init__(base_url=base_url)
        self._token = token

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.base_url, token=self._token, max_retries=0)
        return self._client

    def add(self, tool: str, input: str, output: Any) -> None:
        from crewai.tools.tool_failure import ToolFailure

        if isinstance(output, ToolFailure):
            return
        with contextlib.suppress(FlowstateError):
            self.client.cache_store(_agent(tool), _input(input), {"output": _json(output)})

    def read(self, tool: str, input: str) -> Any | None:
        try:
            found = self.client.cache_lookup(_agent(tool), _input(input))
        except FlowstateError:
            return None
        if not found["hit"]:
            return None
        return (found.get("output") or {}).get("output")


def _agent(tool: str) -> str:
    # Agent names follow the id rule; tool names are free text ("Search the internet").
    safe = re.sub(r"[^A-Za-z0-9_.:-]", "_", tool)[:80]
    digest = hashlib.sha256(tool.encode()).hexdigest()[:12]
    return f"crewai.tool.{safe}.{digest}"


def _input(text: str) -> t.JSON:
    try:
        return {"args": json.loads(text)}
    except ValueError:
        return {"raw": text}
