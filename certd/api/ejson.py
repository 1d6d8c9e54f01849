"""The extended JSON of the NAS middleware's WebSocket API.

Plain JSON, plus a few one-key objects that stand for values JSON lacks:
``{"$date": <ms since the epoch, UTC>}``, ``{"$time": "HH:MM:SS"}``,
``{"$set": [...]}``, ``{"$ipv4_interface": "a/n"}``, ``{"$ipv6_interface":
"a/n"}`` and ``{"$type": "date", "$value": "YYYY-MM-DD"}``. The client decodes
these wherever they appear, so certd sends them for such values and reads them
in parameters.

Parsing is shared with the HTTP face: :func:`loads` refuses integers the store
cannot keep, on both.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, date, datetime, time, timedelta
from ipaddress import IPv4Interface, IPv6Interface
from typing import Any

from certd.errors import ValidationError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The store keeps 64-bit integers: a larger one anywhere in a request would
# fail deep inside a query, so it is refused as the request is parsed.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT64_REASON = "integers must lie between -2^63 and 2^63-1"
_LONG_DIGITS = re.compile(r"\d{19}")
# Deeper parameters are refused before they can exhaust the interpreter's
# stack in decoding or validation; no method takes more than a few levels.
MAX_DEPTH = 64


class IntegerOutOfRange(Exception):
    """A JSON text holds an integer beyond 64 bits.

    ``document`` is the text parsed with each such integer replaced by None,
    so the request's id can still be answered.
    """

    def __init__(self, document: Any) -> None:
        super().__init__(INT64_REASON)
        self.document = document


def _not_json(literal: str) -> Any:
    raise ValueError(f"{literal} is not a JSON value")


def _finite(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise ValueError("a number is too large to be represented")
    return value


def strict_loads(text: str, **hooks: Any) -> Any:
    """Parse JSON as RFC 8259 has it: NaN, Infinity and 1e400 are refused.

    Python's parser takes them, and its encoder writes them back (as a
    request's id, say) in a form no strict JSON client can read.

    Raises:
        ValueError: the text is not JSON.
        RecursionError: the text nests too deep for the parser.
    """
    if not hooks:
        return _STRICT.decode(text)
    return json.loads(text, parse_constant=_not_json, parse_float=_finite, **hooks)


# RFC 8259 8.2: "\ud800" without its pair is grammatical JSON, but no Unicode
# character: the store cannot encode it as UTF-8 and a strict client cannot
# decode it echoed back (as an id, say). An escaped pair decodes to one
# character and passes.
LONE_SURROGATE_REASON = "a string holds a lone UTF-16 surrogate (RFC 8259 8.2)"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def has_lone_surrogate(text: str, document: Any) -> bool:
    """Whether ``document``, parsed from ``text``, holds a lone surrogate anywhere.

    Only a text with an escape that may be a surrogate is walked, so an
    ordinary request costs one scan of its text.
    """
    if not text.isascii() and _SURROGATE.search(text):
        return True  # a raw one, as only text decoded with surrogateescape holds
    if not _SURROGATE_ESCAPE.search(text):
        return False
    # Walked without recursion: the parser's depth limit is the only one.
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return True
        elif isinstance(value, dict):
            pending.extend(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


# Built once: json.loads builds a decoder on every call that passes hooks.
_STRICT = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)


def loads(text: str) -> Any:
    """Parse JSON (strictly, see :func:`strict_loads`) whose integers fit in 64 bits.

    Raises:
        IntegerOutOfRange: an integer lies beyond 64 bits.
        ValueError: the text is not JSON.
        RecursionError: the text nests too deep for the parser.
    """
    if not _LONG_DIGITS.search(text):
        return strict_loads(text)
    oversized = False

    def bounded(literal: str) -> int | None:
        nonlocal oversized
        # Checked before conversion: Python refuses to convert very long digit
        # strings at all, with an error json.loads does not expect.
        if len(literal.lstrip("-")) <= 19:
            value = int(literal)
            if INT64_MIN <= value <= INT64_MAX:
                return value
        oversized = True
        return None

    document = strict_loads(text, parse_int=bounded)
    if oversized:
        raise IntegerOutOfRange(document)
    return document


def has_oversized_integer(text: str) -> bool:
    """Whether ``text`` is JSON with an integer beyond 64 bits."""
    try:
        loads(text)
    except IntegerOutOfRange:
        return True
    except (ValueError, RecursionError):
        pass  # not JSON: the caller answers with a parse error
    return False


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return {"$date": (value - _EPOCH) // timedelta(milliseconds=1)}
    if isinstance(value, date):
        return {"$type": "date", "$value": value.isoformat()}
    if isinstance(value, time):
        return {"$time": value.isoformat()}
    if isinstance(value, set | frozenset):
        return {"$set": list(value)}
    if isinstance(value, IPv4Interface):
        return {"$ipv4_interface": str(value)}
    if isinstance(value, IPv6Interface):
        return {"$ipv6_interface": str(value)}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> str:
    """Encode ``value``, with dates, times, sets and interfaces in their $ forms."""
    return json.dumps(value, default=_default, separators=(",", ":"))


def _decode_one(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        key, value = next(iter(obj.items()))
        if key == "$date":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError("must be milliseconds since the epoch")
            try:
                return _EPOCH + timedelta(milliseconds=value)
            except OverflowError:
                raise ValueError("must fall within the years 1 to 9999") from None
        if key == "$time":
            return time.fromisoformat(value)
        if key == "$set":
            if not isinstance(value, list):
                raise ValueError("must be a list")
            return set(value)
        if key == "$ipv4_interface":
            return IPv4Interface(value)
        if key == "$ipv6_interface":
            return IPv6Interface(value)
    if len(obj) == 2 and obj.get("$type") == "date" and "$value" in obj:
        return date.fromisoformat(obj["$value"])
    return obj


def decode(value: Any, where: str = "params", depth: int = 0) -> Any:
    """Turn the $ forms in already parsed JSON into Python values.

    Raises:
        ValidationError: a $ form holds a malformed value, or the value nests
            deeper than :data:`MAX_DEPTH`; the field names where.
    """
    if isinstance(value, list | dict) and depth >= MAX_DEPTH:
        raise ValidationError.single(
            where, f"nests deeper than {MAX_DEPTH} levels of arrays and objects"
        )
    if isinstance(value, list):
        return [decode(item, f"{where}.{i}", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, dict):
        decoded = {k: decode(v, f"{where}.{k}", depth + 1) for k, v in value.items()}
        try:
            return _decode_one(decoded)
        except (TypeError, ValueError) as exc:
            raise ValidationError.single(
                where, f"malformed {next(iter(value))}: {exc}"
            ) from None
    return value


def decode_params(params: Any) -> list[Any] | dict[str, Any]:
    """A request's params decoded: positional or named, never a lone $ form.

    Raises:
        ValidationError: a malformed $ form, too deep a nesting, or params that
            decode to a single value rather than an array or an object.
    """
    decoded = decode(params if params is not None else [])
    if not isinstance(decoded, list | dict):
        raise ValidationError.single(
            "params", "must be an array or an object, not an extended JSON value"
        )
    return decoded
