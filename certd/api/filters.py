"""Middleware-style query filters and options over lists of entries.

A filter is ``[field, operator, value]``; a list of filters is a conjunction;
``["OR", [f1, f2, ...]]`` is a disjunction whose members may themselves be
lists (conjunctions). Fields may be dotted paths into nested dicts.

A field that no entry has is refused rather than matched against nothing: a
misspelt name would otherwise return an empty list (or, with ``!=``, every
entry) and look like an answer.
"""

from __future__ import annotations

import asyncio
import difflib
import operator
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from certd.errors import NotFoundError, ValidationError

_MISSING = object()

# Bounds on what one query may ask: each term is evaluated for every entry on
# the event loop, so an unbounded list is a way to stall the daemon.
MAX_FILTER_TERMS = 256
MAX_FILTER_DEPTH = 16
MAX_SELECT = 128
MAX_ORDER_BY = 16


class QueryOptions(BaseModel):
    """Paging, ordering and shaping of a ``query`` result."""

    model_config = ConfigDict(extra="forbid")

    order_by: list[str] = Field(default_factory=list, max_length=MAX_ORDER_BY)
    limit: int = Field(default=0, ge=0)
    offset: int = Field(default=0, ge=0)
    count: bool = False
    get: bool = False
    select: list[str] = Field(default_factory=list, max_length=MAX_SELECT)


# All regular expressions of one query together may take this long; a pattern
# with catastrophic backtracking would otherwise stall the event loop.
REGEX_BUDGET_SECONDS = 0.25


def _bounded_search(
    pattern: Any, where: str, budget: _Budget
) -> Callable[[Any, Any], bool]:
    # The regex module (for its timeouts) is loaded by the first query that
    # uses "~", not by every daemon.
    import regex

    try:
        compiled = regex.compile(pattern)
    except (regex.error, TypeError) as exc:
        raise ValidationError.single(
            where, f"invalid regular expression: {exc}"
        ) from exc

    def search(value: Any, _: Any) -> bool:
        if not isinstance(value, str):
            return False
        try:
            remaining = max(budget.regex_deadline - time.monotonic(), 0.001)
            return compiled.search(value, timeout=remaining) is not None
        except TimeoutError:
            raise ValidationError.single(
                where, "the regular expression takes too long; make it simpler"
            ) from None

    return search


def _contains(container: Any, item: Any) -> bool:
    try:
        return item in container
    except TypeError:
        return False


def _safe_compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(left: Any, right: Any) -> bool:
        if left is None or right is None:
            return False
        try:
            return op(left, right)
        except TypeError:
            return False

    return compare


def _unbounded(value: Any, pattern: Any) -> bool:
    raise AssertionError("'~' filters are compiled by _bounded_search")


OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": _safe_compare(operator.gt),
    ">=": _safe_compare(operator.ge),
    "<": _safe_compare(operator.lt),
    "<=": _safe_compare(operator.le),
    "~": _unbounded,
    "in": lambda value, options: _contains(options, value),
    "nin": lambda value, options: not _contains(options, value),
    "rin": lambda value, item: value is not None and _contains(value, item),
    "rnin": lambda value, item: value is not None and not _contains(value, item),
    "^": lambda value, prefix: isinstance(value, str) and value.startswith(prefix),
    "$": lambda value, suffix: isinstance(value, str) and value.endswith(suffix),
}


def lookup(entry: Any, path: str) -> Any:
    """The value at a dotted path, or a sentinel when any step is missing."""
    current = entry
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        else:
            return _MISSING
    return current


Predicate = Callable[[dict[str, Any]], bool]


class _Memo(Mapping[str, Any]):
    """An entry whose fields are read once each for the length of a query.

    Entries that compute fields when read (certificate records decode their
    extensions and cut their chain each time) would otherwise compute one
    field once per term that names it: hundreds of times per entry.
    """

    __slots__ = ("_entry", "_read")

    def __init__(self, entry: Mapping[str, Any]) -> None:
        self._entry = entry
        self._read: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        try:
            return self._read[key]
        except KeyError:
            value = self._read[key] = self._entry[key]
            return value

    def __contains__(self, key: object) -> bool:
        return key in self._entry

    def __iter__(self) -> Iterator[str]:
        return iter(self._entry)

    def __len__(self) -> int:
        return len(self._entry)


def _repeats(paths: Iterable[str]) -> bool:
    """Whether a first name comes back among ``paths``: only then is a memo worth it."""
    names = [path.split(".", 1)[0] for path in paths]
    return len(names) != len(set(names))


def compile_filters(filters: Sequence[Any], where: str = "filters") -> Predicate:
    """Turn a filter list into a predicate, checking its shape first.

    Raises:
        ValidationError: a filter is malformed; the field names its position.
    """
    return _compile_all(filters, where, _Budget())


class _Budget:
    """Terms left to compile in one query, and the fields they name."""

    def __init__(self) -> None:
        self.terms = MAX_FILTER_TERMS
        # (where the field is in the request, its dotted path)
        self.fields: list[tuple[str, str]] = []
        self.start_clock()

    def start_clock(self) -> None:
        """Start the time the query's regular expressions share."""
        self.regex_deadline = time.monotonic() + REGEX_BUDGET_SECONDS

    def take(self, where: str, depth: int) -> None:
        self.terms -= 1
        if self.terms < 0:
            raise ValidationError.single(
                "filters", f"at most {MAX_FILTER_TERMS} filter terms in one query"
            )
        if depth > MAX_FILTER_DEPTH:
            raise ValidationError.single(
                where, f"filters nest at most {MAX_FILTER_DEPTH} levels deep"
            )


def _compile_all(
    filters: Sequence[Any], where: str, budget: _Budget, depth: int = 0
) -> Predicate:
    if not isinstance(filters, list | tuple):
        raise ValidationError.single(where, "filters must be a list")
    predicates = [
        _compile_one(f, f"{where}.{i}", budget, depth) for i, f in enumerate(filters)
    ]
    return lambda entry: all(p(entry) for p in predicates)


def _compile_one(item: Any, where: str, budget: _Budget, depth: int) -> Predicate:
    budget.take(where, depth)
    if not isinstance(item, list | tuple):
        raise ValidationError.single(where, "a filter must be a list")
    if len(item) == 2 and item[0] == "OR":
        branches = item[1]
        if not isinstance(branches, list | tuple) or not branches:
            raise ValidationError.single(where, "OR takes a non-empty list of filters")
        compiled = []
        for i, branch in enumerate(branches):
            if (
                isinstance(branch, list | tuple)
                and branch
                and isinstance(branch[0], list | tuple)
            ):
                compiled.append(
                    _compile_all(branch, f"{where}.1.{i}", budget, depth + 1)
                )
            else:
                compiled.append(
                    _compile_one(branch, f"{where}.1.{i}", budget, depth + 1)
                )
        return lambda entry: any(p(entry) for p in compiled)
    if len(item) != 3:
        raise ValidationError.single(where, "a filter is [field, operator, value]")
    field, op_name, value = item
    if not isinstance(field, str) or not field:
        raise ValidationError.single(
            f"{where}.0", "the field must be a non-empty string"
        )
    op = OPERATORS.get(op_name) if isinstance(op_name, str) else None
    if op is None:
        raise ValidationError.single(
            f"{where}.1",
            f"unknown operator {op_name!r}; use one of {', '.join(OPERATORS)}",
        )
    if op_name == "~":
        op = _bounded_search(value, f"{where}.2", budget)
    if op_name in ("in", "nin") and not isinstance(value, list | tuple):
        raise ValidationError.single(f"{where}.2", f"{op_name} takes a list")
    if op_name in ("^", "$") and not isinstance(value, str):
        raise ValidationError.single(f"{where}.2", f"{op_name} takes a string")
    budget.fields.append((f"{where}.0", field))

    def predicate(entry: dict[str, Any]) -> bool:
        found = lookup(entry, field)
        if found is _MISSING:
            return op_name in ("!=", "nin")
        return op(found, value)

    return predicate


class OrderSpec(NamedTuple):
    """One ``order_by`` entry: ``[nulls_first:|nulls_last:][-]path``."""

    path: str
    descending: bool
    nulls_first: bool

    @classmethod
    def parse(cls, spec: str) -> OrderSpec:
        nulls_first = False
        for prefix, first in (("nulls_first:", True), ("nulls_last:", False)):
            if spec.startswith(prefix):
                spec, nulls_first = spec[len(prefix) :], first
                break
        descending = spec.startswith("-")
        return cls(spec[1:] if descending else spec, descending, nulls_first)


def _sort_key(order: OrderSpec) -> Callable[[dict[str, Any]], tuple[int, Any]]:
    # Missing and null values sort last in both directions unless asked to
    # come first; with reverse=True the flag has to be inverted to hold.
    nulls_low = order.nulls_first != order.descending
    present, absent = (1, 0) if nulls_low else (0, 1)

    def key(entry: dict[str, Any]) -> tuple[int, Any]:
        value = lookup(entry, order.path)
        if value is _MISSING or value is None:
            return (absent, "")
        return (present, value)

    return key


def apply_options(entries: Iterable[dict[str, Any]], options: QueryOptions) -> Any:
    """Order, page and shape already-filtered entries as the options ask."""
    rows = list(entries)
    for spec in reversed(options.order_by):
        order = OrderSpec.parse(spec)
        try:
            rows.sort(key=_sort_key(order), reverse=order.descending)
        except TypeError as exc:
            raise ValidationError.single(
                "options.order_by",
                f"cannot order by {order.path!r}: mixed value types",
            ) from exc
    if options.count:
        return len(rows)
    if options.offset:
        rows = rows[options.offset :]
    if options.limit:
        rows = rows[: options.limit]
    if options.select:
        fields = list(dict.fromkeys(options.select))
        if _repeats(fields):
            rows = [r if isinstance(r, dict) else _Memo(r) for r in rows]
        rows = [
            {k: v for k in fields if (v := lookup(r, k)) is not _MISSING} for r in rows
        ]
    else:
        # Entries may be read-only views (see certificate_entries); results are dicts.
        rows = [r if isinstance(r, dict) else dict(r) for r in rows]
    if options.get:
        if not rows:
            raise NotFoundError.matching()
        return rows[0]
    return rows


def entry_fields(model: type[BaseModel]) -> frozenset[str]:
    """The top-level names an entry of ``model`` has; empty when it takes any."""
    if model.model_config.get("extra") == "allow":
        return frozenset()
    return frozenset(field.alias or name for name, field in model.model_fields.items())


def check_fields(
    entries: Sequence[Mapping[str, Any]],
    fields: Iterable[tuple[str, str]],
    known: Collection[str] = (),
) -> None:
    """Refuse a dotted path whose first name neither ``known`` nor any entry has.

    Only the first name is checked: below it are free-form objects (an
    authenticator's attributes, an event's data) whose keys vary by entry.
    ``known`` (the fields of the result's model) lets a query over no entries
    be checked too; without it there is nothing to check an empty list against.

    Raises:
        ValidationError: at the position of the first unknown field.
    """
    if not entries and not known:
        return
    first = entries[0] if entries else {}
    for where, path in fields:
        name = path.split(".", 1)[0]
        if name in known or name in first or any(name in e for e in entries):
            continue
        names = sorted({*known, *first})
        close = difflib.get_close_matches(name.lower(), names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        shown = name if len(name) <= 64 else name[:64] + "…"
        raise ValidationError.single(where, f"no field named {shown!r}{hint}")


def filter_entries(
    entries: Iterable[dict[str, Any]],
    filters: Sequence[Any],
    options: QueryOptions,
    known: Collection[str] = (),
) -> Any:
    """Filter, order, page and shape entries as one ``query`` call asks.

    ``known`` names the fields an entry has (see :func:`check_fields`).
    """
    rows = entries if isinstance(entries, list) else list(entries)
    return _Query(filters, options, known).run(rows)


async def query_entries(
    entries: Iterable[dict[str, Any]],
    filters: Sequence[Any],
    options: QueryOptions,
    known: Collection[str] = (),
) -> Any:
    """:func:`filter_entries` for the event loop: a costly query runs in a thread.

    A query is checked on the loop, so a malformed one is refused at once;
    one over many entries is run in a thread, where it shares the interpreter
    with the loop instead of stopping it: 256 terms over 10,000 certificates
    take seconds, and even returning them all whole takes a few hundred ms.
    """
    query = _Query(filters, options, known)
    rows = entries if isinstance(entries, list) else list(entries)
    if len(rows) < THREAD_ENTRIES:
        return query.run(rows)
    return await asyncio.get_running_loop().run_in_executor(
        _QUERY_THREAD, query.run, rows
    )


# Entries from which a query leaves the event loop.
THREAD_ENTRIES = 1000
# One thread for them all: they share the interpreter anyway, and each thread
# that builds results gets a malloc arena of its own that it keeps (the
# bench's inventory queries left 15 MB more resident with the default pool).
_QUERY_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="certd-query")


class _Query:
    """One query's filters compiled and options checked, ready to run."""

    def __init__(
        self, filters: Sequence[Any], options: QueryOptions, known: Collection[str]
    ) -> None:
        self.known = known
        self.budget = budget = _Budget()
        self.predicate = _compile_all(filters, "filters", budget)
        self.options = options
        self.fields = [
            *budget.fields,
            *(
                (f"options.order_by.{i}", OrderSpec.parse(spec).path)
                for i, spec in enumerate(options.order_by)
            ),
            *((f"options.select.{i}", path) for i, path in enumerate(options.select)),
        ]
        self.memo = _repeats(path for _, path in budget.fields)

    def run(self, rows: list[dict[str, Any]]) -> Any:
        # From here, not from when it was built: it may have waited its turn
        # in the query thread.
        self.budget.start_clock()
        check_fields(rows, self.fields, self.known)
        predicate = self.predicate
        if self.memo and rows and not isinstance(rows[0], dict):
            matched = (e for e in rows if predicate(_Memo(e)))  # type: ignore[arg-type]
        else:
            matched = (e for e in rows if predicate(e))
        return apply_options(matched, self.options)
