"""A real CrewAI Flow (plain-Python methods) with `@persist(FlowstatePersistence(...))`: run it,
resume it from a new process with `kickoff(inputs={"id": ...})`, read its state back over
HTTP; the event forwarder's events arrive over SSE; the cache handler's tool results hit
across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from conftest import Server
from pydantic import BaseModel

from flowstate_client import Client, Event, Reset
from flowstate_client.crewai import FlowstatePersistence, _agent

APP = Path(__file__).with_name("crew_app.py")


def run(tmp: Path, *args: str) -> dict[str, Any]:
    # CrewAI writes under HOME on first run (telemetry is off: see conftest).
    env = {**os.environ, "HOME": str(tmp)}
    out = subprocess.run(
        [sys.executable, str(APP), *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return line


def read_events(fs: Client, flow_id: str, done: Callable[[list[Event]], bool]) -> list[Event]:
    """The flow's events from the start until `done` says enough. Heartbeats keep the read
    timeout from firing, so a watchdog closes the stream after 60 s: a missing event fails
    the test instead of hanging the run."""
    events: list[Event] = []
    stream = fs.events(flow_id, last_event_id="0")
    watchdog = threading.Timer(60, stream.close)
    watchdog.start()
    try:
        for item in stream:
            if isinstance(item, Reset):
                continue
            events.append(item)
            if done(events):
                break
    except httpx.HTTPError:
        pass  # closed by the watchdog: the caller's assertions say what was missing
    finally:
        watchdog.cancel()
        stream.close()
    return events


def test_persist_resume_events_and_cache(server: Server, tmp_path: Path) -> None:
    first = run(tmp_path, server.url)
    flow_id = first["id"]
    steps = first["state"]["steps"]
    assert steps[0] == "plan"
    assert steps[-1] == "write"
    assert sorted(steps[1:3]) == ["outline", "sources:3 results for fusion"]

    # The state as saved after the last method, over plain HTTP.
    saved = httpx.get(f"{server.url}/v1/flows/{flow_id}/state").json()["state"]
    assert saved["id"] == flow_id
    assert saved["steps"] == steps
    assert saved["runs"] == 1

    # A new process resumes from the saved state: the methods run again on top of it.
    second = run(tmp_path, server.url, flow_id)
    assert second["id"] == flow_id
    assert second["state"]["runs"] == 2
    assert second["state"]["topic"] == "fusion"
    assert len(second["state"]["steps"]) == 2 * len(steps)

    with Client(server.url) as fs:
        flow = fs.get_flow(flow_id)
        assert flow["flow_type"] == "crewai"
        assert flow["status"] == "completed"
        stats = fs.cache_stats(_agent("Search the web"))
        assert stats["hit"] >= 1, "the second run's search was a hit"

        events = read_events(
            fs,
            flow_id,
            lambda seen: sum(e["event_type"] == "crewai.flow_finished" for e in seen) == 2,
        )
    types = [e["event_type"] for e in events]
    assert types[0] == "FLOW_REGISTERED"
    for expected in (
        "crewai.flow_started",
        "crewai.method_execution_started",
        "crewai.method_execution_finished",
        "crewai.flow_finished",
        "STATE_TRANSITION",
    ):
        assert expected in types, (expected, types)
    methods = {
        e["payload"]["method_name"]
        for e in events
        if e["event_type"] == "crewai.method_execution_finished"
    }
    assert methods == {"plan", "sources", "outline", "write"}


class Notes(BaseModel):
    steps: list[str] = []


def test_concurrent_saves_end_with_the_latest_state(server: Server) -> None:
    """CrewAI saves from parallel listeners at once: whatever order their turns come in, the
    state saved last is the state after every change made before it."""
    persistence = FlowstatePersistence(base_url=server.url)
    flow_id = "crew-concurrent"
    state = Notes()
    guard = threading.Lock()

    def listener(i: int) -> None:
        with guard:
            state.steps.append(f"s{i}")
        persistence.save_state(flow_id, f"m{i}", state)

    threads = [threading.Thread(target=listener, args=(i,)) for i in range(32)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    saved = persistence.load_state(flow_id)
    assert saved is not None
    assert sorted(saved["steps"]) == sorted(f"s{i}" for i in range(32))


def test_the_token_stays_out_of_what_crewai_serialises() -> None:
    persistence = FlowstatePersistence(base_url="http://127.0.0.1:1", token="tok-0123456789abcdef")
    assert "tok-0123456789abcdef" not in persistence.model_dump_json()
    assert "tok-0123456789abcdef" not in repr(persistence.model_dump())


def test_a_failing_flow_is_failed_with_its_error_on_the_stream(
    server: Server, tmp_path: Path
) -> None:
    out = run(tmp_path, server.url, "--fail")
    flow_id = out["id"]
    assert out["error"] == "no sources"
    with Client(server.url) as fs:
        assert fs.get_flow(flow_id)["status"] == "failed"
        events = read_events(
            fs, flow_id, lambda seen: seen[-1]["event_type"] == "crewai.flow_failed"
        )
    failed = [e for e in events if e["event_type"] == "crewai.flow_failed"]
    assert failed, [e["event_type"] for e in events]
    assert failed[0]["payload"]["error"] == "no sources"
