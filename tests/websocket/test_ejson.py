"""Extended JSON: the $ forms the client decodes, both ways."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from ipaddress import IPv4Interface, IPv6Interface

import pytest

from certd.api.ejson import decode, dumps
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
    ],
)
def test_decode_names_a_malformed_value(value: object, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        decode(value)
    assert caught.value.errors[0].field == field
