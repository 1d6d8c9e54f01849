"""What every connection does first, and what it may do before login."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from tests.daemon import RunningDaemon, make_config, running_daemon
from tests.websocket.client import CallFailed, connect
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


async def test_set_options_is_answered_before_login(certd: RunningDaemon) -> None:
    async with connect(ws_url(certd), handshake=False) as client:
        options = {"legacy_jobs": False, "private_methods": True, "py_exceptions": True}
        assert await client.call("core.set_options", options) == {
            "legacy_jobs": False,
            "private_methods": False,
            "py_exceptions": False,
        }


async def test_ping_and_mechanisms_need_no_login(certd: RunningDaemon) -> None:
    async with connect(ws_url(certd)) as client:
        assert await client.call("core.ping") == "pong"
        assert await client.call("auth.mechanism_choices") == [
            "API_KEY_PLAIN",
            "SCRAM",
        ]


async def test_every_other_method_says_not_authenticated(certd: RunningDaemon) -> None:
    # core.ping answers anyone on the WebSocket, as the client expects.
    methods = sorted(set(certd.daemon.registry.methods) - {"core.ping"})
    methods += ["core.subscribe", "core.unsubscribe", "auth.me"]
    async with connect(ws_url(certd)) as client:
        for method in methods:
            with pytest.raises(CallFailed) as caught:
                await client.call(method)
            assert caught.value.code == -32001, method
            assert caught.value.error["message"] == "Method call error"
            assert caught.value.data == {
                "error": 207,
                "errname": "ENOTAUTHENTICATED",
                "reason": "Not authenticated",
                "trace": None,
                "extra": None,
            }


async def test_unknown_method_before_and_after_login(
    certd: RunningDaemon, key: Key
) -> None:
    async with connect(ws_url(certd)) as client:
        for _ in range(2):
            reply = await client.request("certificate.frobnicate")
            assert reply["error"] == {
                "code": -32601,
                "message": "Method does not exist",
            }
            await client.login_plain(key.name, key.raw)


async def test_ids_are_echoed_as_sent(certd: RunningDaemon) -> None:
    async with connect(ws_url(certd)) as client:
        for request_id in ("6f1c2c9e-2d7e-4c55-9d0e-1e1f9b1c0a11", 7, "x"):
            reply = await client.request("core.ping", request_id=request_id)
            assert reply == {"jsonrpc": "2.0", "result": "pong", "id": request_id}


async def test_http_rpc_keeps_working_beside_the_websocket(
    certd: RunningDaemon, key: Key
) -> None:
    async with connect(ws_url(certd)) as client:
        await client.login_plain(key.name, key.raw)
        over_ws = await client.call("rpc.discover")
        async with certd.client() as http:
            assert await http.call("rpc.discover") == over_ws
            assert await http.call("core.ping") == "pong"


async def test_a_plain_get_is_refused(certd: RunningDaemon) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(ws_url(certd).replace("ws:", "http:")) as response:
            assert response.status == 400
            assert "WebSocket" in await response.text()
