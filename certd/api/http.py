"""The HTTP face of the API: ``POST /rpc`` plus probes, on TCP and the unix socket."""

from __future__ import annotations

import errno
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from certd.api.auth import Caller, peer_credentials, unix_caller
from certd.api.codes import (
    INVALID_REQUEST,
    NOT_AUTHENTICATED,
    PARSE_ERROR,
    REQUEST_TOO_LARGE,
)
from certd.api.dispatch import CallContext
from certd.api.ejson import INT64_REASON, has_oversized_integer
from certd.api.ratelimit import (
    TOO_MANY_FAILURES,
    UNPARSEABLE,
    AuthFailureLimiter,
    Refusal,
    refusal_message,
    retry_after_header,
    token_key,
)
from certd.api.websocket import add_routes as add_websocket_routes

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


def _bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header; None for anything else."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


async def _caller(
    daemon: Daemon, request: web.Request
) -> tuple[Caller | None, str, bool]:
    """(caller, transport name, credentials given but wrong)."""
    sock = _transport_socket(request)
    if sock is not None and sock.family == socket.AF_UNIX:
        caller = unix_caller(sock, daemon.config.server.socket_group)
        if caller is not None:
            return caller, "unix", False
    if not request.headers.get("Authorization", ""):
        return (
            None,
            "unix" if sock is not None and sock.family == socket.AF_UNIX else "http",
            False,
        )
    token = _bearer_token(request)
    if token is None:
        return None, "http", True
    caller = await daemon.api_keys.verify(token)
    return caller, "http", caller is None


def _remote_address(request: web.Request) -> str:
    """The address failed attempts are counted against: IP, or unix peer uid."""
    sock = _transport_socket(request)
    if sock is not None and sock.family == socket.AF_UNIX:
        try:
            _, uid, _ = peer_credentials(sock)
        except OSError:
            return "unix"
        return f"unix:uid={uid}"
    return request.remote or "unknown"


def _too_many(address: str, refusal: Refusal) -> web.Response:
    return web.Response(
        status=429,
        text=_error_body(
            TOO_MANY_FAILURES,
            refusal_message(address, refusal),
            "RateLimited",
            errno.EAGAIN,
        ),
        content_type="application/json",
        headers={"Retry-After": retry_after_header(refusal.wait)},
    )


def _count_failure(
    limiter: AuthFailureLimiter, address: str, key: str, transport: str
) -> None:
    log.warning(
        "authentication_failed", remote=address, transport=transport, key_ref=key
    )
    limiter.count_failure(address, key)


async def rpc(request: web.Request) -> web.StreamResponse:
    daemon: Daemon = request.app[DAEMON_KEY]  # type: ignore[assignment]
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return web.Response(
            status=413,
            text=_error_body(
                REQUEST_TOO_LARGE, "Request body too large", "RequestTooLarge", 27
            ),
            content_type="application/json",
        )
    limiter = daemon.auth_limiter
    address = _remote_address(request)
    token = _bearer_token(request)
    key = UNPARSEABLE if token is None else token_key(token)
    # A token that authenticated lately skips the limits: a guesser at the
    # same address cannot lock it out.
    checked = "Authorization" in request.headers and not (
        token is not None and limiter.proven(token)
    )
    if checked:
        # Refused before the key is looked at: a guesser learns nothing here.
        refused = limiter.refusal(address, key, time.monotonic())
        if refused is not None:
            return _too_many(address, refused)
    try:
        # JSON is UTF-8 whatever the Content-Type says (RFC 8259 §8.1).
        body = raw.decode("utf-8")
    except UnicodeDecodeError:
        return web.Response(
            text=_error_body(
                PARSE_ERROR,
                "Parse error: the body is not UTF-8",
                "ParseError",
                errno.EILSEQ,
            ),
            content_type="application/json",
        )
    if checked:
        # Attempts not known to work take turns, so each failure is counted
        # before the next attempt is weighed.
        async with limiter.turn(address):
            refused = limiter.refusal(address, key, time.monotonic())
            if refused is not None:
                return _too_many(address, refused)
            caller, transport, bad_credentials = await _caller(daemon, request)
            if bad_credentials:
                _count_failure(limiter, address, key, transport)
    else:
        caller, transport, bad_credentials = await _caller(daemon, request)
    if bad_credentials:
        if token is not None:
            # A proven token that fails now belongs to a revoked key.
            limiter.disprove(token)
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
    if caller is not None and caller.key is not None and token is not None:
        limiter.succeeded(address, key, time.monotonic())
        limiter.prove(token)
    if has_oversized_integer(body):
        return web.Response(
            text=_error_body(
                INVALID_REQUEST,
                f"Invalid request: {INT64_REASON}",
                "ValidationError",
                errno.ERANGE,
            ),
            content_type="application/json",
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
    add_websocket_routes(app, daemon)
    for route in daemon.extra_routes:
        app.router.add_route(*route)
    return app
