"""Jobs: long calls that return an id at once and report progress as they run.

Every job is a row in the store from the moment it is submitted, so the job
list survives restarts as history. A job still marked running when the daemon
starts was cut short by a crash and is marked aborted. Daemons sharing one
store each write their node id on the jobs they run and recover only those.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from certd.api.codes import code_for
from certd.errors import (
    CertdError,
    ConflictError,
    JobAbortedError,
    NotFoundError,
    ValidationError,
)
from certd.store.db import Database
from certd.store.models import Job as JobRow
from certd.store.models import utcnow

log = structlog.get_logger(__name__)
T = TypeVar("T")


class JobState(StrEnum):
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    ABORTED = "ABORTED"


FINISHED = frozenset({JobState.SUCCESS, JobState.FAILED, JobState.ABORTED})
UNFINISHED = frozenset({JobState.WAITING, JobState.RUNNING})
# Waits between reads of a job's row that another daemon runs (doubling).
ROW_POLL_FIRST = 0.1
ROW_POLL_MAX = 2.0


def error_details(exc: BaseException) -> dict[str, Any]:
    """What a caller needs to act on an error, without internals or secrets."""
    if isinstance(exc, CertdError):
        details: dict[str, Any] = {
            "type": type(exc).__name__,
            "code": code_for(exc),
            "errno": exc.errno,
            "retryable": exc.retryable,
        }
        if isinstance(exc, ValidationError):
            details["errors"] = [
                {"field": e.field, "message": e.message, "errno": e.errno}
                for e in exc.errors
            ]
        for attr in ("problem_type", "domain", "retry_after", "provider"):
            if getattr(exc, attr, None) is not None:
                details[attr] = getattr(exc, attr)
        return details
    return {
        "type": "InternalError",
        "code": code_for(exc),
        "errno": 14,
        "retryable": False,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def run_to_end(step: Awaitable[T]) -> T:
    """Await ``step`` to its end even if the caller is cancelled meanwhile.

    For a step whose outcome the job must know, such as the commit that
    stores its work: a cancel that arrives during it is dropped, and the job
    goes on as if it had come after.
    """
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        return await task


class Job:
    """The handle a job function gets: report progress, check for abort."""

    def __init__(self, manager: JobManager, row: JobRow) -> None:
        self.manager = manager
        self.id = row.id
        self.method = row.method
        self.arguments = row.arguments
        self.caller = row.caller
        self.state = JobState(row.state)
        self.percent = 0.0
        self.description = ""
        self.result: Any = None
        self.error: str | None = None
        self.error_data: dict[str, Any] | None = None
        self.created_at = row.created_at
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.task: asyncio.Task[None] | None = None
        self._flush: asyncio.Task[None] | None = None
        # set once the job's success is staged with its effect (stage_success):
        # a progress flush after it would write RUNNING over that
        self._success_staged = False
        self.done = asyncio.Event()
        self.changed = asyncio.Condition()

    async def set_progress(self, percent: float, description: str = "") -> None:
        """Record progress (0-100) and what the job is doing now."""
        self.percent = max(0.0, min(100.0, float(percent)))
        self.description = description
        self._schedule_flush()
        self.manager._announce(self)
        await self._notify()

    def _schedule_flush(self) -> None:
        # Progress reaches watchers at once from memory; the store gets it at
        # most once per PROGRESS_FLUSH_SECONDS, so a busy job costs few writes.
        if self._success_staged:
            return
        if self._flush is None or self._flush.done():
            self._flush = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(PROGRESS_FLUSH_SECONDS)
        try:
            await self.manager._persist(
                self.id,
                state=self.state,
                started_at=self.started_at,
                progress_percent=self.percent,
                progress_description=self.description,
            )
        except Exception:  # progress is best effort; the end is not
            log.warning("job_progress_not_saved", job_id=self.id)

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def entry(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "arguments": self.arguments,
            "state": self.state.value,
            "progress": {"percent": self.percent, "description": self.description},
            "result": self.result,
            "error": self.error,
            "exc_info": self.error_data,
            "caller": self.caller,
            "time_created": _iso(self.created_at),
            "time_started": _iso(self.started_at),
            "time_finished": _iso(self.finished_at),
        }


_JOBS_TABLE = JobRow.__table__
_JOBS = select(_JOBS_TABLE)


def row_entry(row: Any) -> dict[str, Any]:
    """The entry of a finished job's row (an ORM object or a row of the table)."""
    return {
        "id": row.id,
        "method": row.method,
        "arguments": row.arguments,
        "state": row.state,
        "progress": {
            "percent": row.progress_percent,
            "description": row.progress_description,
        },
        "result": row.result,
        "error": row.error,
        "exc_info": row.error_data,
        "caller": row.caller,
        "time_created": _iso(row.created_at),
        "time_started": _iso(row.started_at),
        "time_finished": _iso(row.finished_at),
    }


PROGRESS_FLUSH_SECONDS = 1.0
FINAL_SAVE_ATTEMPTS = 5
# How long a stop waits for the cancelled jobs to clean up and save their end.
SHUTDOWN_GRACE = 5.0

JobFunction = Callable[[Job], Awaitable[Any]]
# Called, without awaiting, each time a job starts, reports progress or ends.
JobListener = Callable[[Job], None]


class JobManager:
    """Runs jobs as tasks and keeps their records in the store."""

    def __init__(
        self, db: Database, max_running: int = 16, node: str | None = None
    ) -> None:
        """``node``: this daemon's id among those sharing the store (set at start)."""
        self.db = db
        self.node = node
        self.running: dict[int, Job] = {}
        self.listeners: list[JobListener] = []
        # Jobs beyond this many wait their turn (state WAITING) instead of
        # all competing for the store and the CPU at once.
        self._slots = asyncio.Semaphore(max_running)
        # Set by shutdown(): a job submitted later would outlive the store.
        self.stopping = False

    def add_listener(self, listener: JobListener) -> Callable[[], None]:
        """Call ``listener`` on every change of every job; return the remover."""
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def _announce(self, job: Job) -> None:
        for listener in list(self.listeners):
            try:
                listener(job)
            except Exception:
                log.exception("job_listener_failed", job_id=job.id)

    async def recover(self) -> int:
        """Mark jobs left running by a previous process of this node as aborted.

        Jobs of other nodes are theirs to recover: another daemon sharing the
        store may be running them now. Rows without a node (written before
        nodes were recorded) are recovered by whichever daemon starts.
        """
        mine: ColumnElement[bool] = JobRow.node.is_(None)
        if self.node is not None:
            mine = or_(mine, JobRow.node == self.node)
        async with self.db.session() as session:
            result = await session.execute(
                update(JobRow)
                .where(JobRow.state.in_([JobState.WAITING, JobState.RUNNING]), mine)
                .values(
                    state=JobState.ABORTED,
                    error="interrupted: the daemon stopped while the job ran",
                    finished_at=utcnow(),
                )
            )
        count = getattr(result, "rowcount", 0) or 0
        if count:
            log.warning("interrupted_jobs_marked", count=count)
        return count

    async def submit(
        self,
        method: str,
        arguments: Any,
        run: JobFunction,
        caller: str = "",
        dump_result: Callable[[Any], Any] = lambda value: value,
    ) -> Job:
        """Store a new job and start running it.

        Raises:
            CertdError: the daemon is stopping (retryable).
        """
        if self.stopping:
            raise CertdError(
                "the daemon is stopping; call again once it has restarted",
                retryable=True,
            )
        async with self.db.session() as session:
            row = JobRow(
                method=method,
                arguments=arguments,
                state=JobState.WAITING,
                caller=caller,
                node=self.node,
            )
            session.add(row)
            await session.flush()
        job = Job(self, row)
        self.running[job.id] = job
        job.task = asyncio.create_task(
            self._run(job, run, dump_result), name=f"job-{job.id}"
        )
        return job

    async def _run(
        self, job: Job, run: JobFunction, dump_result: Callable[[Any], Any]
    ) -> None:
        bound = structlog.contextvars.bind_contextvars(job_id=job.id, method=job.method)
        started = time.monotonic()
        try:
            async with self._slots:
                job.state = JobState.RUNNING
                job.started_at = utcnow()
                self._announce(job)
                log.info("job_started")
                # Not written now: while the job runs, readers get its entry
                # from memory, the row catches up with the first progress flush
                # or the end, and after a crash recover() aborts WAITING and
                # RUNNING rows alike.
                try:
                    job.result = dump_result(await run(job))
                    job.state = JobState.SUCCESS
                    job.percent = 100.0
                    # Asked to stop (abort, daemon stopping) but it finished
                    # first, its work done (run_to_end): no error to report.
                    job.error = job.error_data = None
                except asyncio.CancelledError:
                    job.state = JobState.ABORTED
                    job.error = job.error or "aborted"
                    job.error_data = error_details(JobAbortedError(job.error))
                except CertdError as exc:
                    job.state = JobState.FAILED
                    job.error = exc.message
                    job.error_data = error_details(exc)
                except Exception as exc:
                    log.exception("job_crashed")
                    job.state = JobState.FAILED
                    job.error = (
                        f"internal error ({type(exc).__name__}); see the daemon log"
                    )
                    job.error_data = error_details(exc)
        except asyncio.CancelledError:
            # Cancelled while still waiting for a slot.
            job.state = JobState.ABORTED
            job.error = job.error or "aborted"
            job.error_data = error_details(JobAbortedError(job.error))
        finally:
            job.finished_at = utcnow()
            if job._flush is not None:
                job._flush.cancel()
            try:
                await asyncio.shield(self._save_end(job))
            finally:
                log.info(
                    "job_finished",
                    state=job.state.value,
                    seconds=round(time.monotonic() - started, 3),
                    error=job.error,
                )
                structlog.contextvars.reset_contextvars(**bound)
                self.running.pop(job.id, None)
                job.done.set()
                self._announce(job)
                await job._notify()

    async def _save_end(self, job: Job) -> None:
        """Write the job's end; retried, since a busy store must not lose it."""
        values = {
            "state": job.state,
            "result": job.result,
            "error": job.error,
            "error_data": job.error_data,
            "progress_percent": job.percent,
            "progress_description": job.description,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
        }
        for attempt in range(FINAL_SAVE_ATTEMPTS):
            try:
                await self._persist(job.id, **values)
                return
            except Exception:  # retried, then logged
                if attempt == FINAL_SAVE_ATTEMPTS - 1:
                    # The next start marks the job aborted; nothing is stuck.
                    log.exception("job_end_not_saved", job_id=job.id)
                    return
                await asyncio.sleep(0.2 * 2**attempt)

    async def stage_success(self, session: AsyncSession, job: Job, result: Any) -> None:
        """Mark ``job`` succeeded, with a first ``result``, in the caller's transaction.

        For a job whose effect is that transaction: a crash after its commit
        leaves the job SUCCESS (recover() aborts only WAITING and RUNNING
        rows); the end saved as usual replaces the result, or the state if a
        later step fails.
        """
        job._success_staged = True
        if job._flush is not None:
            job._flush.cancel()
        await session.execute(
            update(JobRow)
            .where(JobRow.id == job.id)
            .values(
                state=JobState.SUCCESS,
                result=result,
                started_at=job.started_at,
                finished_at=utcnow(),
                progress_percent=100.0,
            )
        )

    async def _persist(self, job_id: int, **values: Any) -> None:
        async with self.db.session() as session:
            await session.execute(
                update(JobRow).where(JobRow.id == job_id).values(**values)
            )

    # Read through Database.read: polling clients do not queue behind the
    # writes of the running jobs for the sessions' one connection.

    async def entry(self, job_id: int) -> dict[str, Any]:
        if job := self.running.get(job_id):
            return job.entry()
        one = _JOBS.where(_JOBS_TABLE.c.id == job_id)
        row = await self.db.read(lambda conn: conn.execute(one).one_or_none())
        if row is None:
            raise NotFoundError("job", job_id)
        return row_entry(row)

    async def entries(self) -> list[dict[str, Any]]:
        # Taken before the read: a job that ends meanwhile has saved its end
        # before it leaves self.running, so no job is shown going backwards.
        running = {job_id: job.entry() for job_id, job in self.running.items()}
        every = _JOBS.order_by(_JOBS_TABLE.c.id)
        rows = await self.db.read(lambda conn: conn.execute(every).all())
        return [running.get(row.id) or row_entry(row) for row in rows]

    async def wait(self, job_id: int, timeout: float | None = None) -> dict[str, Any]:
        """The job's entry once it finishes, or as it stands when ``timeout`` passes."""
        job = self.running.get(job_id)
        if job is None:
            return await self._watch_row(job_id, timeout, until_changed=False)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.done.wait(), timeout)
        return job.entry()

    async def wait_for_change(self, job_id: int, timeout: float) -> dict[str, Any]:
        """Return as soon as the job reports progress or finishes, or at ``timeout``."""
        job = self.running.get(job_id)
        if job is None:
            return await self._watch_row(job_id, timeout, until_changed=True)
        async with job.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.changed.wait(), timeout)
        return job.entry()

    async def _watch_row(
        self, job_id: int, timeout: float | None, *, until_changed: bool
    ) -> dict[str, Any]:
        """Follow a job this daemon does not run through its stored row.

        Another daemon sharing the store runs it (or ran it): its row shows
        progress as that daemon saves it, so it is read again now and then
        until it ends (or changes, with ``until_changed``) or ``timeout``
        passes. A finished job is answered at once.
        """
        first = entry = await self.entry(job_id)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pause = ROW_POLL_FIRST
        while entry["state"] in UNFINISHED:
            if until_changed and entry != first:
                break
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                break
            await asyncio.sleep(pause if left is None else min(pause, left))
            pause = min(pause * 2, ROW_POLL_MAX)
            entry = await self.entry(job_id)
        return entry

    async def abort(self, job_id: int) -> None:
        job = self.running.get(job_id)
        if job is None:
            entry = await self.entry(job_id)  # NotFoundError for unknown ids
            if entry["state"] in UNFINISHED:
                # it runs in another daemon sharing the store (or one gone)
                raise ConflictError(
                    f"job {job_id} does not run in this daemon: abort it in the "
                    "daemon that runs it"
                )
            return
        job.error = "aborted by request"
        await self._cancel(job)

    async def shutdown(
        self,
        reason: str = "interrupted: the daemon is stopping",
        grace: float | None = None,
    ) -> None:
        """Cancel every running job and wait until each has cleaned up.

        Waits ``grace`` seconds at most (SHUTDOWN_GRACE): a job still running
        then is named in the log and left; the next start marks it aborted.
        """
        self.stopping = True
        grace = SHUTDOWN_GRACE if grace is None else grace
        jobs = list(self.running.values())
        if not jobs:
            return
        for job in jobs:
            job.error = reason
        cancels = {asyncio.ensure_future(self._cancel(job)): job for job in jobs}
        _, pending = await asyncio.wait(cancels, timeout=grace / 2)
        for cancel in pending:
            task = cancels[cancel].task
            # Python 3.11's asyncio.wait_for drops a cancel that arrives as
            # what it waits for ends (a hook exiting, an event set), and the
            # job's body goes on. run_to_end drops one on purpose, after
            # uncancel(): that job is not cancelled again.
            if task is not None and not task.done() and task.cancelling():
                if cancels[cancel].state in (JobState.WAITING, JobState.RUNNING):
                    task.cancel()
        if pending:
            _, pending = await asyncio.wait(pending, timeout=grace / 2)
        for cancel in pending:
            job = cancels[cancel]
            log.warning(
                "job_left_running",
                job_id=job.id,
                method=job.method,
                state=job.state.value,
                reason=f"not ended {grace:g} s after it was cancelled",
            )

    async def _cancel(self, job: Job) -> None:
        if job.task is None:
            return
        job.task.cancel()
        # Not gather: a caller that stops waiting must not cancel the job a
        # second time (run_to_end would lose the step it protects).
        await asyncio.wait({job.task})
        if not job.task.cancelled():
            job.task.exception()  # _run logs its own failures
        if not job.done.is_set():
            # Cancelled before its first step ran: _run never started, so
            # nothing else records the end.
            job.state = JobState.ABORTED
            job.error = job.error or "aborted"
            job.error_data = error_details(JobAbortedError(job.error))
            job.finished_at = utcnow()
            await asyncio.shield(self._save_end(job))
            self.running.pop(job.id, None)
            job.done.set()
            self._announce(job)
