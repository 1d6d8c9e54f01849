"""The ``core`` namespace: liveness, jobs, and discovery of the API itself."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from certd import __version__
from certd.api.dispatch import reading_only
from certd.api.filters import QueryOptions, entry_fields, query_entries
from certd.api.registry import Service, api_method


class JobProgress(BaseModel):
    percent: float
    description: str


class JobEntry(BaseModel):
    """A job as the API reports it."""

    id: int
    method: str
    arguments: Any
    state: str = Field(description="WAITING, RUNNING, SUCCESS, FAILED or ABORTED")
    progress: JobProgress
    result: Any
    error: str | None
    exc_info: dict[str, Any] | None
    caller: str
    time_created: str | None
    time_started: str | None
    time_finished: str | None


class CoreService(Service):
    namespace = "core"

    def _shown(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A job's entry as the caller may see it: results shaped for read-only keys.

        Shaped before any filter runs, so that no filter on a result can
        tell a read-only caller what its view leaves out.
        """
        if not reading_only():
            return entry
        result = self.app.registry.readonly_result(entry["method"], entry["result"])
        return {**entry, "result": result}

    @api_method(readonly=True)
    async def ping(self) -> str:
        """Answer 'pong' to an authenticated caller."""
        return "pong"

    @api_method(readonly=True)
    async def version(self) -> str:
        """The daemon's version."""
        return __version__

    @api_method(readonly=True)
    async def get_jobs(
        self,
        filters: list[Any] = [],  # noqa: B006 - never mutated
        options: QueryOptions = QueryOptions(),  # noqa: B008
    ) -> list[JobEntry] | JobEntry | int:
        """List jobs, running and finished, with filters and options like query."""
        entries = [self._shown(e) for e in await self.app.jobs.entries()]
        return await query_entries(entries, filters, options, entry_fields(JobEntry))

    @api_method(readonly=True)
    async def job_wait(
        self, id: int, timeout: float | None = Field(default=None, ge=0, le=3600)
    ) -> JobEntry:
        """Wait until a job finishes (or the timeout passes) and return it."""
        entry = await self.app.jobs.wait(id, timeout)
        return self._shown(entry)  # type: ignore[return-value]

    @api_method(readonly=True)
    async def job_watch(
        self, id: int, timeout: float = Field(default=1.0, ge=0, le=60)
    ) -> JobEntry:
        """Return as soon as a job reports progress or finishes, or at the timeout."""
        entry = await self.app.jobs.wait_for_change(id, timeout)
        return self._shown(entry)  # type: ignore[return-value]

    @api_method()
    async def job_abort(self, id: int) -> None:
        """Abort a running job; it cleans up before it stops."""
        await self.app.jobs.abort(id)


class RpcService(Service):
    namespace = "rpc"

    @api_method(readonly=True)
    async def discover(self) -> dict[str, Any]:
        """The OpenRPC document of every method."""
        return self.app.registry.openrpc(__version__)
