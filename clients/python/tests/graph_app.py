"""A LangGraph graph with a subgraph that stops at an `interrupt()`, checkpointed in flowstate:
run it to the interrupt, or resume it with `Command(resume=...)`, from a process of its own.

    python graph_app.py start  URL THREAD sync|async
    python graph_app.py resume URL THREAD sync|async ANSWER

Prints one JSON line: the interrupt's value, or the final state."""

from __future__ import annotations

import asyncio
import json
import operator
import sys
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from flowstate_client.langgraph import FlowstateSaver


class Draft(TypedDict, total=False):
    """The subgraph's state: shared keys only, so its output adds nothing twice."""

    topic: str
    draft: str
    approved: str


class State(Draft, total=False):
    log: Annotated[list[str], operator.add]


def draft(state: Draft) -> dict[str, Any]:
    return {"draft": f"draft about {state['topic']}"}


def review(state: Draft) -> dict[str, Any]:
    answer = interrupt({"question": "approve?", "draft": state["draft"]})
    return {"approved": answer}


def plan(state: State) -> dict[str, Any]:
    return {"log": ["plan"]}


def publish(state: State) -> dict[str, Any]:
    return {"log": [f"publish:{state['approved']}"]}


def build(saver: FlowstateSaver) -> Any:
    sub = StateGraph(Draft)
    sub.add_node("draft", draft)
    sub.add_node("review", review)
    sub.add_edge(START, "draft")
    sub.add_edge("draft", "review")
    sub.add_edge("review", END)
    parent = StateGraph(State)
    parent.add_node("plan", plan)
    parent.add_node("writer", sub.compile())
    parent.add_node("publish", publish)
    parent.add_edge(START, "plan")
    parent.add_edge("plan", "writer")
    parent.add_edge("writer", "publish")
    parent.add_edge("publish", END)
    return parent.compile(checkpointer=saver)


def main() -> None:
    step, url, thread, mode = sys.argv[1:5]
    saver = FlowstateSaver(base_url=url)
    graph = build(saver)
    config = {"configurable": {"thread_id": thread}}
    given: Any = {"topic": "fusion"} if step == "start" else Command(resume=sys.argv[5])
    if mode == "sync":
        result = graph.invoke(given, config)
    else:
        result = asyncio.run(graph.ainvoke(given, config))
    if "__interrupt__" in result:
        print(json.dumps({"interrupt": result["__interrupt__"][0].value}))
    else:
        print(json.dumps({"state": result}))
    saver.close()


if __name__ == "__main__":
    main()
