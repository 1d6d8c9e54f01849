"""The HTTP face of the API: ``POST /rpc`` plus probes, on TCP and the unix socket."""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from certd.api.auth import Caller, unix_caller
from certd.api.codes import NOT_AUTHENTICATED, REQUEST_TOO_LARGE
from certd.api.dispatch import CallContext

if TYPE_CHECKING:
    from certd.service import Daemon

log = structlog.get_logger(__name__)

DAEMON_KEY = web.AppKey("daemon", object)


def _error_body(code: int, message: str, kind: str, errno: int) -> str:
    error = {"code": code, "message": message, "data": {"type": kind, "errno": errno}}
    return json.dumps({"jsonrpc": "2.0", "error": error, "id": None})


def _transport_socket(request: web.Request) -> socket.socket | None:
    transport = request.transport
    return transport.get_extra_info("socket") if transport else None


async def _caller(
    daemon: Daemon, request: web.Request
) -> tuple[Caller | None, str, bool]:
    """(caller, transport name, credentials given but wrong)."""
    sock = _transport_socket(request)
    if sock is not None and sock.family == socket.AF_UNIX:
        caller = unix_caller(sock, daemon.config.server.socket_group)
        if caller is not None:
            return caller, "unix", False
    header = request.headers.get("Authorization", "")
    if not header:
        return (
            None,
            "unix" if sock is not None and sock.family == socket.AF_UNIX else "http",
            False,
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None, "http", True
    caller = await daemon.api_keys.verify(token.strip())
    return caller, "http", caller is None


async def rpc(request: web.Request) -> web.StreamResponse:
    daemon: Daemon = request.app[DAEMON_KEY]  # type: ignore[assignment]
    try:
        body = await request.text()
    except web.HTTPRequestEntityTooLarge:
        return web.Response(
            status=413,
            text=_error_body(
                REQUEST_TOO_LARGE, "Request body too large", "RequestTooLarge", 27
            ),
            content_type="application/json",
        )
    caller, transport, bad_credentials = await _caller(daemon, request)
    if bad_credentials:
        log.warning("authentication_failed", remote=request.remote, transport=transport)
        return web.Response(
            status=401,
            text=_error_body(
                NOT_AUTHENTICATED,
                "Not authenticated: the API key is unknown or revoked",
                "AuthenticationError",
                13,
            ),
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="certd"'},
        )
    ctx = CallContext(caller=caller, transport=transport)
    response = await daemon.dispatcher.handle(body, ctx)
    if not response:
        return web.Response(status=204)
    return web.Response(text=response, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the event loop answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the store answers and the daemon finished starting."""
    daemon: Daemon = request.app[DAEMON_KEY]  # type: ignore[assignment]
    checks = await daemon.readiness()
    status = 200 if all(checks.values()) else 503
    return web.json_response({"ready": status == 200, "checks": checks}, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(daemon: Daemon) -> web.Application:
    app = web.Application(client_max_size=daemon.config.server.max_request_bytes)
    app[DAEMON_KEY] = daemon
    app.router.add_post("/rpc", rpc)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    for route in daemon.extra_routes:
        app.router.add_route(*route)
    return app
