"""JSON-RPC error codes, and the one table from certd's errors to them."""

from __future__ import annotations

from certd.errors import (
    AuthenticationError,
    CertdError,
    ConflictError,
    NotFoundError,
    ValidationError,
)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
CALL_ERROR = -32000
NOT_AUTHENTICATED = -32001
FORBIDDEN = -32002
NOT_FOUND = -32003
CONFLICT = -32004
REQUEST_TOO_LARGE = -32005

ERROR_CODES: list[tuple[type[CertdError], int]] = [
    (ValidationError, INVALID_PARAMS),
    (AuthenticationError, FORBIDDEN),
    (NotFoundError, NOT_FOUND),
    (ConflictError, CONFLICT),
    (CertdError, CALL_ERROR),
]


def code_for(exc: BaseException) -> int:
    """The JSON-RPC code of an error, for direct replies and failed jobs alike."""
    for kind, code in ERROR_CODES:
        if isinstance(exc, kind):
            return code
    return INTERNAL_ERROR
