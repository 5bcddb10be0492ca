"""Events over SSE: whole history with a reset, resuming exactly after the last event seen,
and the end of the stream when the flow is deleted."""

from __future__ import annotations

import asyncio
import threading
import time

from flowstate_client import AsyncClient, Client, Event, Reset


def test_history_resume_and_end(url: str) -> None:
    with Client(url) as fs:
        fid = fs.register_flow("research")["flow_id"]
        ids = [fs.publish(fid, "progress", {"n": n}) for n in range(3)]

        stream = fs.events(fid, last_event_id="0")
        items = iter(stream)
        assert isinstance(next(items), Reset)
        seen: list[Event] = []
        for item in items:
            assert not isinstance(item, Reset)
            seen.append(item)
            if item["id"] == ids[-1]:
                break
        assert [e["event_type"] for e in seen] == ["FLOW_REGISTERED"] + ["progress"] * 3
        assert [e["payload"]["n"] for e in seen[1:]] == [0, 1, 2]
        stream.close()
        resume_from = stream.last_event_id
        assert resume_from == ids[-1]

        later = [fs.publish(fid, "progress", {"n": n}) for n in range(3, 5)]
        resumed = fs.events(fid, last_event_id=resume_from)
        got = []
        for item in resumed:
            assert not isinstance(item, Reset), "exact resume: no reset"
            got.append(item["id"])
            if len(got) == 2:
                break
        assert got == later

        # Deleting the flow ends the stream after FLOW_DELETED.
        tail = fs.events(fid, last_event_id=later[-1])
        types: list[str] = []
        done = threading.Event()

        def follow() -> None:
            types.extend(i["event_type"] for i in tail if not isinstance(i, Reset))
            done.set()

        threading.Thread(target=follow, daemon=True).start()
        # Delete once the stream is open (a stream opened after the delete gets 404).
        deadline = time.monotonic() + 10
        while not fs.connections(fid):
            assert time.monotonic() < deadline, "the stream never connected"
            time.sleep(0.02)
        fs.delete_flow(fid)
        assert done.wait(10), "the stream did not end after FLOW_DELETED"
        assert types == ["FLOW_DELETED"]


def test_async_stream(url: str) -> None:
    async def run() -> None:
        async with AsyncClient(url) as fs:
            fid = (await fs.register_flow("research"))["flow_id"]
            first = await fs.publish(fid, "start")
            await fs.publish(fid, "step", {"n": 1})
            got: list[str] = []
            async for item in fs.events(fid, last_event_id=first):
                assert not isinstance(item, Reset)
                got.append(item["event_type"])
                if item["event_type"] == "step":
                    await fs.delete_flow(fid)
            assert got == ["step", "FLOW_DELETED"]

    asyncio.run(asyncio.wait_for(run(), 20))
