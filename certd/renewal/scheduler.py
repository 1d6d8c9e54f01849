"""The renewal loop: a scan now and then, a cheap tick often.

The scan (at start and every ``renewal.scan_interval``) refreshes each
certificate's plan, asks ARI CAs for their windows and raises expiry events.
The tick (every ``renewal.tick_interval``) is one indexed query for
certificates whose ``next_attempt_at`` has come and starts a renewal job for
each, never more than ``renewal.max_concurrent`` at once and never two for one
certificate; it also plans certificates stored since, and starts owed
deployments. A failing certificate only moves its own next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from apscheduler.events import EVENT_JOB_SUBMITTED, JobSubmissionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from cryptography import x509
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import defer

from certd.config import Config
from certd.deploy.deployer import failure, owed_here
from certd.errors import ConflictError
from certd.renewal.ari import AriClient
from certd.renewal.planning import (
    CA_CANNOT_SIGN,
    NOT_PLANNED,
    REVOKED,
    SIGNER_COLUMNS,
    Signers,
    all_signers,
    facts_for,
    leaf_dates,
    leaf_of,
    load_signers,
    lost_its_ca,
    not_renewable_because,
    plan_row,
    renewal_kind,
    signer_problem,
    signers_from,
    signing_authorities,
)
from certd.renewal.policy import PolicySettings, plan, renewal_window
from certd.renewal.renewer import OPEN_STATES, Renewer, lease_holder, leased_elsewhere
from certd.store.models import (
    Certificate,
    CertificateAuthority,
    Event,
    RenewalAttempt,
    utcnow,
)

if TYPE_CHECKING:
    from certd.api.jobs import Job
    from certd.service import Daemon

log = structlog.get_logger(__name__)

# Planning reads no key and no deploy settings: left unloaded, they are not
# decrypted for every certificate at every scan (and may not be read by mistake).
_WITHOUT_SECRETS = (
    defer(Certificate.privatekey, raiseload=True),
    defer(Certificate.deploy, raiseload=True),
)
# What the scan's ARI step reads of every certificate.
_ARI_COLUMNS = (
    Certificate.id,
    Certificate.cert_type,
    Certificate.certificate,
    Certificate.revoked,
    Certificate.acme_account_id,
    Certificate.acme_directory_uri,
    Certificate.dns_mapping,
    Certificate.signedby_id,
    Certificate.ari_next_fetch_at,
)


def _unplanned(able: Collection[int], unable: Collection[int]) -> Any:
    """Which rows the tick plans, given the CAs that can sign and those that cannot.

    Rows with no plan (stored since the last tick other than through the
    API, changed by certificate.update, or with a hold lifted, on them or on
    a CA above them), revoked rows not yet seen as revoked (a revocation
    racing with a plan can leave a time on them), and rows with a time whose
    CA can no longer sign (a row stored under an imported CA without its
    key, a CA revoked or expired since, or under one that is).
    """
    return and_(
        Certificate.cert_type == "CERTIFICATE",
        or_(
            Certificate.next_attempt_at.is_(None)
            & or_(
                Certificate.next_attempt_reason.is_(None),
                Certificate.next_attempt_reason.not_in(NOT_PLANNED),
                # a hold lifted since
                (Certificate.next_attempt_reason == REVOKED)
                & Certificate.revoked.is_(False),
                # a hold on the CA or above it lifted since, or the CA deleted
                (Certificate.next_attempt_reason == CA_CANNOT_SIGN)
                & or_(
                    Certificate.signedby_id.is_(None),
                    Certificate.signedby_id.in_(able),
                ),
            ),
            Certificate.revoked.is_(True)
            & or_(
                Certificate.next_attempt_reason.is_(None),
                Certificate.next_attempt_reason != REVOKED,
            ),
            # Only rows that cannot be ACME ones: for those, plan_row surely
            # takes the time away, so that they do not come back every tick.
            Certificate.next_attempt_at.is_not(None)
            & Certificate.revoked.is_(False)
            & Certificate.acme_account_id.is_(None)
            & Certificate.signedby_id.in_(unable),
        ),
    )


# What certificate.renewal_plan reads of every certificate.
_PLAN_COLUMNS = (
    *_ARI_COLUMNS,
    Certificate.name,
    Certificate.next_attempt_at,
    Certificate.next_attempt_reason,
    Certificate.failure_count,
    Certificate.last_attempt_at,
    Certificate.last_error,
    Certificate.retry_not_before,
    Certificate.ari_window_start,
    Certificate.ari_window_end,
    Certificate.renew_days,
    Certificate.reuse_key,
    Certificate.renewing_node,
    Certificate.renewal_lease_until,
)
# How long stop() lets a running tick or scan reach its next batch.
STOP_GRACE_SECONDS = 5.0
# Certificates planned per transaction by the scan and the tick.
_SCAN_BATCH = 500

# APScheduler logs every run at INFO; with a tick every few seconds that would
# drown the daemon's own log lines.
logging.getLogger("apscheduler").setLevel(logging.WARNING)

# An expiry event is raised at most this often for one certificate or CA.
EXPIRY_EVENT_INTERVAL = timedelta(days=1)

# In ``RenewalEngine.active``: a renewal accepted, its job not yet submitted.
ACCEPTED = 0
# An accepted renewal whose job never appeared (its submission failed) stops
# holding the certificate after this many seconds.
ACCEPTED_STALE_AFTER = 60.0
RENEW_METHOD = "certificate.renew"


class Limiter:
    """A semaphore whose size can change while it is in use (on reload)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._changed = asyncio.Condition()

    @property
    def free(self) -> int:
        return max(self.limit - self.used, 0)

    async def set_limit(self, limit: int) -> None:
        async with self._changed:
            self.limit = limit
            self._changed.notify_all()

    async def __aenter__(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.used < self.limit)
            self.used += 1

    async def __aexit__(self, *exc: object) -> None:
        async with self._changed:
            self.used -= 1
            self._changed.notify_all()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _certificate_of(job: Job) -> int | None:
    arguments = job.arguments if isinstance(job.arguments, dict) else {}
    certificate_id = arguments.get("id")
    return certificate_id if isinstance(certificate_id, int) else None


class RenewalEngine:
    """Owns the scheduler and starts renewal and deploy jobs."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.renewer = Renewer(daemon)
        self.ari: AriClient | None = None
        self.scheduler: AsyncIOScheduler | None = None
        # certificate id -> id of the job renewing or deploying it; ACCEPTED
        # from the moment a renewal is accepted until its job is known
        self.active: dict[int, int] = {}
        self.deploying: dict[int, int] = {}
        self._accepted_at: dict[int, float] = {}
        # renewal jobs whose body has started, so their end releases only
        # their own mark
        self._started: set[int] = set()
        daemon.jobs.add_listener(self._on_job)
        self.slots = Limiter(daemon.config.renewal.max_concurrent)
        self.last_scan_at: datetime | None = None
        self.last_tick_at: datetime | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False

    @property
    def config(self) -> Config:
        return self.daemon.config

    @property
    def running(self) -> bool:
        return self.scheduler is not None and self.scheduler.running

    def settings(self) -> PolicySettings:
        return PolicySettings.from_config(self.config.renewal)

    # --- life cycle -------------------------------------------------------------

    async def start(self) -> None:
        """Resume interrupted renewals, then start the loop if renewal is enabled."""
        assert self.daemon.http is not None
        self.ari = AriClient(self.daemon.http)
        await self.daemon.deployer.adopt()
        await self.resume_interrupted()
        if self.config.renewal.enabled:
            self._start_scheduler()

    def _start_scheduler(self) -> None:
        renewal = self.config.renewal
        scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.add_listener(self._on_submitted, EVENT_JOB_SUBMITTED)
        now = datetime.now(UTC)
        common: dict[str, Any] = {
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": None,
        }
        scheduler.add_job(
            self._tracked(self.scan),
            "interval",
            seconds=renewal.scan_interval,
            id="scan",
            next_run_time=now,
            **common,
        )
        scheduler.add_job(
            self._tracked(self.tick),
            "interval",
            seconds=renewal.tick_interval,
            id="tick",
            next_run_time=now + timedelta(seconds=min(renewal.tick_interval, 0.5)),
            **common,
        )
        scheduler.start()
        self.scheduler = scheduler
        self.daemon.metrics.scheduler_running.set(1)
        log.info(
            "renewal_scheduler_started",
            scan_interval=renewal.scan_interval,
            tick_interval=renewal.tick_interval,
            max_concurrent=renewal.max_concurrent,
        )

    def _tracked(
        self, run: Callable[[], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        """Wrap a scheduled run so that stop() can cancel it and errors are logged."""

        async def runner() -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await run()
            except asyncio.CancelledError:
                if self._stopping or self.scheduler is None:
                    return  # stopped or switched off; nothing went wrong
                raise
            except Exception:
                # a broken run must not stop the loop: the next one tries again
                log.exception("scheduled_run_crashed", run=run.__name__)
            finally:
                self._tasks.discard(task)

        runner.__name__ = run.__name__
        return runner

    def _on_submitted(self, event: JobSubmissionEvent) -> None:
        if event.scheduled_run_times:
            lag = datetime.now(UTC) - event.scheduled_run_times[0]
            self.daemon.metrics.scheduler_lag.set(max(lag.total_seconds(), 0.0))

    async def stop(self) -> None:
        self._stopping = True
        await self._halt_scheduler()

    async def _halt_scheduler(self) -> None:
        """Start no more runs, and let the running ones end before they are cancelled.

        A tick or scan stops by itself at its next batch when the daemon
        stops; cancelled inside a transaction it would leave its connection
        to be torn down later, after the store is closed. APScheduler's
        shutdown cancels the runs at once, so it comes only after the grace.
        """
        scheduler, self.scheduler = self.scheduler, None
        self.daemon.metrics.scheduler_running.set(0)
        if scheduler is not None:
            scheduler.pause()
        running = list(self._tasks)
        if running:
            await asyncio.wait(running, timeout=STOP_GRACE_SECONDS)
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def reconfigure(self) -> None:
        """Apply a reloaded config: intervals, concurrency, on or off."""
        renewal = self.config.renewal
        await self.slots.set_limit(renewal.max_concurrent)
        if not renewal.enabled:
            if self.scheduler is not None:
                await self._halt_scheduler()
                log.info("renewal_scheduler_stopped")
            return
        if self.scheduler is None:
            self._start_scheduler()
            return
        self.scheduler.reschedule_job(
            "scan", trigger="interval", seconds=renewal.scan_interval
        )
        self.scheduler.reschedule_job(
            "tick", trigger="interval", seconds=renewal.tick_interval
        )
        # plans depend on renew_days, jitter and the rest: redo them now
        self.scheduler.modify_job("scan", next_run_time=datetime.now(UTC))

    def wake(self) -> None:
        """Run the tick now (after something changed that may make work due)."""
        if self.scheduler is not None:
            self.scheduler.modify_job("tick", next_run_time=datetime.now(UTC))

    # --- jobs -------------------------------------------------------------------

    def check_idle(self, certificate_id: int, name: str | None = None) -> None:
        """Raises ConflictError while a renewal of the certificate is accepted or runs."""
        self._drop_stale(certificate_id)
        holder = self.active.get(certificate_id)
        if holder is None:
            return
        what = name or f"certificate {certificate_id}"
        if holder == ACCEPTED:
            raise ConflictError(
                f"a renewal of {what} was just accepted and is starting; "
                "wait for it or abort it"
            )
        raise ConflictError(
            f"a renewal of {what} is already running as job {holder}; "
            "wait for it or abort it"
        )

    def accept(self, certificate_id: int, name: str | None = None) -> None:
        """Mark a renewal of the certificate as started, or refuse a second one.

        Checking and marking happen with no await in between, so of many
        calls at once exactly one is accepted; the mark is released when the
        renewal's job ends, however it ends.

        Raises:
            ConflictError: a renewal of the certificate is accepted or running.
        """
        self.check_idle(certificate_id, name)
        self.active[certificate_id] = ACCEPTED
        self._accepted_at[certificate_id] = time.monotonic()

    def _release(self, certificate_id: int, holder: int) -> None:
        if self.active.get(certificate_id) == holder:
            del self.active[certificate_id]
            self._accepted_at.pop(certificate_id, None)

    def _drop_stale(self, certificate_id: int) -> None:
        if self.active.get(certificate_id) != ACCEPTED:
            return
        age = time.monotonic() - self._accepted_at.get(certificate_id, 0.0)
        if age < ACCEPTED_STALE_AFTER:
            return
        if any(
            job.method == RENEW_METHOD and _certificate_of(job) == certificate_id
            for job in self.daemon.jobs.running.values()
        ):
            return  # submitted, waiting for a job slot
        log.warning("renewal_mark_dropped", certificate_id=certificate_id)
        self._release(certificate_id, ACCEPTED)

    def _on_job(self, job: Job) -> None:
        """Release a renewal's mark when its job ends, even if it never started."""
        if job.method != RENEW_METHOD or not job.done.is_set():
            return
        certificate_id = _certificate_of(job)
        if certificate_id is None:
            return
        self._release(certificate_id, job.id)
        if job.id in self._started:
            self._started.discard(job.id)
        else:
            # ended before its body ran (aborted while waiting): the mark
            # taken when it was accepted is its own
            self._release(certificate_id, ACCEPTED)

    async def run_renewal(
        self, job: Job, certificate_id: int, trigger: str
    ) -> dict[str, Any]:
        """The body of a renewal job: wait for a slot, then renew."""
        self._started.add(job.id)
        self.active[certificate_id] = job.id
        self._accepted_at.pop(certificate_id, None)
        try:
            if self.slots.free == 0:
                await job.set_progress(0, "waiting for a free renewal slot")
            async with self.slots:
                self.daemon.metrics.renewals_running.inc()
                try:
                    return await self.renewer.renew(job, certificate_id, trigger)
                finally:
                    self.daemon.metrics.renewals_running.dec()
        finally:
            self._release(certificate_id, job.id)

    async def submit_renewal(self, certificate_id: int, trigger: str) -> Job:
        """Start a renewal job as the scheduler (not a caller) does."""
        self.accept(certificate_id)
        try:
            job = await self.daemon.jobs.submit(
                RENEW_METHOD,
                {"id": certificate_id, "trigger": trigger},
                lambda job: self.run_renewal(job, certificate_id, trigger),
                caller="scheduler",
            )
        except BaseException:
            self._release(certificate_id, ACCEPTED)
            raise
        # set before the job's task first runs, so the next tick sees it
        if self.active.get(certificate_id) == ACCEPTED:
            self.active[certificate_id] = job.id
            self._accepted_at.pop(certificate_id, None)
        return job

    async def run_deploy(self, job: Job, certificate_id: int, reason: str) -> Any:
        """A deployment job's body: FAILED, naming what failed, unless it all went."""
        self.deploying[certificate_id] = job.id
        try:
            await job.set_progress(10, "writing files and running hooks")
            state = await self.daemon.deployer.deploy(certificate_id, reason=reason)
            if not state.get("ok"):
                async with self.daemon.db.session() as session:
                    row = await session.get(Certificate, certificate_id)
                error = failure(row.name if row else str(certificate_id), state)
                if error is not None:
                    raise error
            return state
        finally:
            if self.deploying.get(certificate_id) == job.id:
                del self.deploying[certificate_id]

    async def submit_deploy(self, certificate_id: int, reason: str) -> Job:
        job = await self.daemon.jobs.submit(
            "certificate.deploy",
            {"id": certificate_id, "reason": reason},
            lambda job: self.run_deploy(job, certificate_id, reason),
            caller="scheduler",
        )
        self.deploying[certificate_id] = job.id
        return job

    async def resume_interrupted(self) -> int:
        """Start a job for every renewal a previous process left open."""
        async with self.daemon.db.session() as session:
            ids = (
                await session.scalars(
                    select(RenewalAttempt.certificate_id)
                    .join(Certificate, Certificate.id == RenewalAttempt.certificate_id)
                    .where(
                        RenewalAttempt.state.in_(OPEN_STATES),
                        # another daemon sharing the store is renewing it now
                        ~leased_elsewhere(self.daemon.node, utcnow()),
                    )
                    .distinct()
                )
            ).all()
        for certificate_id in ids:
            if certificate_id not in self.active:
                log.info("interrupted_renewal_resuming", certificate_id=certificate_id)
                await self.submit_renewal(certificate_id, "resume")
        return len(ids)

    # --- the tick ---------------------------------------------------------------

    async def tick(self) -> None:
        """Plan new certificates, then start due renewals and owed deployments."""
        if self._stopping:
            return
        now = utcnow()
        self.last_tick_at = now
        settings = self.settings()
        async with self.daemon.db.session() as session:
            # Whether a CA can sign depends on the CAs above it and on the
            # clock (expiry), which SQL cannot tell: asked of the few CAs here.
            where = _unplanned(*signing_authorities(await all_signers(session), now))
            unplanned = list(
                (
                    await session.scalars(
                        select(Certificate.id).where(where).order_by(Certificate.id)
                    )
                ).all()
            )

        async def plan_new(
            session: Any, row: Certificate, signers: Signers
        ) -> list[Event]:
            new = row.next_attempt_reason is None
            staged = self.replan(session, row, signers, settings, now)
            event = self._change_event(session, row, new)
            return ([event] if event else []) + staged

        # Usually none or a few; a store filled by other means can bring
        # thousands, planned a batch per transaction as the scan does.
        if not await self._in_batches(unplanned, plan_new, where):
            return
        async with self.daemon.db.session() as session:
            due = (
                await session.scalars(
                    select(Certificate.id)
                    .where(
                        Certificate.next_attempt_at <= now,
                        Certificate.revoked.is_(False),
                        # Renewed by another daemon sharing the store. Two
                        # ticks racing both get here: the lease lets one
                        # renew and the other skip (Renewer.renew).
                        ~leased_elsewhere(self.daemon.node, now),
                    )
                    .order_by(Certificate.next_attempt_at)
                    .limit(self.config.renewal.max_concurrent + len(self.active))
                )
            ).all()
            owed = (
                await session.scalars(owed_here(self.daemon.deployer.node, now))
            ).all()

        for certificate_id in list(self.active):
            self._drop_stale(certificate_id)
        for certificate_id in due:
            # jobs waiting for a slot count too: the tick never piles them up
            if len(self.active) >= self.slots.limit:
                break
            if certificate_id not in self.active:
                await self.submit_renewal(certificate_id, "schedule")
        # A deployment writes this host's files and runs its hooks: every
        # daemon sharing the store deploys each certificate onto its own
        # host, owed and retried by its own deployment row (by node id).
        for certificate_id in owed:
            if certificate_id not in self.active | self.deploying:
                await self.submit_deploy(certificate_id, "retry")

    def stage_change(
        self,
        session: Any,
        row: Certificate,
        settings: Any = None,
        now: Any = None,
    ) -> Event | None:
        """Plan a certificate just stored, changed or revoked, and stage its event.

        Called in the transaction that makes the change, so the event is
        raised at once; the tick only catches rows that came in another way.
        Deliver the returned event once the transaction has committed.
        """
        new = row.next_attempt_reason is None
        plan_row(row, settings or self.settings(), now or utcnow())
        return self._change_event(session, row, new)

    def _change_event(self, session: Any, row: Certificate, new: bool) -> Event | None:
        if row.revoked:
            return self._revoked_event(session, row)
        if new:
            return self._issued_event(session, row)
        return None

    def replan(
        self,
        session: Any,
        row: Certificate,
        signers: Signers,
        settings: Any = None,
        now: Any = None,
    ) -> list[Event]:
        """Plan a certificate knowing the CA that signed it; stage what that changed.

        A certificate that had a next attempt and lost it to its CA (revoked,
        expired, without a key, deleted, or under a CA revoked or expired)
        raises ``certificate.renewal_blocked`` once:
        from then on it is not planned, so not tried, until the CA can sign.
        Deliver the returned events once the transaction has committed.
        """
        before = row.next_attempt_reason
        now = now or utcnow()
        plan_row(row, settings or self.settings(), now, signers)
        if row.next_attempt_at is not None or before in NOT_PLANNED:
            return []
        because = signer_problem(row, signers, now) or (
            not_renewable_because(row) if lost_its_ca(row) else None
        )
        if because is None:
            return []
        return [self._blocked_event(session, row, because)]

    def _blocked_event(self, session: Any, row: Certificate, because: str) -> Event:
        # logged once, as every event is, when it is delivered
        leaf = leaf_dates(row)
        return self.daemon.events.stage(
            session,
            "certificate.renewal_blocked",
            f"{row.name} will not be renewed: {because}",
            certificate_id=row.id,
            subject=row.name,
            data={
                "reason": row.next_attempt_reason,
                "because": because,
                "ca_id": row.signedby_id,
                "not_after": leaf.not_after.isoformat() if leaf else None,
            },
            severity="warning",
        )

    async def authority_changed(self, authority_id: int) -> None:
        """Plan again every certificate under a CA of ours (its revocation changed).

        Those of the CAs below it too: a hold on a root stops its
        intermediates' certificates as well.
        """
        async with self.daemon.db.session() as session:
            parents: dict[int, int | None] = {
                ca_id: parent_id
                for ca_id, parent_id in await session.execute(
                    select(CertificateAuthority.id, CertificateAuthority.signedby_id)
                )
            }
            below = _descendants(authority_id, parents)
            ids = list(
                (
                    await session.scalars(
                        select(Certificate.id)
                        .where(
                            Certificate.signedby_id.in_(below),
                            Certificate.cert_type == "CERTIFICATE",
                        )
                        .order_by(Certificate.id)
                    )
                ).all()
            )
        await self.replan_certificates(ids)

    async def replan_certificates(self, ids: list[int]) -> None:
        """Plan these certificates again now, with their CAs looked up."""
        settings, now = self.settings(), utcnow()

        async def again(
            session: Any, row: Certificate, signers: Signers
        ) -> list[Event]:
            if row.id in self.active:
                return []  # the renewal plans it when it ends
            return self.replan(session, row, signers, settings, now)

        await self._in_batches(ids, again)

    def _revoked_event(self, session: Any, row: Certificate) -> Event:
        return self.daemon.events.stage(
            session,
            "certificate.revoked",
            f"{row.name} was revoked"
            + (f" ({row.revoked_reason})" if row.revoked_reason else ""),
            certificate_id=row.id,
            subject=row.name,
            data={"reason": row.revoked_reason},
        )

    def _issued_event(self, session: Any, row: Certificate) -> Event:
        leaf = leaf_dates(row)
        data: dict[str, Any] = {"create_type": row.create_type}
        if leaf is not None:
            data["serial"] = leaf.serial
            data["not_after"] = leaf.not_after.isoformat()
        return self.daemon.events.stage(
            session,
            "certificate.issued",
            f"{row.name} was stored"
            + (f", valid until {data['not_after']}" if "not_after" in data else ""),
            certificate_id=row.id,
            subject=row.name,
            data=data,
        )

    # --- the scan ---------------------------------------------------------------

    async def scan(self) -> None:
        """Refresh ARI windows and every plan; raise expiry events; prune old events."""
        if self._stopping:
            return
        now = utcnow()
        self.last_scan_at = now
        renewal = self.config.renewal
        async with self.daemon.db.session() as session:
            ids = list(
                (
                    await session.scalars(
                        select(Certificate.id)
                        .where(Certificate.cert_type == "CERTIFICATE")
                        .order_by(Certificate.id)
                    )
                ).all()
            )
            ari = self.ari if renewal.ari else None
            due: list[int] = []
            if ari is not None:
                due = list(
                    (
                        await session.scalars(
                            select(Certificate.id).where(
                                Certificate.cert_type == "CERTIFICATE",
                                Certificate.acme_account_id.is_not(None),
                                or_(
                                    Certificate.ari_next_fetch_at.is_(None),
                                    Certificate.ari_next_fetch_at <= now,
                                ),
                            )
                        )
                    ).all()
                )
        windows: dict[int, Any] = {}
        for first in range(0, len(due), _SCAN_BATCH):
            if self._stopping:
                return
            # Plain rows of the columns the ARI step reads, a batch at a time:
            # the chains of every certificate at once would be megabytes.
            async with self.daemon.db.session() as session:
                rows: list[Any] = list(
                    await session.execute(
                        select(*_ARI_COLUMNS).where(
                            Certificate.id.in_(due[first : first + _SCAN_BATCH])
                        )
                    )
                )
            for row in rows:
                leaf = leaf_of(row) if renewal_kind(row) == "acme" else None
                if ari is not None and leaf is not None:
                    windows[row.id] = await ari.fetch(
                        row.acme_directory_uri or "",
                        leaf,
                        now,
                        timedelta(seconds=renewal.ari_fetch_interval),
                    )

        settings = self.settings()

        async def scan_row(
            session: Any, row: Certificate, signers: Signers
        ) -> list[Event]:
            return await self._scan_row(session, row, windows, signers, settings, now)

        if not await self._in_batches(ids, scan_row):
            return
        async with self.daemon.db.session() as session:
            staged = await self._ca_events(session, now)
        for event in staged:
            self.daemon.events.deliver(event)
        pruned = await self.daemon.events.prune(now, self.config.events.retention_days)
        log.info("renewal_scan_finished", certificates=len(ids), events_pruned=pruned)

    async def _in_batches(
        self,
        ids: list[int],
        plan: Callable[[Any, Certificate, Signers], Awaitable[list[Event]]],
        *where: Any,
    ) -> bool:
        """Run ``plan`` on the rows ``ids`` that still match ``where``.

        A batch of rows per transaction, read in one statement and written at
        the commit: the write lock is held for one flush at a time, never for
        a whole pass (API writes would wait past their timeout), and only a
        batch of ORM objects is alive at once. Our CAs (those that signed a
        batch and those above them) are read in one more statement and passed
        to ``plan`` with each row. The events a batch staged are delivered
        once it has committed. False when the engine began stopping.
        """
        for first in range(0, len(ids), _SCAN_BATCH):
            if self._stopping:
                return False
            staged: list[Event] = []
            async with self.daemon.db.session() as session:
                rows = (
                    await session.scalars(
                        select(Certificate)
                        .where(Certificate.id.in_(ids[first : first + _SCAN_BATCH]))
                        .where(*where)
                        .options(*_WITHOUT_SECRETS)
                        .order_by(Certificate.id)
                        # On PostgreSQL, where daemons may share the store: a
                        # renewal another one installs meanwhile waits for
                        # this batch, or is read by it; a plan made from the
                        # old certificate never lands over the new one's.
                        .with_for_update(of=Certificate)
                    )
                ).all()
                signers = await load_signers(session, {r.signedby_id for r in rows})
                with session.no_autoflush:
                    for row in rows:
                        staged += await plan(session, row, signers)
            for event in staged:
                self.daemon.events.deliver(event)
        return not self._stopping

    async def _scan_row(
        self,
        session: Any,
        current: Certificate,
        windows: dict[int, Any],
        signers: Signers,
        settings: Any,
        now: datetime,
    ) -> list[Event]:
        """Apply one row's fetched ARI window, plan it, stage its expiry events."""
        info = windows.get(current.id)
        if current.id in windows:
            current.ari_next_fetch_at = info.next_fetch_at if info is not None else None
            if info is not None and info.window is not None:
                current.ari_window_start = info.window.start
                current.ari_window_end = info.window.end
        staged: list[Event] = []
        if current.id not in self.active:
            staged = self.replan(session, current, signers, settings, now)
        return staged + await self._expiry_events(session, current, now)

    async def _recent_event(
        self,
        session: Any,
        kind: str,
        now: datetime,
        *,
        certificate_id: int | None = None,
        subject: str | None = None,
    ) -> bool:
        query = select(Event.id).where(
            Event.kind == kind, Event.created_at > now - EXPIRY_EVENT_INTERVAL
        )
        if certificate_id is not None:
            query = query.where(Event.certificate_id == certificate_id)
        if subject is not None:
            query = query.where(Event.subject == subject)
        return await session.scalar(query.limit(1)) is not None

    async def _expiry_events(
        self, session: Any, row: Certificate, now: datetime
    ) -> list[Event]:
        leaf = leaf_dates(row)
        if leaf is None or row.revoked:
            return []
        left = leaf.not_after - now
        warning = timedelta(days=self.config.renewal.expiry_warning_days)
        if left <= timedelta(0):
            kind, text = "certificate.expired", f"{row.name} expired at"
        elif left <= warning:
            kind, text = "certificate.expiring", f"{row.name} expires at"
        else:
            return []
        if await self._recent_event(session, kind, now, certificate_id=row.id):
            return []
        return [
            self.daemon.events.stage(
                session,
                kind,
                f"{text} {leaf.not_after.isoformat()}",
                certificate_id=row.id,
                subject=row.name,
                data={
                    "not_after": leaf.not_after.isoformat(),
                    "seconds_left": int(left.total_seconds()),
                    "next_attempt_at": _iso(row.next_attempt_at),
                    "last_error": row.last_error,
                },
            )
        ]

    async def _ca_events(self, session: Any, now: datetime) -> list[Event]:
        warning = timedelta(days=self.config.renewal.ca_warning_days)
        staged: list[Event] = []
        for ca in (await session.scalars(select(CertificateAuthority))).all():
            try:
                cert = x509.load_pem_x509_certificate(ca.certificate.encode())
            except ValueError:
                continue
            left = cert.not_valid_after_utc - now
            if left > warning:
                continue
            kind = "ca.expired" if left <= timedelta(0) else "ca.expiring"
            if await self._recent_event(session, kind, now, subject=ca.name):
                continue
            staged.append(
                self.daemon.events.stage(
                    session,
                    kind,
                    f"CA {ca.name} "
                    + ("expired" if left <= timedelta(0) else "expires")
                    + f" at {cert.not_valid_after_utc.isoformat()}; certificates it "
                    "signs cannot outlive it",
                    subject=ca.name,
                    data={
                        "ca_id": ca.id,
                        "not_after": cert.not_valid_after_utc.isoformat(),
                        "seconds_left": int(left.total_seconds()),
                    },
                )
            )
        return staged

    # --- the plan as the API shows it -----------------------------------------

    async def plan_entries(self, now: datetime) -> list[dict[str, Any]]:
        """When every certificate renews next and why."""
        settings = self.settings()

        def read(conn: Any) -> list[dict[str, Any]]:
            # Plain rows of the columns a plan reads, planned in the reading
            # thread a batch at a time, not every row as an ORM object at once.
            result = conn.execute(
                select(*_PLAN_COLUMNS)
                .where(Certificate.cert_type == "CERTIFICATE")
                .order_by(Certificate.id)
            )
            # whether our CAs can sign a renewal (see _plan_entry)
            signers = signers_from(conn.execute(select(*SIGNER_COLUMNS)))
            return [
                _plan_entry(row, signers, settings, now)
                for batch in result.partitions(_SCAN_BATCH)
                for row in batch
            ]

        entries = await self.daemon.db.read(read)
        for entry in entries:
            entry["job_id"] = self.active.get(entry["id"]) or None
        return entries


def _descendants(authority_id: int, parents: dict[int, int | None]) -> set[int]:
    """``authority_id`` and every CA below it, given each CA's parent."""
    children: dict[int | None, list[int]] = {}
    for ca_id, parent_id in parents.items():
        children.setdefault(parent_id, []).append(ca_id)
    found, todo = {authority_id}, [authority_id]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _plan_entry(
    row: Any, signers: Signers, settings: Any, now: datetime
) -> dict[str, Any]:
    kind = renewal_kind(row)
    leaf = leaf_dates(row)
    # A certificate of an imported CA without its key, or of a CA revoked,
    # expired or under one that is, is listed as internal but no renewal of
    # it can succeed: it is shown as the scheduler plans it, even before the
    # scheduler has.
    blocked = signer_problem(row, signers, now) is not None
    entry: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "kind": kind,
        "renewable": kind is not None and leaf is not None and not blocked,
        "not_before": _iso(leaf.not_before) if leaf else None,
        "not_after": _iso(leaf.not_after) if leaf else None,
        "next_attempt_at": None if blocked else _iso(row.next_attempt_at),
        "reason": CA_CANNOT_SIGN if blocked else row.next_attempt_reason,
        "window": None,
        "window_source": None,
        "due": False,
        "failure_count": row.failure_count,
        "last_attempt_at": _iso(row.last_attempt_at),
        "last_error": row.last_error,
        "retry_not_before": _iso(row.retry_not_before),
        "ari_window": {
            "start": _iso(row.ari_window_start),
            "end": _iso(row.ari_window_end),
        }
        if row.ari_window_start and row.ari_window_end
        else None,
        "reuse_key": row.reuse_key,
        "job_id": None,
        # the daemon sharing the store that renews it now, if any
        "renewing_node": lease_holder(row, now),
    }
    if entry["renewable"] and leaf is not None:
        facts = facts_for(row, leaf)
        window, source = renewal_window(facts, settings)
        result = plan(facts, settings, now)
        entry["window"] = {"start": _iso(window.start), "end": _iso(window.end)}
        entry["window_source"] = source
        if row.next_attempt_at is None:
            entry["next_attempt_at"] = _iso(result.at)
            entry["reason"] = result.reason
        at = row.next_attempt_at or result.at
        entry["due"] = at <= now
    return entry
