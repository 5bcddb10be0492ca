"""Starts the real `flowstate` binary on a free port for each test: embedded (SQLite + in
process) always, and Redis + PostgreSQL when `TEST_REDIS_PG=1` (each test with its own
key prefix and PostgreSQL schema)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

# CrewAI must not phone home (the tests run without network) nor trace.
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")

REPO = Path(__file__).resolve().parents[3]
BIN = os.environ.get("TEST_FLOWSTATE_BIN", str(REPO / "target" / "debug" / "flowstate"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A running `flowstate serve`."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, **self.env, "FLOWSTATE_LISTEN": f"127.0.0.1:{port}"}
        out = self.log.open("ab")
        self.proc = subprocess.Popen([BIN, "serve"], env=env, stdout=out, stderr=out)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flowstate exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"flowstate did not become ready: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


def _backends() -> list[str]:
    if os.environ.get("TEST_REDIS_PG") == "1":
        return ["embedded", "redis-postgres"]
    return ["embedded"]


def _postgres_url(schema: str) -> str:
    admin = os.environ.get("TEST_DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/test")
    subprocess.run(["psql", admin, "-qtAc", f"CREATE SCHEMA {schema}"], check=True)
    sep = "&" if "?" in admin else "?"
    return f"{admin}{sep}options=-c%20search_path%3D{schema}"


def server_env(backend: str, tmp: Path) -> dict[str, str]:
    """The environment of a server on `backend`, with data under `tmp`."""
    unique = uuid.uuid4().hex
    if backend == "embedded":
        return {"FLOWSTATE_DATABASE__URL": f"sqlite://{tmp}/flowstate.db"}
    return {
        "REDIS_URL": os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "FLOWSTATE_KEY_PREFIX": f"test:py:{unique}:",
        "FLOWSTATE_DATABASE__URL": _postgres_url(f"t_{unique}"),
    }


@pytest.fixture(params=_backends())
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    srv = Server(server_env(request.param, tmp_path), tmp_path / "server.log")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def url(server: Server) -> str:
    return server.url
