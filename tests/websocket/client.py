"""The client's side of the WebSocket protocol, written from the specification."""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.websocket.scram_client import ScramClient


class CallFailed(Exception):
    """The server answered a call with an error object."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.error = error
        self.code: int = error["code"]
        self.data: dict[str, Any] | None = error.get("data")


class WsClient:
    """Sends requests with UUID string ids; keeps every message in arrival order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.unanswered: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            body = json.loads(message.data)
            self.received.append(body)
            if "method" in body:
                self.events.put_nowait(body)
            elif (future := self._pending.pop(body.get("id"), None)) is not None:
                future.set_result(body)
            else:
                self.unanswered.put_nowait(body)

    async def send(self, body: Any) -> None:
        await self.ws.send_str(json.dumps(body))

    async def request(
        self, method: str, *params: Any, request_id: Any = None
    ) -> dict[str, Any]:
        """Send one request and return the whole response message."""
        request_id = str(uuid.uuid4()) if request_id is None else request_id
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        await self.send(
            {
                "jsonrpc": "2.0",
                "method": method,
                "id": request_id,
                "params": list(params),
            }
        )
        return await asyncio.wait_for(future, 30)

    async def start(self, method: str, *params: Any) -> tuple[str, asyncio.Future[Any]]:
        """Send a request; return its id and its answer (result or CallFailed) to come."""
        request_id = str(uuid.uuid4())
        reply = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        await self.send(
            {
                "jsonrpc": "2.0",
                "method": method,
                "id": request_id,
                "params": list(params),
            }
        )

        async def answer() -> Any:
            body = await reply
            if "error" in body:
                raise CallFailed(body["error"])
            return body["result"]

        return request_id, asyncio.ensure_future(answer())

    async def call(self, method: str, *params: Any, request_id: Any = None) -> Any:
        reply = await self.request(method, *params, request_id=request_id)
        if "error" in reply:
            raise CallFailed(reply["error"])
        return reply["result"]

    async def next_event(self, collection: str | None = None) -> dict[str, Any]:
        while True:
            event = await asyncio.wait_for(self.events.get(), 30)
            if collection is None or event["params"].get("collection") == collection:
                return event

    async def handshake(self) -> None:
        """What the client does on connecting."""
        options = await self.call(
            "core.set_options",
            {"legacy_jobs": False, "private_methods": False, "py_exceptions": False},
        )
        assert options["legacy_jobs"] is False

    async def login_plain(self, username: str, key: str) -> dict[str, Any]:
        return await self.call(
            "auth.login_ex",
            {"mechanism": "API_KEY_PLAIN", "username": username, "api_key": key},
        )

    async def login_scram(
        self, scram: ScramClient
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Both SCRAM steps; the second reply is None when the first was refused."""
        first = await self.call(
            "auth.login_ex",
            {
                "mechanism": "SCRAM",
                "scram_type": "CLIENT_FIRST_MESSAGE",
                "rfc_str": scram.first(),
            },
        )
        if first["response_type"] != "SCRAM_RESPONSE":
            return first, None
        assert first["scram_type"] == "SERVER_FIRST_RESPONSE"
        final = await self.call(
            "auth.login_ex",
            {
                "mechanism": "SCRAM",
                "scram_type": "CLIENT_FINAL_MESSAGE",
                "rfc_str": scram.final(first["rfc_str"]),
            },
        )
        return first, final

    async def wait_closed(self) -> int | None:
        """Wait until the server closes the connection; return its close code."""
        await asyncio.wait_for(asyncio.shield(self._reader), 30)
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


@asynccontextmanager
async def connect(
    url: str | None = None,
    *,
    unix: Path | None = None,
    ssl_context: ssl.SSLContext | bool | None = None,
    handshake: bool = True,
) -> AsyncIterator[WsClient]:
    """A connection to ``url`` or, through the unix socket, to ``/api/current``."""
    connector = aiohttp.UnixConnector(path=str(unix)) if unix else None
    async with aiohttp.ClientSession(connector=connector) as session:
        target = url or "http://localhost/api/current"
        kwargs: dict[str, Any] = {}
        if ssl_context is not None:
            kwargs["ssl"] = ssl_context
        async with session.ws_connect(target, **kwargs) as ws:
            client = WsClient(ws)
            try:
                if handshake:
                    await client.handshake()
                yield client
            finally:
                await client.close()
