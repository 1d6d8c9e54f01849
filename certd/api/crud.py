"""The base of every namespace that manages a kind of object.

Subclasses give an ``Entry`` model (the shape of one object in results) and
implement :meth:`CRUDService.entries`; ``query`` and ``get_instance`` come
from here with filters and options that work the same in every namespace.
"""

import abc
from collections.abc import Collection
from typing import Any, ClassVar

from pydantic import BaseModel

from certd.api.filters import QueryOptions, entry_fields, query_entries
from certd.api.registry import MethodOptions, Service
from certd.errors import NotFoundError

# This module deliberately does not use postponed annotations: the methods
# built in __init_subclass__ need their annotations as real objects.


class CRUDService(Service):
    """query / get_instance for free; create / update / delete per namespace."""

    Entry: ClassVar[type[BaseModel]]
    kind: ClassVar[str]
    # The top-level fields of an entry, to refuse a misspelt filter even when
    # there are no entries; by default those of Entry (none if it takes any).
    entry_fields: ClassVar[Collection[str]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        entry = cls.__dict__.get("Entry")
        if entry is None:
            return
        if "entry_fields" not in cls.__dict__:
            cls.entry_fields = entry_fields(entry)

        async def query(
            self: CRUDService,
            filters: list[Any] = [],  # noqa: B006 - never mutated
            options: QueryOptions = QueryOptions(),  # noqa: B008 - immutable in use
        ) -> list[entry] | entry | int:  # type: ignore[valid-type]
            """List entries matching the filters, shaped by the options."""
            return await query_entries(
                await self.entries(), filters, options, self.entry_fields
            )

        async def get_instance(self: CRUDService, id: int) -> entry:  # type: ignore[valid-type]
            """One entry by id."""
            return await self.get_entry(id)

        query.__certd_api__ = MethodOptions(readonly=True)  # type: ignore[attr-defined]
        get_instance.__certd_api__ = MethodOptions(readonly=True)  # type: ignore[attr-defined]
        cls.query = query  # type: ignore[attr-defined]
        cls.get_instance = get_instance  # type: ignore[attr-defined]

    @abc.abstractmethod
    async def entries(self) -> list[dict[str, Any]]:
        """Every object of this namespace in its result shape."""

    async def get_entry(self, id: int) -> dict[str, Any]:
        for entry in await self.entries():
            if entry.get("id") == id:
                return entry
        raise NotFoundError(self.kind, id)
