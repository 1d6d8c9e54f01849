"""``event``: what happened to certificates and CAs (renewals, failures, expiry)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import select

from certd.api.crud import CRUDService
from certd.api.registry import api_method
from certd.deploy.events import KINDS, event_entry
from certd.store.models import Event

# query reads the newest events only; older ones are kept until pruned.
QUERY_LIMIT = 10_000


class EventEntry(BaseModel):
    """One event as query returns it."""

    id: int
    kind: str
    severity: Literal["info", "warning", "error"]
    certificate_id: int | None
    subject: str | None
    message: str
    data: dict[str, Any]
    created_at: str | None


class EventService(CRUDService):
    namespace = "event"
    kind = "event"
    Entry = EventEntry

    # Read beside the sessions (see Database.read): not queued behind writes.

    async def entries(self) -> list[dict[str, Any]]:
        newest = select(Event).order_by(Event.id.desc()).limit(QUERY_LIMIT)
        rows = await self.app.db.read_objects(
            lambda session: session.scalars(newest).all()
        )
        return [event_entry(row) for row in reversed(rows)]

    async def get_entry(self, id: int) -> dict[str, Any]:
        from certd.errors import NotFoundError

        row = await self.app.db.read_objects(lambda session: session.get(Event, id))
        if row is None:
            raise NotFoundError(self.kind, id)
        return event_entry(row)

    @api_method(readonly=True)
    async def kind_choices(self) -> dict[str, str]:
        """Every event kind with its severity."""
        return dict(KINDS)
