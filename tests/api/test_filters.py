from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from pydantic import ValidationError as PydanticValidationError

from certd.api.filters import (
    _QUERY_THREAD,
    MAX_FILTER_DEPTH,
    MAX_FILTER_TERMS,
    MAX_ORDER_BY,
    MAX_SELECT,
    REGEX_BUDGET_SECONDS,
    THREAD_ENTRIES,
    QueryOptions,
    compile_filters,
    filter_entries,
    query_entries,
)
from certd.errors import NotFoundError, ValidationError

ENTRIES = [
    {
        "id": 1,
        "name": "www",
        "days_left": 80,
        "san": ["DNS:www.example.com"],
        "acme": {"directory": "a"},
    },
    {
        "id": 2,
        "name": "mail",
        "days_left": 5,
        "san": ["DNS:mail.example.com"],
        "acme": None,
    },
    {"id": 3, "name": "web2", "days_left": None, "san": [], "acme": {"directory": "b"}},
]


def names(result: list[dict[str, object]]) -> list[object]:
    return [entry["name"] for entry in result]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([], ["www", "mail", "web2"]),
        ([["name", "=", "mail"]], ["mail"]),
        ([["name", "!=", "mail"]], ["www", "web2"]),
        ([["days_left", "<", 10]], ["mail"]),
        ([["days_left", ">=", 5]], ["www", "mail"]),
        ([["name", "in", ["www", "web2"]]], ["www", "web2"]),
        ([["name", "nin", ["www"]]], ["mail", "web2"]),
        ([["name", "~", "^w"]], ["www", "web2"]),
        ([["name", "^", "we"]], ["web2"]),
        ([["name", "$", "il"]], ["mail"]),
        ([["san", "rin", "DNS:www.example.com"]], ["www"]),
        ([["acme.directory", "=", "b"]], ["web2"]),
        ([["OR", [["name", "=", "www"], ["days_left", "<", 10]]]], ["www", "mail"]),
        ([["name", "^", "w"], ["days_left", ">", 10]], ["www"]),
    ],
)
def test_filters_select_the_matching_entries(
    filters: list[object], expected: list[str]
) -> None:
    assert names(filter_entries(ENTRIES, filters, QueryOptions())) == expected


def test_options_order_page_count_and_get() -> None:
    ordered = filter_entries(ENTRIES, [], QueryOptions(order_by=["-days_left"]))
    assert names(ordered) == ["www", "mail", "web2"]  # None sorts last
    assert names(
        filter_entries(ENTRIES, [], QueryOptions(order_by=["name"], limit=2, offset=1))
    ) == [
        "web2",
        "www",
    ]
    assert (
        filter_entries(ENTRIES, [["days_left", ">", 0]], QueryOptions(count=True)) == 2
    )
    assert (
        filter_entries(ENTRIES, [["id", "=", 2]], QueryOptions(get=True))["name"]
        == "mail"
    )
    assert filter_entries(ENTRIES, [], QueryOptions(select=["id"])) == [
        {"id": 1},
        {"id": 2},
        {"id": 3},
    ]


def test_get_without_a_match_is_not_found() -> None:
    with pytest.raises(NotFoundError, match=r"^no entry matches the filters$"):
        filter_entries(ENTRIES, [["id", "=", 99]], QueryOptions(get=True))


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        (["name"], "filters.0"),
        ([["name", "=="]], "filters.0"),
        ([["name", "like", "x"]], "filters.0.1"),
        ([["name", "~", "("]], "filters.0.2"),
        ([["name", "in", "www"]], "filters.0.2"),
        ([[1, "=", "x"]], "filters.0.0"),
        ([["name", "^", 1]], "filters.0.2"),
        ([["name", "$", None]], "filters.0.2"),
        ([["name", "^", ["w"]]], "filters.0.2"),
        ([["OR", []]], "filters.0"),
    ],
)
def test_malformed_filters_name_their_position(
    filters: list[object], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        filter_entries(ENTRIES, filters, QueryOptions())
    assert caught.value.errors[0].field == field


def test_a_slow_regular_expression_is_stopped() -> None:
    entries = [{"name": "a" * 40 + "!"} for _ in range(5)]
    with pytest.raises(ValidationError) as caught:
        filter_entries(entries, [["name", "~", "^(a|aa)+$b"]], QueryOptions())
    assert caught.value.errors[0].field == "filters.0.2"
    assert "too long" in caught.value.message


def test_an_operator_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        filter_entries(ENTRIES, [["name", ["x"], "x"]], QueryOptions())
    assert caught.value.errors[0].field == "filters.0.1"


def test_a_query_is_bounded_in_terms_and_depth() -> None:
    many = [["id", "=", i] for i in range(MAX_FILTER_TERMS + 1)]
    with pytest.raises(ValidationError) as too_many:
        compile_filters(many)
    assert [e.field for e in too_many.value.errors] == ["filters"]

    nested: list[Any] = ["id", "=", 1]
    for _ in range(MAX_FILTER_DEPTH + 1):
        nested = ["OR", [nested, ["id", "=", 2]]]
    with pytest.raises(ValidationError) as too_deep:
        compile_filters([nested])
    assert too_deep.value.errors[0].field.startswith("filters.0.1.0.1.0")
    assert "levels deep" in too_deep.value.errors[0].message

    # The bound itself is accepted.
    assert filter_entries(ENTRIES, many[:MAX_FILTER_TERMS], QueryOptions()) == []


def test_select_and_order_by_are_bounded_and_select_keeps_each_field_once() -> None:
    with pytest.raises(PydanticValidationError):
        QueryOptions(select=["id"] * (MAX_SELECT + 1))
    with pytest.raises(PydanticValidationError):
        QueryOptions(order_by=["id"] * (MAX_ORDER_BY + 1))
    shaped = filter_entries(
        ENTRIES, [["id", "=", 2]], QueryOptions(select=["name", "id", "name"])
    )
    assert shaped == [{"name": ENTRIES[1]["name"], "id": 2}]


@pytest.mark.parametrize(
    ("filters", "options", "field", "hint"),
    [
        ([["nmae", "=", "www"]], {}, "filters.0.0", "'name'"),
        (
            [["name", "=", "www"], ["dayz_left", "<", 3]],
            {},
            "filters.1.0",
            "'days_left'",
        ),
        (
            [["OR", [["id", "=", 1], ["color", "=", "red"]]]],
            {},
            "filters.0.1.1.0",
            None,
        ),
        ([["acmee.directory", "=", "a"]], {}, "filters.0.0", "'acme'"),
        ([], {"order_by": ["name", "-expiry"]}, "options.order_by.1", None),
        ([], {"select": ["id", "nam"]}, "options.select.1", "'name'"),
    ],
)
def test_a_field_no_entry_has_is_refused(
    filters: list[Any], options: dict[str, Any], field: str, hint: str | None
) -> None:
    with pytest.raises(ValidationError) as caught:
        filter_entries(ENTRIES, filters, QueryOptions(**options))
    assert [e.field for e in caught.value.errors] == [field]
    if hint is None:
        assert "did you mean" not in caught.value.message
    else:
        assert f"did you mean {hint}?" in caught.value.message


def test_a_misspelt_field_with_not_equal_does_not_match_everything() -> None:
    with pytest.raises(ValidationError):
        filter_entries(ENTRIES, [["nam", "!=", "www"]], QueryOptions())


def test_below_a_known_field_any_key_may_be_asked_for() -> None:
    # acme is an object whose keys vary by entry; a key none has matches none.
    assert filter_entries(ENTRIES, [["acme.account", "=", "x"]], QueryOptions()) == []
    assert names(
        filter_entries(ENTRIES, [["acme.account", "!=", "x"]], QueryOptions())
    ) == ["www", "mail", "web2"]


def test_a_field_only_some_entries_have_is_known() -> None:
    entries = [{"id": 1}, {"id": 2, "extra": "yes"}]
    assert filter_entries(entries, [["extra", "=", "yes"]], QueryOptions()) == [
        {"id": 2, "extra": "yes"}
    ]


def test_with_no_entries_any_field_matches_nothing() -> None:
    assert filter_entries([], [["nmae", "=", "www"]], QueryOptions()) == []
    assert filter_entries([], [], QueryOptions(count=True, order_by=["x"])) == 0


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        (["days_left"], ["mail", "www", "web2"]),
        (["-days_left"], ["www", "mail", "web2"]),
        (["nulls_first:days_left"], ["web2", "mail", "www"]),
        (["nulls_first:-days_left"], ["web2", "www", "mail"]),
        (["nulls_last:-days_left"], ["www", "mail", "web2"]),
        (["nulls_last:days_left"], ["mail", "www", "web2"]),
    ],
)
def test_nulls_sort_last_unless_asked_first(
    order_by: list[str], expected: list[str]
) -> None:
    ordered = filter_entries(ENTRIES, [], QueryOptions(order_by=order_by))
    assert names(ordered) == expected


def test_a_misspelt_field_after_a_nulls_prefix_is_named() -> None:
    with pytest.raises(ValidationError) as caught:
        filter_entries(ENTRIES, [], QueryOptions(order_by=["nulls_first:-dayz_left"]))
    assert [e.field for e in caught.value.errors] == ["options.order_by.0"]
    assert "no field named 'dayz_left'; did you mean 'days_left'?" in (
        caught.value.message
    )


def test_a_field_is_matched_whatever_its_case_and_shown_short() -> None:
    with pytest.raises(ValidationError) as caught:
        filter_entries(ENTRIES, [["NAME", "=", "www"]], QueryOptions())
    assert "did you mean 'name'?" in caught.value.message
    with pytest.raises(ValidationError) as long:
        filter_entries(ENTRIES, [["x" * 100_000, "=", 1]], QueryOptions())
    assert len(long.value.message) < 200


def test_one_dash_orders_descending_and_two_name_no_field() -> None:
    with pytest.raises(ValidationError) as caught:
        filter_entries(ENTRIES, [], QueryOptions(order_by=["--name"]))
    assert [e.field for e in caught.value.errors] == ["options.order_by.0"]


class CountingEntry(Mapping[str, Any]):
    """An entry that computes its fields when read, as certificate records do."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.reads: list[str] = []
        self.threads: set[int] = set()

    def __getitem__(self, key: str) -> Any:
        self.reads.append(key)
        self.threads.add(threading.get_ident())
        return self.values[key]

    def __contains__(self, key: object) -> bool:
        return key in self.values

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def test_a_computed_field_is_read_once_per_entry_however_many_terms_name_it() -> None:
    entries = [CountingEntry({"id": i, "ext": {"a": i, "b": -i}}) for i in range(3)]
    filters = [["ext.a", ">=", 1], ["ext.b", "<", 0], ["ext.c", "!=", 5]]
    matched = filter_entries(
        entries,  # type: ignore[arg-type]
        filters,
        QueryOptions(select=["ext.a", "ext.b"]),
    )
    assert matched == [{"ext.a": 1, "ext.b": -1}, {"ext.a": 2, "ext.b": -2}]
    # once while filtering, once while shaping the result; never per term
    assert [e.reads.count("ext") for e in entries] == [1, 2, 2]


async def test_a_query_over_many_entries_runs_beside_the_event_loop() -> None:
    few = [CountingEntry({"id": i}) for i in range(THREAD_ENTRIES - 1)]
    many = [CountingEntry({"id": i}) for i in range(THREAD_ENTRIES)]
    loop_thread = threading.get_ident()
    wanted = [["id", ">=", THREAD_ENTRIES - 2]]

    assert await query_entries(few, wanted, QueryOptions()) == [  # type: ignore[arg-type]
        {"id": THREAD_ENTRIES - 2}
    ]
    assert await query_entries(many, wanted, QueryOptions()) == [  # type: ignore[arg-type]
        {"id": THREAD_ENTRIES - 2},
        {"id": THREAD_ENTRIES - 1},
    ]
    assert {t for e in few for t in e.threads} == {loop_thread}
    assert loop_thread not in {t for e in many for t in e.threads}
    # a malformed query is refused on the loop, before any entry is read
    with pytest.raises(ValidationError):
        await query_entries(many, [["id", "like", 1]], QueryOptions())  # type: ignore[arg-type]


async def test_a_regular_expressions_time_starts_when_its_query_runs() -> None:
    # A query may wait behind others for the query thread: the wait is not
    # the pattern's. One value takes about 20 ms to search (a+ backtracks
    # over it); with the wait counted, the budget would be spent already.
    entries = [
        CountingEntry({"id": i, "name": f"inv-{i}"}) for i in range(THREAD_ENTRIES)
    ]
    entries[0].values["name"] = "a" * 5_000
    gate = threading.Event()
    waiting = asyncio.get_running_loop().run_in_executor(_QUERY_THREAD, gate.wait)
    queued = asyncio.create_task(
        query_entries(entries, [["name", "~", "a+b|^inv-1"]], QueryOptions(count=True))  # type: ignore[arg-type]
    )
    await asyncio.sleep(REGEX_BUDGET_SECONDS * 2)
    gate.set()
    await waiting
    assert await queued == sum(1 for i in range(1, THREAD_ENTRIES) if str(i)[0] == "1")


def test_known_fields_check_a_query_over_no_entries() -> None:
    known = frozenset({"id", "name", "days_left"})
    assert filter_entries([], [["name", "=", "www"]], QueryOptions(), known) == []
    assert filter_entries([], [], QueryOptions(count=True), known) == 0
    with pytest.raises(ValidationError) as caught:
        filter_entries([], [], QueryOptions(order_by=["-dayz_left"]), known)
    assert [e.field for e in caught.value.errors] == ["options.order_by.0"]
    assert "did you mean 'days_left'?" in caught.value.message
    # a field some entry has is taken even when it is not declared
    entries = [{"id": 1, "extra": True}]
    assert filter_entries(entries, [["extra", "=", True]], QueryOptions(), known) == (
        entries
    )
