"""Errors in the shapes the client turns into its own exceptions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.daemon import RunningDaemon, make_config, running_daemon
from tests.websocket.client import CallFailed, WsClient, connect
from tests.websocket.conftest import Key, make_key, ws_url

# Nothing here changes the daemon's state, so one daemon serves the module.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def certd(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[RunningDaemon]:
    config = make_config(tmp_path_factory.mktemp("certd") / "state")
    async with running_daemon(config) as daemon:
        yield daemon


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def key(certd: RunningDaemon) -> Key:
    return await make_key(certd, "ci")


async def logged_in_call(client: WsClient, key: Key, method: str, *params: Any) -> Any:
    await client.login_plain(key.name, key.raw)
    return await client.call(method, *params)


async def test_validation_error_lists_field_message_and_errno(
    certd: RunningDaemon, key: Key
) -> None:
    async with connect(ws_url(certd)) as client:
        with pytest.raises(CallFailed) as caught:
            await logged_in_call(
                client, key, "certificate.query", [["name", "??", "x"], ["id", "in", 3]]
            )
    assert caught.value.code == -32602
    assert caught.value.error["message"] == "Invalid params"
    data = caught.value.data
    assert data is not None
    assert set(data) >= {"error", "errname", "reason", "trace", "extra"}
    assert data["error"] == 22
    assert data["errname"] == "EINVAL"
    assert data["trace"] is None
    [(field, message, errno)] = data["extra"]
    assert field == "filters.0.1"
    assert message.startswith("unknown operator '??'")
    assert errno == 22
    assert data["reason"] == f"[EINVAL] filters.0.1: {message}"


async def test_parameter_type_errors_name_the_parameter(
    certd: RunningDaemon, key: Key
) -> None:
    async with connect(ws_url(certd)) as client:
        with pytest.raises(CallFailed) as caught:
            await logged_in_call(client, key, "certificate.get_instance", "seven")
        assert caught.value.code == -32602
        assert caught.value.data is not None
        assert [e[0] for e in caught.value.data["extra"]] == ["id"]
        with pytest.raises(CallFailed) as caught:
            await client.call("certificate.get_instance", 1, 2)
        assert caught.value.data is not None
        assert caught.value.data["extra"][0][0] == "params"


async def test_call_error_carries_errno_name_reason(
    certd: RunningDaemon, key: Key
) -> None:
    async with connect(ws_url(certd)) as client:
        with pytest.raises(CallFailed) as caught:
            await logged_in_call(client, key, "certificate.get_instance", 12345)
    assert caught.value.code == -32001
    assert caught.value.error["message"] == "Method call error"
    data = caught.value.data
    assert data is not None
    assert data["error"] == 2
    assert data["errname"] == "ENOENT"
    assert data["reason"] == "certificate 12345 does not exist"
    assert data["trace"] is None
    assert data["extra"] is None
    assert data["details"]["type"] == "NotFoundError"


async def test_named_params_work_too(certd: RunningDaemon, key: Key) -> None:
    async with connect(ws_url(certd)) as client:
        await client.login_plain(key.name, key.raw)
        await client.send(
            {
                "jsonrpc": "2.0",
                "method": "certificate.get_instance",
                "id": "named",
                "params": {"id": 5},
            }
        )
        reply = await client.unanswered.get()
    assert reply["id"] == "named"
    assert reply["error"]["data"]["reason"] == "certificate 5 does not exist"


@pytest.mark.parametrize(
    ("raw", "code", "request_id", "text"),
    [
        ("{not json", -32700, None, "Parse error"),
        ('[{"jsonrpc": "2.0", "method": "core.ping", "id": 1}]', -32600, None, "Batch"),
        ('"core.ping"', -32600, None, "JSON object"),
        ('{"jsonrpc": "2.0", "method": "core.ping", "id": 1.5}', -32600, None, "id"),
        ('{"jsonrpc": "1.0", "method": "core.ping", "id": "a"}', -32600, "a", "2.0"),
        ('{"jsonrpc": "2.0", "method": "", "id": "b"}', -32600, "b", "method"),
        (
            '{"jsonrpc": "2.0", "method": "core.ping", "id": "c", "params": 3}',
            -32600,
            "c",
            "params",
        ),
        ("[" * 100_000, -32700, None, "Parse error"),
        (
            '{"jsonrpc": "2.0", "method": "certificate.get_instance", "id": "d", '
            f'"params": [{10**30}]}}',
            -32600,
            "d",
            "2^63",
        ),
        (
            '{"jsonrpc": "2.0", "method": "core.ping", '
            '"id": 99999999999999999999999999999}',
            -32600,
            None,
            "2^63",
        ),
    ],
)
async def test_malformed_requests(
    certd: RunningDaemon, raw: str, code: int, request_id: Any, text: str
) -> None:
    async with connect(ws_url(certd)) as client:
        await client.ws.send_str(raw)
        reply = await client.unanswered.get()
    assert reply["jsonrpc"] == "2.0"
    assert reply["id"] == request_id
    assert reply["error"]["code"] == code
    assert text in reply["error"]["message"]


async def test_binary_messages_and_notifications(certd: RunningDaemon) -> None:
    async with connect(ws_url(certd)) as client:
        await client.ws.send_bytes(
            b'{"jsonrpc": "2.0", "method": "core.ping", "id": 1}'
        )
        reply = await client.unanswered.get()
        assert reply["error"]["code"] == -32600
        assert "text" in reply["error"]["message"]
        # A notification gets no answer: the next message is the ping's.
        await client.send({"jsonrpc": "2.0", "method": "core.ping", "params": []})
        assert await client.call("core.ping") == "pong"
        assert client.unanswered.empty()


async def test_extended_json_in_params(certd: RunningDaemon, key: Key) -> None:
    async with connect(ws_url(certd)) as client:
        await client.login_plain(key.name, key.raw)
        # A $set arrives as a set, which the filter refuses in its own words.
        with pytest.raises(CallFailed) as caught:
            await client.call("certificate.query", [["id", "in", {"$set": [1]}]])
        assert caught.value.data is not None
        assert caught.value.data["extra"][0][:2] == ["filters.0.2", "in takes a list"]
        with pytest.raises(CallFailed) as caught:
            await client.call("certificate.query", [["id", "=", {"$date": "soon"}]])
        assert caught.value.data is not None
        [(field, message, _)] = caught.value.data["extra"]
        assert field == "params.0.0.2"
        assert "malformed $date" in message
        dated = [["not_valid_after", "<", {"$date": 1_700_000_000_000}]]
        assert await client.call("certificate.query", dated) == []


@pytest.mark.parametrize(
    ("params", "field", "text"),
    [
        ({"$date": 0}, "params", "array or an object"),
        ([[["id", "=", {"$date": 1e300}]]], "params.0.0.2", "years 1 to 9999"),
        (json.loads("[" * 900 + "]" * 900), "params" + ".0" * 64, "deeper than"),
    ],
)
async def test_params_the_extended_json_cannot_take_are_invalid(
    certd: RunningDaemon, key: Key, params: Any, field: str, text: str
) -> None:
    async with connect(ws_url(certd)) as client:
        await client.login_plain(key.name, key.raw)
        await client.send(
            {
                "jsonrpc": "2.0",
                "method": "certificate.query",
                "id": "p",
                "params": params,
            }
        )
        reply = await client.unanswered.get()
    assert reply["id"] == "p"
    assert reply["error"]["code"] == -32602
    [(where, message, _)] = reply["error"]["data"]["extra"]
    assert where == field
    assert text in message
