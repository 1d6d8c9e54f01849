"""A small JSON-RPC client for the daemon, over its unix socket or HTTP."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import aiohttp

from certd.errors import CertdError


class RpcError(CertdError):
    """The daemon answered a call with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class Client:
    """Calls methods; ``url`` for HTTP (with an API key) or ``socket`` for the unix socket."""

    def __init__(
        self,
        *,
        url: str | None = None,
        socket: Path | None = None,
        api_key: str | None = None,
        timeout: float = 3700,
    ) -> None:
        if (url is None) == (socket is None):
            raise ValueError("give exactly one of url and socket")
        connector = aiohttp.UnixConnector(path=str(socket)) if socket else None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Accept the base URL or the endpoint itself (as curl examples show it).
        base = url.rstrip("/").removesuffix("/rpc") if url else "http://certd"
        self._endpoint = f"{base}/rpc"
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        )
        self._ids = itertools.count(1)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    async def raw(self, body: Any) -> tuple[int, Any]:
        """POST any JSON body; return the HTTP status and the decoded reply."""
        return await self.raw_text(json.dumps(body))

    async def raw_text(self, body: str) -> tuple[int, Any]:
        """POST a body as it is; return the HTTP status and the decoded reply."""
        async with self._session.post(self._endpoint, data=body) as response:
            text = await response.text()
        try:
            return response.status, (json.loads(text) if text else None)
        except json.JSONDecodeError:
            return response.status, text

    async def call(self, method: str, *params: Any) -> Any:
        """Call a method with positional params; raise RpcError on an error reply."""
        request = {
            "jsonrpc": "2.0",
            "method": method,
            "params": list(params),
            "id": next(self._ids),
        }
        status, reply = await self.raw(request)
        if not isinstance(reply, dict):
            raise RpcError(
                -32603, f"the daemon answered HTTP {status} without a JSON-RPC reply"
            )
        if "error" in reply:
            error = reply["error"]
            raise RpcError(error["code"], error["message"], error.get("data"))
        return reply["result"]

    async def wait_job(self, job_id: int, on_progress: Any = None) -> Any:
        """Follow a job to its end; return its result or raise RpcError with its error."""
        last = None
        while True:
            job = await self.call("core.job_watch", job_id, 1.0)
            progress = (job["progress"]["percent"], job["progress"]["description"])
            if on_progress is not None and progress != last:
                on_progress(*progress)
                last = progress
            if job["state"] == "SUCCESS":
                return job["result"]
            if job["state"] in ("FAILED", "ABORTED"):
                details = job.get("exc_info") or {}
                raise RpcError(
                    details.get("code", -32000), job["error"] or job["state"], details
                )
