"""Errors and jobs in the shapes the NAS middleware's client reads.

The client knows a fixed set of JSON-RPC codes; any other makes it drop the
error and return nothing, so every error leaves here as one of them. Call
errors carry an ``error`` object (errno, its name, the reason, a trace and
extras) whose keys the client indexes without checking, so all are present.
"""

from __future__ import annotations

import errno as _errno
from typing import Any

from certd.api.codes import (  # noqa: F401  (the transports import them from here)
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
)
from certd.api.jobs import FINISHED, Job, JobState, error_details
from certd.errors import CertdError, ValidationError

# The standard codes are certd's own; the middleware numbers the rest itself.
INVALID_JSON = PARSE_ERROR
TOO_MANY_CONCURRENT_CALLS = -32000
CALL_ERROR = -32001

# The middleware's own errno values beyond the C library's.
ENOTAUTHENTICATED = 207
_CUSTOM_ERRNAMES = {ENOTAUTHENTICATED: "ENOTAUTHENTICATED"}


def errname(code: int | None) -> str:
    """The symbolic name of an errno, as the client prints it."""
    if code is None:
        return "EUNKNOWN"
    return _CUSTOM_ERRNAMES.get(code) or _errno.errorcode.get(code, "EUNKNOWN")


def _data(
    code: int,
    reason: str,
    extra: list[list[Any]] | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "error": code,
        "errname": errname(code),
        "reason": reason,
        # Tracebacks stay in the daemon's log; the client prints this when set.
        "trace": None,
        "extra": extra,
    }
    if details is not None:
        data["details"] = details
    return data


def _validation_extra(errors: list[dict[str, Any]]) -> list[list[Any]]:
    return [[e["field"], e["message"], e["errno"]] for e in errors]


def _validation_reason(extra: list[list[Any]]) -> str:
    return "\n".join(
        f"[{errname(n)}] {field or 'ALL'}: {msg}" for field, msg, n in extra
    )


class WireError(Exception):
    """A call answered with a ready-made error object."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.error = error


def simple_error(code: int, message: str) -> dict[str, Any]:
    """An error the client turns into an exception with ``message`` as its text."""
    return {"code": code, "message": message}


def method_not_found() -> dict[str, Any]:
    # The client matches this exact text to detect a method a server lacks.
    return simple_error(METHOD_NOT_FOUND, "Method does not exist")


def not_authenticated() -> dict[str, Any]:
    """The error for a call that needs a login; the client expects errno 207."""
    return {
        "code": CALL_ERROR,
        "message": "Method call error",
        "data": _data(ENOTAUTHENTICATED, "Not authenticated"),
    }


def refusal(code: int, reason: str) -> dict[str, Any]:
    """A call error with an errno and a reason, for refusals without an exception."""
    return {
        "code": CALL_ERROR,
        "message": "Method call error",
        "data": _data(code, reason),
    }


def call_error(exc: BaseException) -> dict[str, Any]:
    """An error object for an exception raised by a call."""
    details = error_details(exc)
    if isinstance(exc, ValidationError):
        extra = _validation_extra(details["errors"])
        return {
            "code": INVALID_PARAMS,
            "message": "Invalid params",
            "data": _data(exc.errno, _validation_reason(extra), extra, details),
        }
    if isinstance(exc, CertdError):
        reason = exc.message
    else:
        reason = "internal error; see the daemon log"
    return {
        "code": CALL_ERROR,
        "message": "Method call error",
        "data": _data(details["errno"], reason, None, details),
    }


def job_error(job: Job) -> dict[str, Any]:
    """The error object answering the call that started a failed or aborted job."""
    details = job.error_data or {"type": "InternalError", "errno": _errno.EFAULT}
    reason = job.error or f"job {job.id} ended {job.state.value}"
    if "errors" in details:
        extra = _validation_extra(details["errors"])
        return {
            "code": INVALID_PARAMS,
            "message": "Invalid params",
            "data": _data(_errno.EINVAL, _validation_reason(extra), extra, details),
        }
    code = details.get("errno") or _errno.EFAULT
    return {
        "code": CALL_ERROR,
        "message": "Method call error",
        "data": _data(code, reason, None, details),
    }


def job_fields(job: Job, message_ids: list[Any]) -> dict[str, Any]:
    """A job as a ``core.get_jobs`` event carries it.

    ``message_ids`` are the request ids of this connection's calls that started
    the job; the client completes those calls with the job's id.
    """
    exception = exc_info = None
    if job.state in FINISHED and job.state != JobState.SUCCESS:
        details = job.error_data or {"type": "InternalError", "errno": _errno.EFAULT}
        kind = str(details.get("type", "Error"))
        message = job.error or job.state.value
        extra = None
        if "errors" in details:
            kind = "VALIDATION"
            extra = _validation_extra(details["errors"])
        # The client shows this string as the traceback; one line is enough.
        exception = f"{details.get('type', 'Error')}: {message}"
        exc_info = {
            "type": kind,
            "repr": f"{details.get('type', 'Error')}({message!r})",
            "errno": details.get("errno"),
            "extra": extra,
            "details": details,
        }
    return {
        "id": job.id,
        "method": job.method,
        "arguments": job.arguments,
        "message_ids": message_ids,
        "state": job.state.value,
        "progress": {
            "percent": job.percent,
            "description": job.description,
            "extra": None,
        },
        "result": job.result if job.state == JobState.SUCCESS else None,
        "result_encoding_error": None,
        "error": job.error,
        "exception": exception,
        "exc_info": exc_info,
        "description": None,
        "abortable": True,
        "transient": False,
        "logs_path": None,
        "logs_excerpt": None,
        "caller": job.caller,
        "time_created": job.created_at,
        "time_started": job.started_at,
        "time_finished": job.finished_at,
    }
