"""A CrewAI Flow of plain-Python methods (no LLM), persisted in flowstate with its events
forwarded; run or resumed from a process of its own.

    python crew_app.py URL [FLOW_ID]
    python crew_app.py URL --fail      # a flow whose first method raises

Prints one JSON line: the flow's id and final state (or its error)."""

from __future__ import annotations

import json
import sys

from crewai.events.event_bus import crewai_event_bus
from crewai.flow.flow import Flow, FlowState, and_, listen, start
from crewai.flow.persistence import persist
from pydantic import Field

from flowstate_client.crewai import (
    FlowstateCacheHandler,
    FlowstateEventListener,
    FlowstatePersistence,
)

URL = sys.argv[1]


class ResearchState(FlowState):
    topic: str = ""
    runs: int = 0
    steps: list[str] = Field(default_factory=list)


CACHE = FlowstateCacheHandler(base_url=URL)


def search(query: str) -> str:
    """A 'tool' whose results the cache handler keeps (keys in any order hit)."""
    found = CACHE.read("Search the web", json.dumps({"query": query, "limit": 3}))
    if found is not None:
        return str(found)
    result = f"3 results for {query}"
    CACHE.add("Search the web", json.dumps({"limit": 3, "query": query}), result)
    return result


@persist(FlowstatePersistence(base_url=URL))
class ResearchFlow(Flow[ResearchState]):
    @start()
    def plan(self) -> None:
        self.state.runs += 1
        self.state.steps.append("plan")

    # Two listeners of one method run in parallel: their saves are concurrent.
    @listen(plan)
    def sources(self) -> None:
        self.state.steps.append(f"sources:{search(self.state.topic)}")

    @listen(plan)
    def outline(self) -> None:
        self.state.steps.append("outline")

    @listen(and_(sources, outline))
    def write(self) -> str:
        self.state.steps.append("write")
        return "done"


class FailingFlow(Flow[ResearchState]):
    @start()
    def plan(self) -> None:
        raise RuntimeError("no sources")


def main() -> None:
    FlowstateEventListener(base_url=URL)
    if sys.argv[2:] == ["--fail"]:
        failing = FailingFlow()
        try:
            failing.kickoff(inputs={"topic": "fusion"})
        except RuntimeError as e:
            crewai_event_bus.flush()
            print(json.dumps({"id": failing.state.id, "error": str(e)}))
        return
    flow = ResearchFlow()
    inputs = {"id": sys.argv[2]} if len(sys.argv) > 2 else {"topic": "fusion"}
    flow.kickoff(inputs=inputs)
    crewai_event_bus.flush()
    print(json.dumps({"id": flow.state.id, "state": flow.state.model_dump(mode="json")}))


if __name__ == "__main__":
    main()
