"""Retries of 503 answers: capped, following `Retry-After`, then a typed error. Client logic
only, so the server is an in-process httpx transport."""

from __future__ import annotations

import httpx
import pytest

from flowstate_client import Client, RateLimited, Unavailable


def _unavailable(counter: list[int], succeed_after: int) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        counter.append(1)
        if len(counter) > succeed_after:
            return httpx.Response(200, json={"state": {}, "saved_at": "x", "version": 1})
        return httpx.Response(
            503,
            headers={"Retry-After": "0.01"},
            json={"error": {"code": "ledger_unavailable", "message": "down"}},
        )

    return httpx.MockTransport(handle)


def test_503_is_retried_then_succeeds() -> None:
    calls: list[int] = []
    http = httpx.Client(base_url="http://x", transport=_unavailable(calls, 2))
    with Client("http://x", http=http, max_retries=3) as fs:
        assert fs.get_state("f")["version"] == 1
    assert len(calls) == 3


def test_503_gives_up_after_max_retries() -> None:
    calls: list[int] = []
    http = httpx.Client(base_url="http://x", transport=_unavailable(calls, 100))
    with Client("http://x", http=http, max_retries=2) as fs, pytest.raises(Unavailable) as e:
        fs.get_state("f")
    assert len(calls) == 3
    assert e.value.code == "ledger_unavailable"
    assert e.value.retry_after == 0.01


def _answer(counter: list[int], status: int, code: str) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        counter.append(1)
        return httpx.Response(
            status, headers={"Retry-After": "0.01"}, json={"error": {"code": code, "message": "x"}}
        )

    return httpx.MockTransport(handle)


def test_429_is_retried_then_raised() -> None:
    calls: list[int] = []
    http = httpx.Client(base_url="http://x", transport=_answer(calls, 429, "rate_limited"))
    with Client("http://x", http=http, max_retries=2) as fs, pytest.raises(RateLimited):
        fs.get_state("f")
    assert len(calls) == 3


def test_a_request_timeout_is_not_retried() -> None:
    """It may have been applied: retrying could apply it twice."""
    calls: list[int] = []
    http = httpx.Client(base_url="http://x", transport=_answer(calls, 503, "request_timeout"))
    with Client("http://x", http=http, max_retries=3) as fs, pytest.raises(Unavailable) as e:
        fs.put_state("f", {})
    assert len(calls) == 1
    assert e.value.code == "request_timeout"
