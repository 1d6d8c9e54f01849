"""Hypothesis strategies from the JSON schemas of ``rpc.discover``, and hostile JSON.

hypothesis-jsonschema would do the first part, but it does not run on the
Hypothesis this project uses; the subset of JSON Schema that pydantic emits
is small enough to cover here.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from hypothesis import strategies as st

MAX_DEPTH = 14

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)


def any_json(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"n": value}
    return value


# Values a careless parser or store trips over.
odd_values = st.sampled_from(
    [
        "",
        "\x00",
        "\ud800",  # a lone surrogate: valid JSON, not encodable as UTF-8
        "\u202e\u200b\ufeff",
        "é" * 2000,
        "x" * 200_000,
        "-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----",
        "../../../../etc/passwd",
        "${jndi:ldap://127.0.0.1/a}",
        2**70,
        -(2**63) - 1,
        -0.0,
        1e308,
        [],
        {},
        nested(200),
        nested(900),
        list(range(10_000)),
        {str(i): i for i in range(2000)},
    ]
)

hostile = st.one_of(any_json(), odd_values)


def _string(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    if schema.get("format") == "date-time":
        return st.datetimes(timezones=st.just(dt.UTC)).map(lambda d: d.isoformat())
    low = schema.get("minLength", 0)
    high = schema.get("maxLength", low + 30)
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
            return st.from_regex(schema["pattern"], fullmatch=True).filter(
                lambda s: low <= len(s) <= high
            )
        except re.error:
            pass
    return st.text(min_size=low, max_size=min(high, low + 60))


def _number(schema: dict[str, Any], integer: bool) -> st.SearchStrategy[Any]:
    low = schema.get("minimum")
    high = schema.get("maximum")
    if "exclusiveMinimum" in schema:
        low = schema["exclusiveMinimum"] + (1 if integer else 1e-6)
    if "exclusiveMaximum" in schema:
        high = schema["exclusiveMaximum"] - (1 if integer else 1e-6)
    if integer:
        return st.integers(
            min_value=None if low is None else int(low),
            max_value=None if high is None else int(high),
        )
    return st.floats(
        min_value=low, max_value=high, allow_nan=False, allow_infinity=False
    )


def _object(
    schema: dict[str, Any], defs: dict[str, Any], depth: int
) -> st.SearchStrategy[Any]:
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    fixed = st.fixed_dictionaries(
        {
            k: from_schema(v, defs, depth + 1)
            for k, v in properties.items()
            if k in required
        },
        optional={
            k: from_schema(v, defs, depth + 1)
            for k, v in properties.items()
            if k not in required
        },
    )
    extra = schema.get("additionalProperties", not properties)
    if extra is False or not extra:
        return fixed
    keys: st.SearchStrategy[Any] = st.text(max_size=12)
    if "propertyNames" in schema:
        named = from_schema(schema["propertyNames"], defs, depth + 1)
        keys = named.filter(lambda key: isinstance(key, str)) | keys
    values = any_json() if extra is True else from_schema(extra, defs, depth + 1)
    return st.tuples(fixed, st.dictionaries(keys, values, max_size=4)).map(
        lambda pair: {**pair[1], **pair[0]}
    )


def from_schema(
    schema: dict[str, Any] | bool, defs: dict[str, Any], depth: int = 0
) -> st.SearchStrategy[Any]:
    """Values that (mostly) satisfy ``schema``; deep recursion falls back to any JSON."""
    if schema is True or schema == {} or depth > MAX_DEPTH:
        return any_json()
    if schema is False:
        return st.nothing()
    assert isinstance(schema, dict)
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return st.deferred(lambda: from_schema(defs[name], defs, depth + 1))
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(s, defs, depth + 1) for s in schema[key]])
    if "allOf" in schema:
        return from_schema(schema["allOf"][0], defs, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of(
            [from_schema({**schema, "type": k}, defs, depth) for k in kind]
        )
    if kind == "string":
        return _string(schema)
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        items = schema.get("items", True)
        low = schema.get("minItems", 0)
        return st.lists(
            from_schema(items, defs, depth + 1),
            min_size=low,
            max_size=max(low, min(schema.get("maxItems", 4), 4)),
        )
    if kind == "object" or "properties" in schema:
        return _object(schema, defs, depth)
    return any_json()


def method_params(method: dict[str, Any]) -> st.SearchStrategy[Any]:
    """``params`` for one OpenRPC method: valid, nearly valid, and hostile."""
    defs: dict[str, Any] = {}
    properties = {}
    required = []
    for param in method["params"]:
        schema = dict(param["schema"])
        defs.update(schema.pop("$defs", {}))
        properties[param["name"]] = schema
        if param["required"]:
            required.append(param["name"])
    names = [p["name"] for p in method["params"]]
    valid = _object(
        {"properties": properties, "required": required, "additionalProperties": False},
        defs,
        0,
    )

    def positional(named: dict[str, Any]) -> list[Any]:
        values = [named.get(n) for n in names]
        while values and values[-1] is None and names[len(values) - 1] not in named:
            values.pop()
        return values

    def with_unknown(named: dict[str, Any]) -> st.SearchStrategy[Any]:
        return st.tuples(st.text(min_size=1, max_size=10), hostile).map(
            lambda kv: {**named, kv[0]: kv[1]} if kv[0] not in named else named
        )

    def with_hostile_value(named: dict[str, Any]) -> st.SearchStrategy[Any]:
        if not names:
            return st.just(named)
        return st.tuples(st.sampled_from(names), hostile).map(
            lambda kv: {**named, kv[0]: kv[1]}
        )

    def without_required(named: dict[str, Any]) -> st.SearchStrategy[Any]:
        if not required:
            return st.just(named)
        return st.sampled_from(required).map(
            lambda k: {n: v for n, v in named.items() if n != k}
        )

    return st.one_of(
        valid,
        valid.map(positional),
        valid.flatmap(with_unknown),
        valid.flatmap(with_hostile_value),
        valid.flatmap(without_required),
        st.lists(hostile, max_size=len(names) + 2),
        hostile,
    )
