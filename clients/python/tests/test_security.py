"""The client against a server with API tokens and encryption keys: bearer tokens, typed 401
and 403 errors, and a sensitive flow read back in the clear."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Server, server_env

from flowstate_client import Client, Forbidden, Unauthorized

READ = "py-reader-token-0123456789"
WRITE = "py-writer-token-0123456789"


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Server]:
    key = base64.b64encode(bytes(range(32))).decode()
    env = {
        **server_env("embedded", tmp_path),
        "FLOWSTATE_API_TOKENS": f"read:{READ},write:{WRITE}",
        "FLOWSTATE_ENCRYPTION_KEYS": f"k1:{key}",
    }
    srv = Server(env, tmp_path / "server.log")
    srv.start()
    yield srv
    srv.stop()


def test_tokens_roles_and_a_sensitive_flow(secured: Server) -> None:
    with Client(secured.url) as anonymous, pytest.raises(Unauthorized) as e:
        anonymous.list_flows()
    assert e.value.status == 401
    assert e.value.code == "unauthorized"
    with Client(secured.url, token=WRITE) as fs:
        flow = fs.register_flow("t", flow_id="secret-flow", sensitive=True)
        assert flow["sensitive"] is True
        fs.put_state("secret-flow", {"password": "hunter2"})
    with Client(secured.url, token=READ) as reader:
        assert reader.get_state("secret-flow")["state"] == {"password": "hunter2"}
        with pytest.raises(Forbidden) as f:
            reader.put_state("secret-flow", {"password": "changed"})
        assert f.value.status == 403
