"""JSON-RPC 2.0 dispatch: one table from certd's errors to JSON-RPC codes.

jsonrpcserver parses requests, handles batches and notifications and shapes
responses; every method is wrapped here so that authentication, parameter
checks, jobs, error mapping and the audit line happen the same way for all.
"""

from __future__ import annotations

import inspect
import json
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import structlog
from jsonrpcserver import Success
from jsonrpcserver.async_main import dispatch_to_serializable
from jsonrpcserver.exceptions import JsonRpcError
from jsonrpcserver.methods import Methods

from certd.api.auth import Caller
from certd.api.codes import (  # noqa: F401  (re-exported for the transports)
    CALL_ERROR,
    CONFLICT,
    ERROR_CODES,
    FORBIDDEN,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    NOT_AUTHENTICATED,
    NOT_FOUND,
    PARSE_ERROR,
    REQUEST_TOO_LARGE,
    code_for,
)
from certd.api.ejson import LONE_SURROGATE_REASON, has_lone_surrogate, strict_loads
from certd.api.jobs import Job, JobManager, error_details
from certd.api.registry import MethodSpec, Registry
from certd.errors import (
    AuthenticationError,
    CertdError,
    ValidationError,
)

log = structlog.get_logger(__name__)

# The caller of the API call being run, for methods whose results depend on
# who asks before they are filtered (see reading_only).
_CALLER: ContextVar[Caller | None] = ContextVar("certd_caller", default=None)


def reading_only() -> bool:
    """Whether the API call being run comes from a read-only API key."""
    caller = _CALLER.get()
    return caller is not None and caller.readonly


def rpc_error(exc: CertdError) -> JsonRpcError:
    code = code_for(exc)
    message = exc.message
    if isinstance(exc, ValidationError):
        message = f"Invalid params: {exc.message}"
    return JsonRpcError(code, message, error_details(exc))


@dataclass
class CallContext:
    """Who called, over what, and the request's id for the logs."""

    caller: Caller | None
    transport: str
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    # Told of a job the call submits before the job first runs, so a transport
    # can follow it from its start.
    on_job: Callable[[Job], None] | None = None


def redact(spec: MethodSpec, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments safe to keep in a job record, with secrets masked.

    ``secret_params`` names a parameter (``data``) or a path into one
    (``data.attributes``); SecretStr values are masked wherever they are.
    """
    out = {name: _plain(value) for name, value in kwargs.items()}
    for path in spec.options.secret_params:
        *parents, leaf = path.split(".")
        holder: Any = out
        for part in parents:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and leaf in holder and holder[leaf] is not None:
            holder[leaf] = "********"
    return out


def _plain(value: Any) -> Any:
    from pydantic import BaseModel, SecretStr

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, SecretStr):
        return "********"
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class Dispatcher:
    """Turns request bodies into response bodies."""

    def __init__(
        self, registry: Registry, jobs: JobManager, max_batch_size: int = 100
    ) -> None:
        self.registry = registry
        self.jobs = jobs
        self.max_batch_size = max_batch_size
        self.methods: Methods = {
            name: self._wrap(spec) for name, spec in registry.methods.items()
        }

    def _wrap(self, spec: MethodSpec) -> Any:
        async def call(ctx: CallContext, *args: Any, **kwargs: Any) -> Any:
            return await self.invoke(spec, ctx, list(args) if args else kwargs or None)

        # jsonrpcserver binds the arguments to the signature on every call;
        # computing it once spares inspect's work per call.
        call.__signature__ = inspect.signature(call)  # type: ignore[attr-defined]
        return call

    async def invoke(
        self,
        spec: MethodSpec,
        ctx: CallContext,
        params: list[Any] | dict[str, Any] | None,
    ) -> Any:
        try:
            result = await self.run(spec, ctx, params)
        except CertdError as exc:
            raise rpc_error(exc) from None
        except JsonRpcError:
            raise
        except Exception:
            raise JsonRpcError(
                INTERNAL_ERROR,
                "Internal error: see the daemon log",
                {"type": "InternalError"},
            ) from None
        return Success(result)

    async def run(
        self,
        spec: MethodSpec,
        ctx: CallContext,
        params: list[Any] | dict[str, Any] | None,
    ) -> Any:
        """Call one method, logged; certd's errors and crashes propagate as raised.

        A job method returns the job's id at once, as over HTTP.
        """
        started = time.monotonic()
        bound = structlog.contextvars.bind_contextvars(
            request_id=ctx.request_id, method=spec.name
        )
        calling = _CALLER.set(ctx.caller)
        try:
            return await self._invoke(spec, ctx, params)
        except CertdError as exc:
            log.info(
                "rpc_failed",
                caller=str(ctx.caller) if ctx.caller else None,
                error=exc.message,
                seconds=round(time.monotonic() - started, 4),
            )
            raise
        except JsonRpcError:
            raise
        except Exception:
            log.exception("rpc_crashed")
            raise
        finally:
            _CALLER.reset(calling)
            structlog.contextvars.reset_contextvars(**bound)

    async def _invoke(
        self,
        spec: MethodSpec,
        ctx: CallContext,
        params: list[Any] | dict[str, Any] | None,
    ) -> Any:
        if not spec.options.anonymous:
            if ctx.caller is None:
                raise JsonRpcError(
                    NOT_AUTHENTICATED,
                    "Not authenticated: send an API key as 'Authorization: Bearer <key>'",
                    {"type": "AuthenticationError", "errno": 13},
                )
            if ctx.caller.readonly and not spec.options.readonly:
                raise AuthenticationError(spec.options.read_only_refusal(spec.name))
        kwargs = spec.bind(params)
        if not spec.options.readonly:
            # The audit trail of mutating calls: who, what, when; never the values.
            log.info("rpc_audit", caller=str(ctx.caller), transport=ctx.transport)
        if spec.options.check:
            await getattr(spec.func.__self__, spec.options.check)(**kwargs)  # type: ignore[attr-defined]
        if spec.options.job:
            job = await self.jobs.submit(
                spec.name,
                redact(spec, kwargs),
                lambda job: spec.func(job, **kwargs),
                caller=str(ctx.caller or ""),
                dump_result=spec.dump_result,
            )
            if ctx.on_job is not None:
                ctx.on_job(job)
            return job.id
        result = spec.dump_result(await spec.func(**kwargs))
        view = spec.options.readonly_view
        if view is not None and ctx.caller is not None and ctx.caller.readonly:
            return view(result)
        return result

    async def handle(self, body: str, ctx: CallContext) -> str:
        """A response body for a request body ('' for notifications only)."""
        try:
            request = strict_loads(body)
        except (ValueError, RecursionError):
            return _error_response(
                PARSE_ERROR, "Parse error: the body is not valid JSON"
            )
        if has_lone_surrogate(body, request):
            # Grammatical JSON, unlike NaN (a parse error), but refused whole:
            # the id may be the very string, so none is echoed.
            return _error_response(
                INVALID_REQUEST, "Invalid request", LONE_SURROGATE_REASON
            )
        if isinstance(request, list) and len(request) > self.max_batch_size:
            return _error_response(
                INVALID_REQUEST,
                "Invalid request",
                f"a batch may hold at most {self.max_batch_size} requests",
            )
        response = await dispatch_to_serializable(
            body,
            self.methods,
            context=ctx,
            deserializer=lambda _: request,
            validator=check_request,
        )
        return "" if response is None else json.dumps(response)


_REQUEST_KEYS = frozenset({"jsonrpc", "method", "id", "params"})


def _check_request(request: Any) -> None:
    if not isinstance(request, dict) or not request.keys() <= _REQUEST_KEYS:
        raise ValueError("not a JSON-RPC request object")
    if request.get("jsonrpc") != "2.0" or not isinstance(request.get("method"), str):
        raise ValueError("jsonrpc must be '2.0' and method a string")
    if "id" in request:
        ident = request["id"]
        if isinstance(ident, bool) or not isinstance(ident, str | int | float | None):
            raise ValueError("id must be a string, a number or null")
    if "params" in request and not isinstance(request["params"], list | dict):
        raise ValueError("params must be an array or an object")


def check_request(request: Any) -> Any:
    """The JSON-RPC 2.0 request schema, checked directly.

    Equivalent to jsonrpcserver's JSON Schema of a request (or a non-empty
    batch of them), which it would otherwise evaluate with jsonschema on every
    call at a cost larger than that of a small method.
    """
    if isinstance(request, list):
        if not request:
            raise ValueError("an empty batch")
        for item in request:
            _check_request(item)
    else:
        _check_request(request)
    return request


def _error_response(code: int, message: str, data: Any = None) -> str:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return json.dumps({"jsonrpc": "2.0", "error": error, "id": None})
