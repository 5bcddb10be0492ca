"""Typed errors: every API error body is `{"error": {"code", "message"}}` with a stable code."""

from __future__ import annotations

from typing import Any


class FlowstateError(Exception):
    """An error answer of the flowstate API (or no answer at all: `status` 0)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.body = body


class InvalidInput(FlowstateError):
    """400: the request was refused as it stands (`invalid_id`, `invalid_input`, ...)."""


class NotFound(FlowstateError):
    """404: no such flow, phase, agent, snapshot, lock or route."""


class Conflict(FlowstateError):
    """409: a version, status or existence conflict (`transition_conflict`, ...)."""


class LockHeld(Conflict):
    """409 `lock_held`: someone else holds the lock (after waiting, if asked to)."""


class LockNotHeld(Conflict):
    """409 `lock_not_held`: the token holds no lock (wrong, expired, released)."""


class StaleLease(Conflict):
    """409 `stale_lease`: the agent-cache lease was taken over by another caller."""


class TooLarge(FlowstateError):
    """413: the body or value is above the server's limit."""


class Unavailable(FlowstateError):
    """503 (after the client's retries): a tier the request needs is unreachable, or the
    request took longer than the server's timeout (`request_timeout`: not retried, since it may
    have been applied)."""


class Unauthorized(FlowstateError):
    """401: no token, or not one the server knows."""


class Forbidden(FlowstateError):
    """403: the token's role is too low for the route."""


class RateLimited(FlowstateError):
    """429 (after the client's retries): over the token's rate limit."""


_BY_CODE: dict[str, type[FlowstateError]] = {
    "lock_held": LockHeld,
    "lock_not_held": LockNotHeld,
    "stale_lease": StaleLease,
}
_BY_STATUS: dict[int, type[FlowstateError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    415: InvalidInput,
    429: RateLimited,
    503: Unavailable,
}


def error_for(status: int, body: Any, retry_after: float | None) -> FlowstateError:
    """The typed error for an error answer."""
    code, message = "http_error", f"HTTP {status}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code", code))
        message = str(body["error"].get("message", message))
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status, FlowstateError)
    return cls(status, code, message, retry_after=retry_after, body=body)
