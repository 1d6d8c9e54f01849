"""Malformed bodies, huge and deep requests, batch abuse: always a JSON-RPC error.

No request may crash the daemon, get an HTTP 500, or change the store.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import FuzzDaemon
from tests.fuzz.schema import any_json, nested

EXAMPLES = int(os.environ.get("CERTD_FUZZ_EXAMPLES", "15")) * 10
LIMIT = 4 * 1024 * 1024  # server.max_request_bytes of the fuzz daemon (default)
PING = {"jsonrpc": "2.0", "method": "core.ping", "id": 1}
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def error_code(reply: Any) -> int:
    assert isinstance(reply, dict) and "error" in reply, reply
    assert reply["jsonrpc"] == "2.0"
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    return int(reply["error"]["code"])


def refused(daemon: FuzzDaemon, body: bytes, **kwargs: Any) -> tuple[int, int]:
    """Post ``body``; check nothing changed; return (HTTP status, JSON-RPC code)."""
    before = daemon.snapshot()
    reply = daemon.post(body, **kwargs)
    assert reply.status != 500 and reply.status < 500, (reply.status, reply.body[:200])
    assert daemon.alive(), daemon.log_tail()
    assert daemon.snapshot() == before
    return reply.status, error_code(reply.json())


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", -32700),
        (b"{", -32700),
        (b"null", -32600),
        (b"42", -32600),
        (b'"text"', -32600),
        (b"[]", -32600),
        (b"{}", -32600),
        (b'{"jsonrpc": "1.0", "method": "core.ping", "id": 1}', -32600),
        (b'{"jsonrpc": "2.0", "method": 5, "id": 1}', -32600),
        (b'{"jsonrpc": "2.0", "method": "core.ping", "id": {"a": 1}}', -32600),
        (b'{"jsonrpc": "2.0", "method": "core.ping", "params": 5, "id": 1}', -32600),
        (b'{"jsonrpc": "2.0", "method": "core.ping", "params": "x", "id": 1}', -32600),
        (b'{"jsonrpc": "2.0", "method": "nope", "id": 1}', -32601),
        (b'{"jsonrpc": "2.0", "method": "core.ping", "params": [1], "id": 1}', -32602),
        (b'{"jsonrpc": "2.0", "method": "core.ping", "id": 1} trailing', -32700),
        (b"\xff\xfe\x00{", -32700),
        (b'{"jsonrpc": "2.0", "method": "core.ping\xff", "id": 1}', -32700),
        (b"\xef\xbb\xbf" + json.dumps(PING).encode(), -32700),
        (
            b'{"jsonrpc": "2.0", "method": "certificate.get_instance", "params": [1e999], "id": 1}',
            -32700,
        ),
        (
            b'{"jsonrpc": "2.0", "method": "certificate.get_instance", "params": [NaN], "id": 1}',
            -32700,
        ),
        (
            b'{"jsonrpc": "2.0", "method": "certificate.get_instance", "params": [9223372036854775808], "id": 1}',
            -32600,
        ),
        (
            b'{"jsonrpc": "2.0", "method": "certificate.get_instance", "params": [-9223372036854775809], "id": 1}',
            -32600,
        ),
        (
            b'{"jsonrpc": "2.0", "method": "certificate.get_instance", "params": ['
            + b"9" * 5000
            + b'], "id": 1}',
            -32600,
        ),
        (
            b'{"jsonrpc": "2.0", "method": "core.ping", "id": 1' + b"0" * 30 + b"}",
            -32600,
        ),
    ],
)
def test_malformed_requests(fuzz_daemon: FuzzDaemon, body: bytes, code: int) -> None:
    status, got = refused(fuzz_daemon, body)
    assert (status, got) == (200, code)


def test_an_int64_at_the_edge_is_fine(fuzz_daemon: FuzzDaemon) -> None:
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "method": "certificate.get_instance",
            "params": [2**63 - 1],
            "id": 1,
        }
    ).encode()
    _, code = refused(fuzz_daemon, body)
    assert code == -32003


@pytest.mark.parametrize("depth", [10, 100, 900, 1_000, 5_000, 100_000])
def test_deep_nesting(fuzz_daemon: FuzzDaemon, depth: int) -> None:
    inner = "[" * depth + "]" * depth
    as_params = f'{{"jsonrpc": "2.0", "method": "certificate.query", "params": [{inner}], "id": 1}}'
    status, code = refused(fuzz_daemon, as_params.encode())
    assert status == 200 and code in (-32700, -32602)
    status, code = refused(fuzz_daemon, inner.encode())
    assert status == 200 and code in (-32700, -32600)


def test_deep_objects_inside_filters(fuzz_daemon: FuzzDaemon) -> None:
    request = {
        "jsonrpc": "2.0",
        "method": "certificate.query",
        "params": [[["name", "=", nested(400)]], {"select": [nested(400)]}],
        "id": 1,
    }
    _, code = refused(fuzz_daemon, json.dumps(request).encode())
    assert code == -32602


def test_body_size_limit(fuzz_daemon: FuzzDaemon) -> None:
    padding = "x" * (LIMIT - 200)
    fits = json.dumps({**PING, "params": [padding]}).encode()
    assert len(fits) < LIMIT
    status, code = refused(fuzz_daemon, fits)
    assert (status, code) == (200, -32602)
    too_big = json.dumps({**PING, "params": ["x" * LIMIT]}).encode()
    status, code = refused(fuzz_daemon, too_big)
    assert (status, code) == (413, -32005)


def test_batches(fuzz_daemon: FuzzDaemon) -> None:
    def post(batch: Any) -> Any:
        reply = fuzz_daemon.post(json.dumps(batch).encode())
        assert reply.status in (200, 204), reply.status
        return reply.json()

    before = fuzz_daemon.snapshot()
    full = post([{**PING, "id": i} for i in range(100)])
    assert [r["result"] for r in full] == ["pong"] * 100
    assert error_code(post([{**PING, "id": i} for i in range(101)])) == -32600
    assert error_code(post([])) == -32600
    # A batch with malformed members is refused as a whole.
    assert error_code(post([1, "x", None, [PING], {**PING, "id": 5}])) == -32600
    assert post([{"jsonrpc": "2.0", "method": "core.ping"}] * 50) is None
    duplicates = post([PING, PING, PING])
    assert [r["id"] for r in duplicates] == [1, 1, 1]
    hostile = [
        {"jsonrpc": "2.0", "method": "certificate.delete", "params": ["x"], "id": i}
        for i in range(100)
    ]
    assert {r["error"]["code"] for r in post(hostile)} == {-32602}
    assert fuzz_daemon.snapshot() == before


@pytest.mark.parametrize(
    ("method", "path", "content_type"),
    [
        ("GET", "/rpc", "application/json"),
        ("PUT", "/rpc", "application/json"),
        ("POST", "/rpc", "text/plain"),
        ("POST", "/rpc", "application/json; charset=latin-1"),
        ("POST", "/rpc", "multipart/form-data; boundary=x"),
        ("POST", "/nothing", "application/json"),
    ],
)
def test_odd_http(
    fuzz_daemon: FuzzDaemon, method: str, path: str, content_type: str
) -> None:
    before = fuzz_daemon.snapshot()
    reply = fuzz_daemon.post(
        json.dumps(PING).encode(), content_type=content_type, path=path, method=method
    )
    assert reply.status < 500, reply.status
    assert fuzz_daemon.alive()
    assert fuzz_daemon.snapshot() == before


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes(fuzz_daemon: FuzzDaemon, body: bytes) -> None:
    reply = fuzz_daemon.post(body)
    assert reply.status in (200, 204), (reply.status, body)
    if reply.status == 200:
        parsed = reply.json()
        assert isinstance(parsed, dict | list)
    assert fuzz_daemon.alive()


@FUZZ
@given(any_json(max_leaves=30))
def test_random_json_documents(fuzz_daemon: FuzzDaemon, document: Any) -> None:
    before = fuzz_daemon.snapshot()
    reply = fuzz_daemon.post(json.dumps(document).encode())
    assert reply.status in (200, 204), reply.status
    assert fuzz_daemon.alive()
    assert fuzz_daemon.snapshot() == before


@FUZZ
@given(
    st.fixed_dictionaries(
        {"jsonrpc": st.sampled_from(["2.0", "2", 2.0, None])},
        optional={
            "method": st.sampled_from(
                ["core.ping", "certificate.query", "rpc.discover"]
            )
            | st.text(max_size=20)
            | any_json(),
            "params": any_json(),
            "id": st.integers() | st.text(max_size=5) | st.none() | any_json(),
        },
    )
)
def test_random_requests(fuzz_daemon: FuzzDaemon, request: dict[str, Any]) -> None:
    before = fuzz_daemon.snapshot()
    reply = fuzz_daemon.post(json.dumps(request).encode())
    assert reply.status in (200, 204), reply.status
    if reply.status == 200:
        answer = reply.json()
        if "error" in answer:
            assert answer["error"]["code"] != -32603, answer
    assert fuzz_daemon.alive()
    assert fuzz_daemon.snapshot() == before
