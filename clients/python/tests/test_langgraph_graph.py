"""A real LangGraph graph with a subgraph and an `interrupt()`, checkpointed in flowstate: run to
the interrupt in one process, restart the flowstate server on the same ledger, resume from a
new process with `Command(resume=...)`; with `invoke` and with `ainvoke`."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import Server

from flowstate_client import Client

APP = Path(__file__).with_name("graph_app.py")


def run(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(APP), *args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    line: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return line


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_interrupt_restart_resume(server: Server, mode: str) -> None:
    thread = f"thread-{uuid.uuid4()}"
    first = run("start", server.url, thread, mode)
    assert first == {"interrupt": {"question": "approve?", "draft": "draft about fusion"}}

    server.stop()
    server.start()

    done = run("resume", server.url, thread, mode, "yes")
    assert done["state"]["approved"] == "yes"
    assert done["state"]["draft"] == "draft about fusion"
    assert done["state"]["log"] == ["plan", "publish:yes"]

    with Client(server.url) as fs:
        found = fs.search_checkpoints(thread_id=thread)
    namespaces = {c["checkpoint_ns"] for c in found}
    assert "" in namespaces
    assert any(ns.startswith("writer:") for ns in namespaces), namespaces
    assert any(c["metadata"].get("source") == "loop" for c in found)
