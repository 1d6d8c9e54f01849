"""The extended JSON of the NAS middleware's WebSocket API.

Plain JSON, plus a few one-key objects that stand for values JSON lacks:
``{"$date": <ms since the epoch, UTC>}``, ``{"$time": "HH:MM:SS"}``,
``{"$set": [...]}``, ``{"$ipv4_interface": "a/n"}``, ``{"$ipv6_interface":
"a/n"}`` and ``{"$type": "date", "$value": "YYYY-MM-DD"}``. The client decodes
these wherever they appear, so certd sends them for such values and reads them
in parameters.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from ipaddress import IPv4Interface, IPv6Interface
from typing import Any

from certd.errors import ValidationError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
            return _EPOCH + timedelta(milliseconds=value)
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


def decode(value: Any, where: str = "params") -> Any:
    """Turn the $ forms in already parsed JSON into Python values.

    Raises:
        ValidationError: a $ form holds a malformed value; the field names it.
    """
    if isinstance(value, list):
        return [decode(item, f"{where}.{i}") for i, item in enumerate(value)]
    if isinstance(value, dict):
        decoded = {k: decode(v, f"{where}.{k}") for k, v in value.items()}
        try:
            return _decode_one(decoded)
        except (TypeError, ValueError) as exc:
            raise ValidationError.single(
                where, f"malformed {next(iter(value))}: {exc}"
            ) from None
    return value
