"""The WebSocket face of the API, in the NAS middleware's protocol.

``GET /api/current`` upgrades to a WebSocket that carries one JSON-RPC 2.0
object per text message, in the extended JSON of :mod:`certd.api.ejson`. It
serves the same methods as ``POST /rpc`` through the same dispatcher, plus the
methods that only make sense on a connection: ``core.set_options``,
``core.ping``, ``core.subscribe``, ``core.unsubscribe`` and ``auth.*``.

A connection logs in with ``auth.login_ex``; one from the unix socket whose
peer the HTTP side would trust is logged in from the start. A login with an API
key lasts only as long as the key: every call, and every message written to the
client, first checks that the key is not revoked (it may be revoked by another
process, ``certd apikey revoke``, straight in the store). Job methods answer
as the middleware's new-style jobs do: the job is announced as a
``core.get_jobs`` event naming the request, changes follow as events, and the
call's response comes when the job ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import WSMsgType, web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from certd.api import ejson
from certd.api.auth import Caller, peer_credentials, unix_caller
from certd.api.dispatch import CallContext
from certd.api.jobs import FINISHED, Job, JobState
from certd.api.registry import MethodSpec, Registry, Service, api_method
from certd.api.scram import tls_server_end_point
from certd.api.ws_auth import AuthSession, RefusalLog
from certd.api.ws_shapes import (
    ENOTAUTHENTICATED,
    INTERNAL_ERROR,
    INVALID_JSON,
    INVALID_REQUEST,
    TOO_MANY_CONCURRENT_CALLS,
    WireError,
    call_error,
    job_error,
    job_fields,
    method_not_found,
    not_authenticated,
    refusal,
    simple_error,
)
from certd.errors import (
    AuthenticationError,
    CertdError,
    NotFoundError,
    ValidationError,
)
from certd.store.models import Certificate

if TYPE_CHECKING:
    from certd.service import Daemon

log = structlog.get_logger(__name__)

PATH = "/api/current"
JOBS = "core.get_jobs"
# The event bus's stream of every event; each event kind is also a collection.
EVENTS = "event.query"
MAX_CALLS_IN_FLIGHT = 20
# A client that leaves this many messages, or this many bytes of them, unread
# is cut off rather than allowed to grow the daemon's memory without bound; one
# answer to a large query can be megabytes, so the count alone is no bound.
MAX_QUEUED_MESSAGES = 10_000
MAX_QUEUED_BYTES = 64 * 1024 * 1024
# How long a connection cut off for not reading may take to accept the close
# frame before its socket is dropped.
ABORT_SECONDS = 5.0
HEARTBEAT_SECONDS = 30.0
# The request id of a frame that answers no call (an event).
_NO_CALL = object()


def key_revoked(withheld: bool = False) -> dict[str, Any]:
    """The error for a call on a login whose API key has been revoked.

    ``withheld``: the call ran (it was made before the revocation) and only
    its answer is kept back, which the client must not read as "nothing done".
    """
    reason = (
        "Not authenticated: the API key this connection logged in with has been revoked"
    )
    if withheld:
        reason += "; the call was made before, and may have taken effect"
    return refusal(ENOTAUTHENTICATED, reason)


class ClientOptions(BaseModel):
    """What the client asks of the connection; unknown options are ignored."""

    model_config = ConfigDict(extra="allow")

    legacy_jobs: bool = False
    private_methods: bool = False
    py_exceptions: bool = False


class CoreSession(Service):
    """The ``core`` methods that belong to one connection."""

    namespace = "core"
    app: Connection

    @api_method(anonymous=True, readonly=True)
    async def set_options(
        self,
        options: ClientOptions = ClientOptions(),  # noqa: B008 - never mutated
    ) -> dict[str, bool]:
        """Choose how jobs are reported; answered before login."""
        self.app.legacy_jobs = options.legacy_jobs
        # certd has no private methods and never sends pickled exceptions.
        return {
            "legacy_jobs": options.legacy_jobs,
            "private_methods": False,
            "py_exceptions": False,
        }

    @api_method(anonymous=True, readonly=True)
    async def ping(self) -> str:
        """Answer 'pong', also before login."""
        return "pong"

    @api_method(readonly=True)
    async def subscribe(self, name: str) -> str:
        """Receive ``collection_update`` events of a collection; return the id."""
        return self.app.subscribe(name)

    @api_method(readonly=True)
    async def unsubscribe(self, id: str) -> None:
        """End a subscription by the id ``core.subscribe`` returned."""
        self.app.unsubscribe(id)


def _session_methods() -> dict[str, MethodSpec]:
    registry = Registry()
    for cls in (CoreSession, AuthSession):
        registry.add_service(cls(None))
    return registry.methods


SESSION_METHODS = _session_methods()


class _Frame:
    """A message waiting to be written, and whether writing it ends a call.

    ``caller`` is the API key login the message is for, whose key must still
    stand when it is written; ``request_id`` the call it answers, if any;
    ``readonly_text`` the message as a read-only login gets it, when that
    differs.
    """

    __slots__ = ("caller", "ends_call", "readonly_text", "request_id", "seq", "text")

    def __init__(
        self,
        text: str,
        ends_call: bool,
        seq: int,
        caller: Caller | None,
        request_id: Any,
        readonly_text: str | None = None,
    ) -> None:
        self.text = text
        self.ends_call = ends_call
        self.seq = seq
        self.caller = caller
        self.request_id = request_id
        self.readonly_text = readonly_text


class _Close:
    """Queued after the last message to send: close with this code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class Connection:
    """One WebSocket client: its login, options, subscriptions and calls."""

    def __init__(
        self,
        server: WebSocketServer,
        ws: web.WebSocketResponse,
        *,
        caller: Caller | None,
        transport: str,
        remote: str,
        channel_binding: bytes | None,
        stream: asyncio.Transport | None = None,
    ) -> None:
        self.server = server
        self.ws = ws
        self.stream = stream
        self.caller = caller
        self.transport = transport
        self.remote = remote
        self.channel_binding = channel_binding
        self.id = uuid.uuid4().hex[:8]
        self.legacy_jobs = False
        self.in_flight = 0
        self.subscriptions: dict[str, str] = {}
        self.collections: Counter[str] = Counter()
        self.job_requests: dict[int, Any] = {}
        self.announced: set[int] = set()
        self.sessions: dict[type[Service], Service] = {
            CoreSession: CoreSession(self),
            AuthSession: AuthSession(self),
        }
        self._outbox: asyncio.Queue[_Frame | _Close | None] = asyncio.Queue()
        self._queued_bytes = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._relays: dict[str, asyncio.Task[None]] = {}
        self._aborting = False
        # Frames are numbered as queued. A key found standing covers every
        # frame queued before the look-up began, so a burst of events costs
        # one look-up: key row id -> highest frame number covered.
        self._seq = 0
        self._verified: dict[int, int] = {}
        self._revoked: set[int] = set()

    # Login state, used by the auth methods.

    def login(self, caller: Caller, mechanism: str) -> None:
        self.caller = caller
        log.info(
            "login_succeeded",
            caller=caller.name,
            mechanism=mechanism,
            connection=self.id,
            remote=self.remote,
        )

    def logout(self) -> None:
        if self.caller is not None:
            log.info("logged_out", caller=self.caller.name, connection=self.id)
        self.caller = None
        # Events go to logged-in connections only.
        for sub_id in list(self.subscriptions):
            name = self.subscriptions[sub_id]
            self.unsubscribe(sub_id)
            self._notify(
                "notify_unsubscribed",
                {"collection": name, "error": not_authenticated()["data"]},
            )

    # The key behind the login.

    async def current(self, caller: Caller) -> Caller:
        """``caller`` as its API key stands now, or a refusal if it is revoked.

        Raises:
            WireError: the key is revoked; the connection is logged out.
        """
        key = caller.key
        if key is None:
            return caller
        if key in self._revoked:
            raise WireError(key_revoked())
        upto = self._seq
        current = await self.server.daemon.api_keys.current(caller)
        if current is None:
            self.end_login(caller)
            raise WireError(key_revoked())
        self._verified[key] = max(self._verified.get(key, 0), upto)
        if current != caller and self.caller is caller:
            self.caller = current
            log.warning(
                "login_made_readonly",
                caller=caller.name,
                connection=self.id,
                remote=self.remote,
            )
        return current

    async def _refusal(self, frame: _Frame) -> dict[str, Any] | None:
        """None if the key ``frame`` is for still stands, else the error to send.

        One look-up covers a burst of frames.
        """
        caller = frame.caller
        assert caller is not None and caller.key is not None
        if caller.key in self._revoked:
            return key_revoked()
        if self._verified.get(caller.key, 0) >= frame.seq:
            return None
        try:
            await self.current(caller)
        except WireError as refused:
            return refused.error
        except Exception as exc:
            # Unsure whether the key stands, the writer sends nothing of the
            # login's, but keeps writing the rest.
            if not isinstance(exc, CertdError):
                log.exception("login_check_failed", connection=self.id)
            return call_error(exc)
        return None

    def end_login(self, caller: Caller) -> None:
        """Forget a revoked key; log out if the connection is logged in with it."""
        assert caller.key is not None
        self._revoked.add(caller.key)
        if self.caller is not None and self.caller.key == caller.key:
            log.warning(
                "login_ended",
                reason="API key revoked",
                caller=caller.name,
                connection=self.id,
                remote=self.remote,
            )
            self.logout()

    # Subscriptions.

    def subscribe(self, name: str) -> str:
        if name not in self.server.collections():
            raise NotFoundError("event", name)
        sub_id = str(uuid.uuid4())
        self.subscriptions[sub_id] = name
        self.collections[name] += 1
        if self.collections[name] == 1 and name != JOBS:
            self._relays[name] = asyncio.create_task(self._relay(name))
        return sub_id

    def unsubscribe(self, sub_id: str) -> None:
        name = self.subscriptions.pop(sub_id, None)
        if name is None:
            raise NotFoundError("subscription", sub_id)
        self.collections[name] -= 1
        if self.collections[name] <= 0:
            del self.collections[name]
            if relay := self._relays.pop(name, None):
                relay.cancel()

    async def _relay(self, name: str) -> None:
        """Pass events of the event bus on as ``collection_update`` messages."""
        kinds = None if name == EVENTS else [name]
        with self.server.daemon.events.subscribe(kinds) as events:
            async for entry in events:
                self.send_event(name, "added", entry["id"], entry)

    def send_event(
        self,
        collection: str,
        msg: str,
        id: Any,
        fields: Any,
        readonly_fields: Any = None,
    ) -> None:
        """Queue an event; ``readonly_fields`` if a read-only login sees other ones."""
        # Written only if the login's key still stands by then.
        params = {"msg": msg, "collection": collection, "id": id, "fields": fields}
        readonly = None
        if readonly_fields is not None:
            readonly = {**params, "fields": readonly_fields}
        self._notify("collection_update", params, self.caller, readonly)

    def _readonly_fields(self, job: Job, fields: dict[str, Any]) -> Any:
        """A job event's fields for a read-only login; None if they are the same."""
        result = fields["result"]
        shown = self.server.daemon.registry.readonly_result(job.method, result)
        return None if shown is result else {**fields, "result": shown}

    def job_changed(self, job: Job) -> None:
        """Report a job's change to this connection, if it follows jobs."""
        finished = job.state in FINISHED
        if self.caller is None or JOBS not in self.collections:
            if finished:
                self.job_requests.pop(job.id, None)
                self.announced.discard(job.id)
            return
        message_ids = [self.job_requests[job.id]] if job.id in self.job_requests else []
        fields = job_fields(job, message_ids)
        # Every caller's jobs are reported, and a deployment's result holds
        # what a read-only key may not see (hook arguments and output): the
        # writer picks the fields for the login as it stands then.
        readonly_fields = self._readonly_fields(job, fields)
        if job.id not in self.announced:
            self.announced.add(job.id)
            self.send_event(JOBS, "added", job.id, fields, readonly_fields)
            if not finished:
                return
        # Only a "changed" event with a final state ends the client's wait,
        # so a job seen first when it is already over is announced twice.
        self.send_event(JOBS, "changed", job.id, fields, readonly_fields)
        if finished:
            self.job_requests.pop(job.id, None)
            self.announced.discard(job.id)

    # Sending.

    def _notify(
        self,
        method: str,
        params: dict[str, Any],
        caller: Caller | None = None,
        readonly_params: dict[str, Any] | None = None,
    ) -> None:
        readonly = None
        if readonly_params is not None:
            readonly = {"jsonrpc": "2.0", "method": method, "params": readonly_params}
        self._send(
            {"jsonrpc": "2.0", "method": method, "params": params},
            caller=caller,
            readonly_message=readonly,
        )

    def _send(
        self,
        message: dict[str, Any],
        ends_call: bool = False,
        *,
        caller: Caller | None = None,
        request_id: Any = _NO_CALL,
        readonly_message: dict[str, Any] | None = None,
    ) -> None:
        if self._aborting:
            return
        # ejson writes ASCII only, so characters are bytes.
        text = ejson.dumps(message)
        # Not counted in the queue's bytes: no larger than text, and only
        # for the few events that differ (a deployment job's end).
        readonly_text = None
        if readonly_message is not None:
            readonly_text = ejson.dumps(readonly_message)
        queued = self._queued_bytes + len(text)
        if (
            self._outbox.qsize() >= self.server.max_queued_messages
            or queued > self.server.max_queued_bytes
        ):
            self._aborting = True
            log.warning(
                "websocket_reader_too_slow",
                connection=self.id,
                remote=self.remote,
                queued_messages=self._outbox.qsize(),
                queued_bytes=queued,
            )
            self._discard_outbox()
            self._spawn(self._abort(1008, "too many unread messages"))
            return
        self._queued_bytes = queued
        self._seq += 1
        if caller is not None and caller.key is None:
            caller = None
        self._outbox.put_nowait(
            _Frame(text, ends_call, self._seq, caller, request_id, readonly_text)
        )

    def _discard_outbox(self) -> None:
        """Drop what a client cut off will never read, to free its memory now."""
        while not self._outbox.empty():
            self._outbox.get_nowait()
        self._queued_bytes = 0

    def send_result(
        self,
        request_id: Any,
        result: Any,
        ends_call: bool = False,
        caller: Caller | None = None,
    ) -> None:
        """Answer a call; with ``caller``, only if its API key still stands then."""
        try:
            self._send(
                {"jsonrpc": "2.0", "result": result, "id": request_id},
                ends_call,
                caller=caller,
                request_id=request_id,
            )
        except (TypeError, ValueError):
            log.exception("websocket_result_not_encodable", connection=self.id)
            self.send_error(
                request_id,
                simple_error(INTERNAL_ERROR, "the result could not be encoded as JSON"),
                ends_call,
                caller,
            )

    def send_error(
        self,
        request_id: Any,
        error: dict[str, Any],
        ends_call: bool = False,
        caller: Caller | None = None,
    ) -> None:
        self._send(
            {"jsonrpc": "2.0", "error": error, "id": request_id},
            ends_call,
            caller=caller,
            request_id=request_id,
        )

    async def _abort(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(
                self.ws.close(code=code, message=reason.encode()), ABORT_SECONDS
            )
        except TimeoutError:
            # The client reads nothing, not even the close frame: a graceful
            # close would wait for it forever, with the unsent data held.
            if self.stream is not None:
                self.stream.abort()

    def close(self, code: int, reason: str) -> None:
        """Close after the messages already queued are sent."""
        self._outbox.put_nowait(_Close(code, reason))

    async def _write(self) -> None:
        while True:
            item = await self._outbox.get()
            if item is None:
                return
            if isinstance(item, _Close):
                await self.ws.close(code=item.code, message=item.reason.encode())
                return
            text: str | None = item.text
            error = None if item.caller is None else await self._refusal(item)
            if item.readonly_text is not None and self.caller and self.caller.readonly:
                # Read-only as it is written, which a key may have become
                # since the message was queued.
                text = item.readonly_text
            if error is not None:
                # Nothing reaches a client after its key is found revoked: an
                # event is dropped, an answer becomes the refusal.
                text = None
                if item.request_id is not _NO_CALL:
                    if error == key_revoked():
                        error = key_revoked(withheld=True)
                    text = ejson.dumps(
                        {"jsonrpc": "2.0", "error": error, "id": item.request_id}
                    )
            try:
                if text is not None:
                    await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return
            finally:
                self._queued_bytes = max(0, self._queued_bytes - len(item.text))
                if item.ends_call:
                    self.in_flight -= 1

    # Receiving.

    async def serve(self) -> None:
        """Read requests until the client goes away."""
        writer = asyncio.create_task(self._write())
        log.info(
            "websocket_connected",
            connection=self.id,
            transport=self.transport,
            remote=self.remote,
            caller=self.caller.name if self.caller else None,
        )
        try:
            async for message in self.ws:
                if message.type == WSMsgType.TEXT:
                    self._receive(message.data)
                elif message.type == WSMsgType.BINARY:
                    self.send_error(
                        None,
                        simple_error(
                            INVALID_REQUEST,
                            "Binary messages are not accepted: send JSON text",
                        ),
                    )
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            for task in [*self._tasks, *self._relays.values()]:
                task.cancel()
            self._outbox.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(writer, 5)
            log.info("websocket_closed", connection=self.id, code=self.ws.close_code)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _receive(self, text: str) -> None:
        size = len(text.encode())
        oversized = False
        try:
            request = ejson.loads(text)
        except ejson.IntegerOutOfRange as refused:
            # Answered once the id is known, if the id itself was in range.
            request, oversized = refused.document, True
        except (ValueError, RecursionError):
            self.send_error(
                None, simple_error(INVALID_JSON, "Parse error: not valid JSON")
            )
            return
        if ejson.has_lone_surrogate(text, request):
            # As over HTTP: refused whole, and the id may be the string at fault.
            reason = f"Invalid request: {ejson.LONE_SURROGATE_REASON}"
            self.send_error(None, simple_error(INVALID_REQUEST, reason))
            return
        if not isinstance(request, dict):
            reason = (
                "Batches are not accepted: send one request per message"
                if isinstance(request, list)
                else "A request must be a JSON object"
            )
            self.send_error(None, simple_error(INVALID_REQUEST, reason))
            return
        if "id" not in request:
            # A notification: JSON-RPC forbids an answer, and no method of
            # certd is worth calling without seeing its outcome.
            log.debug("notification_ignored", connection=self.id)
            return
        request_id = request["id"]
        if request_id is not None and (
            isinstance(request_id, bool) or not isinstance(request_id, str | int)
        ):
            self.send_error(
                None, simple_error(INVALID_REQUEST, "id must be a string or a number")
            )
            return
        if oversized:
            self.send_error(
                request_id,
                simple_error(INVALID_REQUEST, f"Invalid request: {ejson.INT64_REASON}"),
            )
            return
        problem = self._check(request, size)
        if problem is not None:
            self.send_error(request_id, problem)
            return
        try:
            params = ejson.decode_params(request.get("params"))
        except ValidationError as exc:
            self.send_error(request_id, call_error(exc))
            return
        except RecursionError:
            self.send_error(
                request_id, simple_error(INVALID_JSON, "Parse error: nested too deep")
            )
            return
        self.in_flight += 1
        self._spawn(self._call(request_id, request["method"], params))

    def _check(self, request: dict[str, Any], size: int) -> dict[str, Any] | None:
        limit = self.server.max_message_bytes
        if size > limit:
            return simple_error(
                INVALID_REQUEST,
                f"Request too large: {size} bytes, and a request may have at most "
                f"{limit} bytes",
            )
        if request.get("jsonrpc") != "2.0":
            return simple_error(INVALID_REQUEST, "jsonrpc must be '2.0'")
        method = request.get("method")
        if not isinstance(method, str) or not method:
            return simple_error(INVALID_REQUEST, "method must be a non-empty string")
        if not isinstance(request.get("params", []), list | dict):
            return simple_error(INVALID_REQUEST, "params must be an array")
        allowed = self.server.max_calls_in_flight
        if self.in_flight >= allowed:
            return simple_error(
                TOO_MANY_CONCURRENT_CALLS,
                f"Maximum number of concurrent calls ({allowed}) has been reached "
                "on this connection: wait for an answer before sending more",
            )
        return None

    async def _call(self, request_id: Any, method: str, params: Any) -> None:
        # A call holds its place among those in flight until its answer is
        # written, so a client that does not read cannot pile answers up; a
        # job call gives it back once the job is submitted, as its answer
        # waits for the job.
        login: Caller | None = None
        try:
            spec, login = await self._authorize(method)
            outcome = await self._execute(request_id, spec, login, params)
        except WireError as refused:
            self.send_error(request_id, refused.error, ends_call=True, caller=login)
            return
        except Exception as exc:
            if not isinstance(exc, CertdError):
                # Only the method's name: params may hold secrets.
                log.exception(
                    "websocket_call_crashed", method=method, connection=self.id
                )
            self.send_error(request_id, call_error(exc), ends_call=True, caller=login)
            return
        if not isinstance(outcome, Job):
            self.send_result(request_id, outcome, ends_call=True, caller=login)
        elif self.legacy_jobs:
            self.send_result(request_id, outcome.id, ends_call=True, caller=login)
        else:
            self.in_flight -= 1
            await outcome.done.wait()
            if outcome.state == JobState.SUCCESS:
                self.send_result(request_id, outcome.result, caller=login)
            else:
                self.send_error(request_id, job_error(outcome), caller=login)

    async def _authorize(self, method: str) -> tuple[MethodSpec, Caller | None]:
        """The method called and the login it runs under (None if open to anyone).

        Raises:
            WireError: no such method, no login, or the login's key is revoked.
            AuthenticationError: a read-only login calls a method that writes.
        """
        spec = SESSION_METHODS.get(method) or self.server.daemon.registry.methods.get(
            method
        )
        if spec is None:
            raise WireError(method_not_found())
        if spec.options.anonymous:
            return spec, None
        if self.caller is None:
            raise WireError(not_authenticated())
        login = await self.current(self.caller)
        if login.readonly and not spec.options.readonly:
            raise AuthenticationError(spec.options.read_only_refusal(spec.name))
        return spec, login

    async def _execute(
        self, request_id: Any, spec: MethodSpec, login: Caller | None, params: Any
    ) -> Any:
        """The result of a call, or the job it started."""
        if SESSION_METHODS.get(spec.name) is spec:
            return await self._session_call(spec, params)
        started: list[Job] = []

        def follow(job: Job) -> None:
            # Runs before the job's first step, so its first event names the call.
            self.job_requests[job.id] = request_id
            started.append(job)

        # A method open to anyone still learns who is logged in, if anyone.
        caller = login or self.caller
        ctx = CallContext(caller=caller, transport=self.transport, on_job=follow)
        try:
            result = await self.server.daemon.dispatcher.run(spec, ctx, params)
        except CertdError:
            raise
        except Exception as exc:
            # The dispatcher has logged this crash with its traceback already.
            raise WireError(call_error(exc)) from None
        return started[0] if started else result

    async def _session_call(self, spec: MethodSpec, params: Any) -> Any:
        kwargs = spec.bind(params)
        owner = self.sessions[type(spec.func.__self__)]  # type: ignore[attr-defined]
        return spec.dump_result(await getattr(owner, spec.func.__name__)(**kwargs))


class WebSocketServer:
    """Accepts WebSocket connections and fans job and certificate events out."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.connections: set[Connection] = set()
        self.max_message_bytes = daemon.config.server.max_request_bytes
        self.max_calls_in_flight = MAX_CALLS_IN_FLIGHT
        self.max_queued_messages = MAX_QUEUED_MESSAGES
        self.max_queued_bytes = MAX_QUEUED_BYTES
        self.refusals = RefusalLog()
        # (serial, tls-server-end-point data) of the certificate last served.
        self._served: tuple[int, bytes | None] | None = None
        self._stop_listening = daemon.jobs.add_listener(self._job_changed)

    def collections(self) -> set[str]:
        """The names ``core.subscribe`` accepts."""
        names = {JOBS}
        events = getattr(self.daemon, "events", None)
        if events is not None:
            from certd.deploy.events import KINDS

            names |= {EVENTS, *KINDS}
        return names

    async def channel_binding(self, context: ssl.SSLContext | None) -> bytes | None:
        """RFC 5929 tls-server-end-point data of the certificate a listener serves.

        certd's TLS listener serves the stored certificate ``server.tls_certificate``
        names, as it was at the last (re)load. None when the connection is not
        TLS, or the store holds a newer certificate that is not served yet.
        """
        tls = getattr(self.daemon, "tls", None)
        if context is None or tls is None or context is not tls.context:
            return None
        if self._served is not None and self._served[0] == tls.serial:
            return self._served[1]
        async with self.daemon.db.session() as session:
            pem = await session.scalar(
                select(Certificate.certificate).where(Certificate.name == tls.name)
            )
        if not pem:
            return None
        leaf = x509.load_pem_x509_certificate(pem.encode())
        if leaf.serial_number != tls.serial:
            return None
        try:
            binding = tls_server_end_point(leaf.public_bytes(Encoding.DER))
        except AuthenticationError as exc:
            log.warning("channel_binding_unavailable", reason=exc.message)
            binding = None
        self._served = (leaf.serial_number, binding)
        return binding

    def _job_changed(self, job: Job) -> None:
        for connection in list(self.connections):
            connection.job_changed(job)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/current``: upgrade and serve one connection."""
        ws = web.WebSocketResponse(
            max_msg_size=2 * self.max_message_bytes, heartbeat=HEARTBEAT_SECONDS
        )
        if not ws.can_prepare(request).ok:
            return web.Response(
                status=400, text="This endpoint speaks WebSocket only.\n"
            )
        await ws.prepare(request)
        caller, transport, remote = self._peer(request)
        context = (
            request.transport.get_extra_info("sslcontext")
            if request.transport
            else None
        )
        connection = Connection(
            self,
            ws,
            caller=caller,
            transport=transport,
            remote=remote,
            channel_binding=await self.channel_binding(context),
            stream=request.transport,
        )
        self.connections.add(connection)
        try:
            await connection.serve()
        finally:
            self.connections.discard(connection)
        return ws

    def _peer(self, request: web.Request) -> tuple[Caller | None, str, str]:
        """(caller trusted by its peer credentials, transport, address for limits)."""
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport else None
        if sock is None or sock.family != socket.AF_UNIX:
            return None, "websocket", request.remote or "unknown"
        _, uid, _ = peer_credentials(sock)
        caller = unix_caller(sock, self.daemon.config.server.socket_group)
        return caller, "websocket+unix", f"unix:uid={uid}"

    async def shutdown(self, app: web.Application) -> None:
        """Close every connection, after what is queued for it, with 1001."""
        self._stop_listening()
        for connection in list(self.connections):
            connection.close(1001, "certd is stopping")


WEBSOCKET = web.AppKey("websocket", WebSocketServer)


def add_routes(app: web.Application, daemon: Daemon) -> WebSocketServer:
    """Serve the WebSocket API on ``app`` at :data:`PATH`."""
    server = WebSocketServer(daemon)
    app[WEBSOCKET] = server
    app.router.add_get(PATH, server.handle)
    app.on_shutdown.append(server.shutdown)
    return server
