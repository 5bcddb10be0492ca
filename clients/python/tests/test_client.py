"""The sync and async clients against the real server: every resource, and typed errors."""

from __future__ import annotations

import asyncio

import pytest
from conftest import Server

from flowstate_client import (
    AsyncClient,
    Client,
    Conflict,
    InvalidInput,
    NotFound,
)


def test_flows_documents_and_snapshots(url: str) -> None:
    with Client(url) as fs:
        parent = fs.register_flow("research", flow_id="p-1", metadata={"topic": "fusion"})
        assert parent["flow_id"] == "p-1"
        assert parent["metadata"] == {"topic": "fusion"}
        child = fs.register_flow("worker", parent_flow_id="p-1")
        assert fs.get_flow(child["flow_id"])["parent_flow_id"] == "p-1"
        assert fs.children("p-1") == [child["flow_id"]]
        page = fs.list_flows(flow_type="research")
        assert [f["flow_id"] for f in page["flows"]] == ["p-1"]

        moved = fs.transition("p-1", parent["status"], "running", {"by": "test"})
        assert moved["flow"]["status"] == "running"
        assert moved["transition"]["from"] == parent["status"]
        assert [tr["to"] for tr in fs.transitions("p-1")][-1] == "running"
        with pytest.raises(Conflict) as stale:
            fs.transition("p-1", parent["status"], "done")
        assert stale.value.status == 409

        assert fs.put_state("p-1", {"step": 1})["state"] == {"step": 1}
        assert fs.get_state("p-1")["state"] == {"step": 1}
        fs.put_phase("p-1", "plan", {"items": [1, 2]})
        assert fs.get_phase("p-1", "plan")["state"] == {"items": [1, 2]}
        assert fs.phases("p-1") == ["plan"]
        fs.put_agent("p-1", "writer", {"draft": "x"})
        assert fs.get_agent("p-1", "writer")["results"] == {"draft": "x"}
        assert fs.agents("p-1") == ["writer"]

        snap = fs.snapshot("p-1", {"step": 1}, snapshot_id="s1")
        assert snap["snapshot_id"] == "s1"
        assert fs.snapshots("p-1") == ["s1"]
        assert fs.get_snapshot("p-1", "s1")["state"] == {"step": 1}
        fs.put_state("p-1", {"step": 2})
        restored = fs.restore("p-1", "s1")
        assert restored["state"]["state"] == {"step": 1}
        forked = fs.fork("p-1", "s1", new_flow_id="p-1-fork")
        assert forked["flow"]["flow_id"] == "p-1-fork"
        assert fs.get_state("p-1-fork")["state"] == {"step": 1}

        assert fs.memory("p-1")["total_bytes"] >= 0
        assert isinstance(fs.fallbacks(limit=5), list)
        assert isinstance(fs.list_backups(), list)

        fs.delete_flow("p-1", recursive=True)
        with pytest.raises(NotFound) as gone:
            fs.get_flow("p-1")
        assert gone.value.code == "flow_not_found"


def test_bad_input_is_a_typed_error(url: str) -> None:
    with Client(url) as fs:
        with pytest.raises(InvalidInput) as bad:
            fs.register_flow("research", flow_id="not valid!")
        assert bad.value.status == 400
        assert bad.value.code == "invalid_id"
        assert bad.value.message
        with pytest.raises(InvalidInput):
            fs.acquire_lock("n", 0)


def test_async_client(url: str) -> None:
    async def run() -> None:
        async with AsyncClient(url) as fs:
            flow = await fs.register_flow("research")
            fid = flow["flow_id"]
            await fs.put_state(fid, {"a": 1})
            states = await asyncio.gather(*(fs.get_state(fid) for _ in range(10)))
            assert all(s["state"] == {"a": 1} for s in states)
            await fs.transition(fid, flow["status"], "running")
            assert (await fs.get_flow(fid))["status"] == "running"
            health = await fs.health()
            assert health["status"] in ("healthy", "degraded")
            with pytest.raises(NotFound):
                await fs.get_phase(fid, "nope")

    asyncio.run(run())


def test_backups(server: Server) -> None:
    with Client(server.url) as fs:
        if "REDIS_URL" not in server.env:
            with pytest.raises(Conflict) as no_redis:
                fs.create_backup()
            assert no_redis.value.code == "unsupported"
            return
        fs.register_flow("research", flow_id="b-1")
        made = fs.create_backup(backup_id="py-backup")
        assert made["status"] == "complete"
        assert made["keys"] >= 1
        assert fs.get_backup("py-backup")["keys"] == made["keys"]
        assert fs.list_backups()[0]["backup_id"] == "py-backup"
        restored = fs.restore_backup("py-backup", patterns=["orchestrator:*"])
        assert restored["keys"] >= 1
        with pytest.raises(NotFound):
            fs.restore_backup("nope")
