"""A flow's events over server-sent events, as iterators that resume where they left off.

The server sends each event with its id; after a dropped connection the stream reconnects
with `Last-Event-ID` and the server answers exactly the events after it. When the history
no longer reaches that far back it sends a `reset` first (yielded as `Reset`): reload the
flow's state, then go on with the events that follow."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse

from ._api import _flow
from ._types import Event
from .errors import FlowstateError, error_for

#: A connection that has sent nothing (not even the 15 s heartbeat) for this long is dead.
READ_TIMEOUT = 60.0


@dataclass(frozen=True)
class Reset:
    """The events after the resume point are no longer all kept: reload the flow's state."""

    flow_id: str
    epoch: str


def _path(flow_id: str) -> str:
    return _flow(flow_id, "events")


def _item(sse: ServerSentEvent) -> Event | Reset:
    data = json.loads(sse.data)
    if sse.event == "reset":
        return Reset(flow_id=str(data.get("flow_id", "")), epoch=str(data.get("epoch", "")))
    event: Event = data
    return event


def _backoff(attempt: int, cap: float) -> float:
    return float(min(cap, 0.1 * 2**attempt))


def _retryable(error: Exception) -> bool:
    if isinstance(error, FlowstateError):
        return error.status == 503
    return isinstance(error, httpx.TransportError)


class EventStream:
    """Iterate it for `Event` dicts and `Reset`s; `last_event_id` is where it would resume."""

    def __init__(
        self,
        http: httpx.Client,
        flow_id: str,
        last_event_id: str | None,
        reconnect: bool,
        max_backoff: float,
    ) -> None:
        self._http = http
        self.flow_id = flow_id
        self.last_event_id = last_event_id
        self._reconnect = reconnect
        self._max_backoff = max_backoff
        self._response: httpx.Response | None = None
        self._closed = False

    def close(self) -> None:
        """Ends the iteration (also from another thread)."""
        self._closed = True
        if self._response is not None:
            self._response.close()

    def __iter__(self) -> Iterator[Event | Reset]:
        attempt = 0
        while not self._closed:
            headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
            timeout = httpx.Timeout(self._http.timeout.connect, read=READ_TIMEOUT)
            try:
                with connect_sse(
                    self._http, "GET", _path(self.flow_id), headers=headers, timeout=timeout
                ) as source:
                    response = source.response
                    if response.status_code != 200:
                        response.read()
                        raise error_for(response.status_code, _body(response), None)
                    self._response = response
                    attempt = 0
                    for sse in source.iter_sse():
                        item = _item(sse)
                        if not isinstance(item, Reset):
                            self.last_event_id = sse.id or item["id"]
                        yield item
                        if not isinstance(item, Reset) and item["event_type"] == "FLOW_DELETED":
                            return
            except (httpx.TransportError, FlowstateError) as e:
                if self._closed:
                    return
                if not (self._reconnect and _retryable(e)):
                    raise
            if not self._reconnect:
                return
            attempt += 1
            time.sleep(_backoff(attempt, self._max_backoff))


class AsyncEventStream:
    """`async for` it for `Event` dicts and `Reset`s; as `EventStream`."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        flow_id: str,
        last_event_id: str | None,
        reconnect: bool,
        max_backoff: float,
    ) -> None:
        self._http = http
        self.flow_id = flow_id
        self.last_event_id = last_event_id
        self._reconnect = reconnect
        self._max_backoff = max_backoff

    def __aiter__(self) -> AsyncIterator[Event | Reset]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event | Reset]:
        attempt = 0
        while True:
            headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
            timeout = httpx.Timeout(self._http.timeout.connect, read=READ_TIMEOUT)
            try:
                async with aconnect_sse(
                    self._http, "GET", _path(self.flow_id), headers=headers, timeout=timeout
                ) as source:
                    response = source.response
                    if response.status_code != 200:
                        await response.aread()
                        raise error_for(response.status_code, _body(response), None)
                    attempt = 0
                    async for sse in source.aiter_sse():
                        item = _item(sse)
                        if not isinstance(item, Reset):
                            self.last_event_id = sse.id or item["id"]
                        yield item
                        if not isinstance(item, Reset) and item["event_type"] == "FLOW_DELETED":
                            return
            except (httpx.TransportError, FlowstateError) as e:
                if not (self._reconnect and _retryable(e)):
                    raise
            if not self._reconnect:
                return
            attempt += 1
            await asyncio.sleep(_backoff(attempt, self._max_backoff))


def _body(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return response.text
