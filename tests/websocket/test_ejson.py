"""Extended JSON: the $ forms the client decodes, both ways."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from ipaddress import IPv4Interface, IPv6Interface

import pytest

from certd.api.ejson import (
    MAX_DEPTH,
    IntegerOutOfRange,
    decode,
    decode_params,
    dumps,
    has_oversized_integer,
    loads,
)
from certd.errors import ValidationError


def test_dumps_writes_the_dollar_forms() -> None:
    value = {
        "when": datetime(2026, 12, 4, 15, 0, 1, 250000, tzinfo=UTC),
        "naive": datetime(1970, 1, 1, 0, 0, 2),
        "day": date(2026, 12, 4),
        "at": time(16, 22, 6),
        "tags": {"a"},
        "v4": IPv4Interface("192.0.2.1/24"),
        "v6": IPv6Interface("2001:db8::1/64"),
    }
    assert json.loads(dumps(value)) == {
        "when": {"$date": 1796396401250},
        "naive": {"$date": 2000},
        "day": {"$type": "date", "$value": "2026-12-04"},
        "at": {"$time": "16:22:06"},
        "tags": {"$set": ["a"]},
        "v4": {"$ipv4_interface": "192.0.2.1/24"},
        "v6": {"$ipv6_interface": "2001:db8::1/64"},
    }


def test_decode_reads_them_back_anywhere_in_params() -> None:
    params = json.loads(
        dumps(
            [
                {"nested": [datetime(2026, 12, 4, 15, 0, 1, 250000, tzinfo=UTC)]},
                date(2026, 12, 4),
                time(16, 22, 6),
                {1, 2},
                IPv4Interface("192.0.2.1/24"),
            ]
        )
    )
    assert decode(params) == [
        {"nested": [datetime(2026, 12, 4, 15, 0, 1, 250000, tzinfo=UTC)]},
        date(2026, 12, 4),
        time(16, 22, 6),
        {1, 2},
        IPv4Interface("192.0.2.1/24"),
    ]
    assert decode({"$date": 0, "other": 1}) == {"$date": 0, "other": 1}


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ([{"$date": "soon"}], "params.0"),
        ([1, {"a": {"$time": "25:00"}}], "params.1.a"),
        ([{"$set": [[1]]}], "params.0"),
        ([{"$type": "date", "$value": "2026-13-01"}], "params.0"),
        ([{"$ipv4_interface": "nope"}], "params.0"),
        ([{"$date": 1e300}], "params.0"),
        ([{"$date": float("inf")}], "params.0"),
        ([{"$date": 10**18}], "params.0"),
    ],
)
def test_decode_names_a_malformed_value(value: object, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        decode(value)
    assert caught.value.errors[0].field == field


def test_loads_keeps_64_bit_integers_and_refuses_larger() -> None:
    edge = f'{{"id": {2**63 - 1}, "params": [{-(2**63)}]}}'
    assert loads(edge) == {"id": 2**63 - 1, "params": [-(2**63)]}
    with pytest.raises(IntegerOutOfRange) as caught:
        loads(f'{{"id": "a", "params": [{2**63}, 1]}}')
    # The rest is still read, so the request can be answered by its id.
    assert caught.value.document == {"id": "a", "params": [None, 1]}
    with pytest.raises(IntegerOutOfRange):
        loads("-" + "9" * 5000)
    assert has_oversized_integer(f"[{10**30}]")
    assert not has_oversized_integer(f"[{10**18}, 1e300]")
    assert not has_oversized_integer(f"[{10**30}")  # not JSON at all


def test_decode_params_refuses_a_lone_dollar_form() -> None:
    assert decode_params(None) == []
    assert decode_params({"id": 5}) == {"id": 5}
    with pytest.raises(ValidationError) as caught:
        decode_params({"$date": 0})
    assert caught.value.errors[0].field == "params"
    assert "array or an object" in caught.value.errors[0].message


def test_decode_refuses_deep_nesting_before_the_stack_runs_out() -> None:
    shallow: list[object] = []
    for _ in range(MAX_DEPTH - 1):
        shallow = [shallow]
    assert decode(shallow) == shallow
    deep: list[object] = []
    for _ in range(900):
        deep = [deep]
    with pytest.raises(ValidationError) as caught:
        decode(deep)
    assert caught.value.errors[0].field == "params" + ".0" * MAX_DEPTH
    assert f"deeper than {MAX_DEPTH} levels" in caught.value.errors[0].message
