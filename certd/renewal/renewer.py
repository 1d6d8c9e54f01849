"""One renewal of one certificate, written down before each step it takes.

A renewal is a ``renewal_attempt`` row: the new key and CSR are stored before
anything is ordered, the order URL as soon as the CA created the order, and
the state ``finalizing`` just before the CSR is sent. The certificate row
itself changes only once, in the transaction that installs the new chain and
key. So after a crash at any point the certificate in use is intact, and the
next run of the renewal resumes the open attempt: an order the CA already
issued is fetched, never ordered again.

Daemons sharing one store take a lease on the certificate row before they
renew it (``renewing_node``, ``renewal_lease_until``) and extend it while the
renewal runs, so that only one of them renews a certificate at a time. A
lease rather than a PostgreSQL advisory lock: it needs no connection held
out of the pool for minutes, and one left by a daemon killed outright ends
by itself after LEASE_SECONDS (at once for that daemon's next start).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import or_, select, update

from certd.errors import (
    AcmeError,
    CertdError,
    ConflictError,
    NotFoundError,
    PkiError,
    ValidationError,
)
from certd.pki.extensions import crl_url, serial_hex
from certd.pki.keys import load_stored_private_key, public_key_der
from certd.renewal.checkpoints import checkpoint
from certd.renewal.issuance import IssuedChain
from certd.renewal.planning import (
    cannot_renew,
    leaf_dates,
    leaf_of,
    load_signers,
    renewal_kind,
    renewal_refusal,
    signer_problem,
)
from certd.renewal.policy import PolicySettings
from certd.renewal.rekey import new_key_and_csr, renewal_csr
from certd.store.models import (
    Certificate,
    CertificateAuthority,
    RenewalAttempt,
    utcnow,
)

if TYPE_CHECKING:
    from certd.acme.client import AcmeClient, Order
    from certd.api.jobs import Job
    from certd.service import Daemon

log = structlog.get_logger(__name__)

OPEN_STATES = ("running", "finalizing")
# How long a renewal lease holds unless its daemon extends it, which it does
# every third of this while the renewal runs: the longest a daemon killed
# mid-renewal keeps the others from renewing the certificate.
LEASE_SECONDS = 300.0


@dataclass(frozen=True)
class AttemptView:
    """The parts of an attempt row a renewal reads (rows are not shared across sessions)."""

    id: int
    state: str
    privatekey: str
    csr: str
    replaces: str | None
    order_url: str | None
    resumed: bool


def _attempt_view(row: RenewalAttempt, resumed: bool) -> AttemptView:
    return AttemptView(
        row.id,
        row.state,
        row.privatekey or "",
        row.csr or "",
        row.replaces,
        row.order_url,
        resumed,
    )


class CannotSign(PkiError):
    """The certificate's CA, or one above it, stopped being able to sign.

    Found during a renewal (a hold put on after it was accepted): a refusal
    like the one before the job, so no failure is counted against the
    certificate.
    """


class RenewingElsewhere(ConflictError):
    """Another daemon sharing the store holds the certificate's renewal lease."""

    def __init__(self, name: str, node: str) -> None:
        super().__init__(
            f"a renewal of {name} is already running: it is being renewed by "
            f"another daemon (node {node}); wait for it",
            retryable=True,
        )
        self.node = node


def lease_holder(row: Any, now: datetime) -> str | None:
    """The node whose unexpired renewal lease ``row`` (a certificate) carries."""
    lease = row.renewal_lease_until
    return row.renewing_node if lease is not None and lease > now else None


def leased_elsewhere(node: str | None, now: Any) -> Any:
    """SQL: the certificate's renewal lease is held, unexpired, by another node."""
    if node is None:
        return Certificate.renewing_node.is_not(None) & (
            Certificate.renewal_lease_until > now
        )
    return (
        Certificate.renewing_node.is_not(None)
        & (Certificate.renewing_node != node)
        & (Certificate.renewal_lease_until > now)
    )


def _skipped(row: Certificate) -> dict[str, Any]:
    """The result of a renewal found not to be needed here (renewed or renewing)."""
    leaf = leaf_dates(row)
    return {
        "id": row.id,
        "name": row.name,
        "serial": leaf.serial if leaf else "",
        "resumed": False,
        "deployed": None,
        "skipped": True,
    }


class Renewer:
    """Renews certificates; one renewal per certificate at a time."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    def settings(self) -> PolicySettings:
        return PolicySettings.from_config(self.daemon.config.renewal)

    async def renew(
        self, job: Job, certificate_id: int, trigger: str
    ) -> dict[str, Any]:
        """Renew one certificate (or finish its interrupted renewal); return the result.

        Raises:
            NotFoundError: no such certificate.
            ValidationError: the certificate cannot be renewed (a CSR, an
                imported or revoked certificate, or one whose CA cannot sign).
            AcmeError, DNSProviderError, DNSPropagationError, PkiError: the
                renewal failed; the failure is recorded on the certificate.
        """
        async with self._locks[certificate_id]:
            holder = await self._take_lease(certificate_id)
            if holder is not None:
                return await self._renewing_elsewhere(certificate_id, holder, trigger)
            try:
                return await self._renew_leased(job, certificate_id, trigger)
            finally:
                await asyncio.shield(self._release_lease(certificate_id))

    async def _renew_leased(
        self, job: Job, certificate_id: int, trigger: str
    ) -> dict[str, Any]:
        async with self._extending_lease(certificate_id):
            async with self.daemon.db.session() as session:
                row = await session.get(Certificate, certificate_id)
                if row is None:
                    raise NotFoundError("certificate", certificate_id)
                signers = await load_signers(session, [row.signedby_id])
            kind = renewal_kind(row)
            message = renewal_refusal(row, signers)
            if kind is None or message is not None:
                # Found due but no longer renewable (its CA was deleted or
                # revoked, say): planned again, so that the tick stops picking
                # it up, and no failure is counted for what was never tried.
                assert message is not None  # a row of no kind always has a reason
                await self._replan(
                    certificate_id, message if kind == "internal" else None
                )
                raise ValidationError.single("id", message)
            bound = structlog.contextvars.bind_contextvars(certificate=row.name)
            try:
                if trigger == "schedule" and not await self._still_due(row):
                    # the tick read a plan that a renewal finishing meanwhile
                    # has moved on; renewing again would only waste an order
                    log.info(
                        "renewal_no_longer_due", next_attempt_at=row.next_attempt_at
                    )
                    return _skipped(row)
                return await self._renew(job, row, kind, trigger)
            finally:
                structlog.contextvars.reset_contextvars(**bound)

    # --- the lease among daemons sharing the store ------------------------------

    async def _take_lease(self, certificate_id: int) -> str | None:
        """Take or extend this daemon's renewal lease; None, or the node holding it.

        One conditional UPDATE: of daemons trying at once, PostgreSQL lets
        one through and makes the others wait for its commit, then finds
        their condition false. A lease this node holds is taken back (a
        renewal its earlier run left open), one expired is taken over.
        """
        node = self.daemon.node
        if node is None:
            return None  # not started as a daemon: nothing shares the store
        taken = or_(
            Certificate.renewing_node.is_(None),
            Certificate.renewing_node == node,
            Certificate.renewal_lease_until.is_(None),
        )
        # Tried again only when the holder let go between the two statements.
        for _ in range(3):
            now = utcnow()
            async with self.daemon.db.session() as session:
                result = await session.execute(
                    update(Certificate)
                    .where(
                        Certificate.id == certificate_id,
                        or_(taken, Certificate.renewal_lease_until <= now),
                    )
                    .values(**self._lease_values(node, now))
                    .execution_options(synchronize_session=False)
                )
                if getattr(result, "rowcount", 0) == 1:
                    return None
                found = (
                    await session.execute(
                        select(Certificate.id, Certificate.renewing_node).where(
                            Certificate.id == certificate_id
                        )
                    )
                ).one_or_none()
            if found is None:
                return None  # no such certificate: renewing it says so
            if found.renewing_node is not None:
                return str(found.renewing_node)
        return "unknown"

    @staticmethod
    def _lease_values(node: str | None, now: Any) -> dict[str, Any]:
        return {
            "renewing_node": node,
            "renewal_lease_until": now + timedelta(seconds=LEASE_SECONDS)
            if node is not None
            else None,
            # the lease is no change to the certificate
            "updated_at": Certificate.updated_at,
        }

    async def _release_lease(self, certificate_id: int) -> None:
        node = self.daemon.node
        if node is None:
            return
        try:
            async with self.daemon.db.session() as session:
                await session.execute(
                    update(Certificate)
                    .where(
                        Certificate.id == certificate_id,
                        Certificate.renewing_node == node,
                    )
                    .values(**self._lease_values(None, None))
                    .execution_options(synchronize_session=False)
                )
        except Exception as exc:
            # It expires by itself, and this node takes it back at once.
            log.warning(
                "renewal_lease_kept",
                certificate_id=certificate_id,
                error=str(exc) or type(exc).__name__,
            )

    @contextlib.asynccontextmanager
    async def _extending_lease(self, certificate_id: int) -> AsyncIterator[None]:
        """Extend this daemon's lease now and then while the body runs."""
        node = self.daemon.node
        if node is None:
            yield
            return

        async def extend() -> None:
            while True:
                await asyncio.sleep(LEASE_SECONDS / 3)
                try:
                    async with self.daemon.db.session() as session:
                        result = await session.execute(
                            update(Certificate)
                            .where(
                                Certificate.id == certificate_id,
                                Certificate.renewing_node == node,
                            )
                            .values(**self._lease_values(node, utcnow()))
                            .execution_options(synchronize_session=False)
                        )
                    if getattr(result, "rowcount", 0) != 1:
                        # Installing checks the lease again and gives up.
                        log.warning("renewal_lease_lost", certificate_id=certificate_id)
                        return
                except Exception as exc:
                    log.warning(
                        "renewal_lease_not_extended",
                        certificate_id=certificate_id,
                        error=str(exc) or type(exc).__name__,
                    )

        task = asyncio.create_task(extend(), name=f"renewal-lease-{certificate_id}")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _renewing_elsewhere(
        self, certificate_id: int, holder: str, trigger: str
    ) -> dict[str, Any]:
        """A renewal another daemon holds the lease for: refused if asked, else skipped."""
        async with self.daemon.db.session() as session:
            row = await session.get(Certificate, certificate_id)
        if row is None:
            raise NotFoundError("certificate", certificate_id)
        if trigger == "manual":
            raise RenewingElsewhere(row.name, holder)
        # not a failure: the other daemon renews it, and plans it when done
        log.info("renewal_skipped_elsewhere", certificate=row.name, node=holder)
        return _skipped(row)

    async def _replan(self, certificate_id: int, close_attempts: str | None) -> None:
        """Plan a certificate again with its CA looked up, and raise what that stages.

        With ``close_attempts``, an open attempt is closed as failed with that
        error: a renewal by a CA of ours leaves nothing issued elsewhere to
        fetch later, and an open attempt would be resumed at every start.
        """
        now = utcnow()
        async with self.daemon.db.session() as session:
            current = await session.get(Certificate, certificate_id)
            if current is None:
                return
            if close_attempts is not None:
                for attempt in (
                    await session.scalars(
                        select(RenewalAttempt).where(
                            RenewalAttempt.certificate_id == certificate_id,
                            RenewalAttempt.state.in_(OPEN_STATES),
                        )
                    )
                ).all():
                    attempt.state, attempt.error = "failed", close_attempts
                    attempt.privatekey, attempt.finished_at = None, now
            signers = await load_signers(session, [current.signedby_id])
            staged = self.daemon.renewal.replan(
                session, current, signers, self.settings(), now
            )
        for event in staged:
            self.daemon.events.deliver(event)

    async def _still_due(self, row: Certificate) -> bool:
        if row.next_attempt_at is not None and row.next_attempt_at <= utcnow():
            return True
        async with self.daemon.db.session() as session:
            open_attempt = await session.scalar(
                select(RenewalAttempt.id).where(
                    RenewalAttempt.certificate_id == row.id,
                    RenewalAttempt.state.in_(OPEN_STATES),
                )
            )
        return open_attempt is not None

    async def _renew(
        self, job: Job, row: Certificate, kind: str, trigger: str
    ) -> dict[str, Any]:
        started = time.monotonic()
        await job.set_progress(2, f"renewing {row.name}")
        attempt: AttemptView | None = None
        try:
            attempt = await self._open_attempt(job, row, kind, trigger)
            await checkpoint("attempt_recorded", job)
            if kind == "acme":
                issued = await self._renew_acme(job, row, attempt)
            else:
                issued = await self._renew_internal(job, row, attempt)
            await job.set_progress(92, "storing the new certificate")
            serial = await self._install(row, attempt, issued)
        except asyncio.CancelledError:
            if self.daemon.started:
                # aborted by a caller: back off like a failure, but keep the
                # attempt open, since the CA may have issued already
                await asyncio.shield(
                    self._record_failure(row, attempt, "aborted", None, keep_open=True)
                )
            raise
        except CannotSign as exc:
            await self._replan(row.id, exc.message)
            raise
        except RenewingElsewhere:
            raise  # no failure of this certificate: another daemon renews it
        except Exception as exc:
            message = (
                exc.message
                if isinstance(exc, CertdError)
                else f"internal error ({type(exc).__name__}); see the daemon log"
            )
            if not isinstance(exc, CertdError):
                log.exception("renewal_crashed")
            retry_after = exc.retry_after if isinstance(exc, AcmeError) else None
            await self._record_failure(row, attempt, message, retry_after)
            self.daemon.metrics.renewals.labels("failure").inc()
            self.daemon.metrics.renewal_duration.observe(time.monotonic() - started)
            raise
        self.daemon.metrics.renewals.labels("success").inc()
        self.daemon.metrics.renewal_duration.observe(time.monotonic() - started)
        await checkpoint("installed", job)

        deploy: dict[str, Any] | None = None
        if row.deploy:
            await job.set_progress(95, "deploying")
            try:
                deploy = await self.daemon.deployer.deploy(row.id, reason="renewed")
            except Exception:
                # the deployer records its own failures and retries; the
                # renewal itself has succeeded and stays so
                log.exception("deploy_after_renewal_crashed")
        return {
            "id": row.id,
            "name": row.name,
            "serial": serial,
            "resumed": attempt is not None and attempt.resumed,
            "deployed": None if deploy is None else bool(deploy.get("ok")),
        }

    # --- the attempt row ------------------------------------------------------

    async def _open_attempt(
        self, job: Job, row: Certificate, kind: str, trigger: str
    ) -> AttemptView:
        async with self.daemon.db.session() as session:
            current = await session.scalar(
                select(RenewalAttempt)
                .where(
                    RenewalAttempt.certificate_id == row.id,
                    RenewalAttempt.state.in_(OPEN_STATES),
                )
                .order_by(RenewalAttempt.id.desc())
                .limit(1)
            )
            if current is not None:
                current.job_id = job.id
                log.info(
                    "renewal_resumed",
                    attempt_id=current.id,
                    state=current.state,
                    order_url=current.order_url,
                )
                return _attempt_view(current, resumed=True)

        await job.set_progress(5, "preparing the key and CSR")
        if not row.privatekey:
            raise PkiError(f"{row.name!r} has no private key stored with it")
        if row.reuse_key:
            key_pem = row.privatekey
            csr_pem = row.csr or renewal_csr(
                load_stored_private_key(key_pem), None, row.certificate or ""
            )
        else:
            key_pem, csr_pem = await new_key_and_csr(
                self.daemon.workers, row.privatekey, row.csr, row.certificate or ""
            )
        replaces = await self._replaces(row) if kind == "acme" else None
        leaf = leaf_dates(row)
        async with self.daemon.db.session() as session:
            attempt = RenewalAttempt(
                certificate_id=row.id,
                job_id=job.id,
                state="running",
                trigger=trigger,
                privatekey=key_pem,
                csr=csr_pem,
                replaces=replaces,
                old_serial=leaf.serial if leaf else None,
                started_at=utcnow(),
            )
            session.add(attempt)
            await session.flush()
            log.info(
                "renewal_attempt_recorded",
                attempt_id=attempt.id,
                new_key=not row.reuse_key,
                replaces=replaces,
            )
            return _attempt_view(attempt, resumed=False)

    async def _update_attempt(self, attempt_id: int, **values: Any) -> None:
        async with self.daemon.db.session() as session:
            row = await session.get(RenewalAttempt, attempt_id)
            if row is not None:
                for name, value in values.items():
                    setattr(row, name, value)

    async def _replaces(self, row: Certificate) -> str | None:
        """The ARI id of the certificate being replaced, when its CA speaks ARI."""
        if not self.daemon.config.renewal.ari or self.daemon.renewal.ari is None:
            return None
        from certd.renewal.ari import cert_id

        leaf = leaf_of(row)
        if leaf is None:
            return None
        try:
            url = await self.daemon.renewal.ari.renewal_info_url(
                row.acme_directory_uri or ""
            )
        except Exception as exc:
            log.warning("renewal_info_unavailable", error=str(exc) or repr(exc))
            return None
        return cert_id(leaf) if url else None

    # --- ACME -----------------------------------------------------------------

    def _progress(self, job: Job) -> Any:
        """Issuance progress, passed on, timed and turned into checkpoints."""
        published_at: list[float] = []

        async def progress(percent: float, description: str) -> None:
            await job.set_progress(10 + percent * 0.8, description)
            if percent == 40:
                published_at.append(time.monotonic())
                await checkpoint("txt_published", job)
            elif percent == 60 and published_at:
                self.daemon.metrics.dns_propagation.observe(
                    time.monotonic() - published_at[-1]
                )
            elif percent == 90:
                await checkpoint("finalized", job)

        return progress

    async def _renew_acme(
        self, job: Job, row: Certificate, attempt: AttemptView
    ) -> IssuedChain:
        progress = self._progress(job)
        if attempt.order_url is not None:
            resumed = await self._resume_order(job, row, attempt)
            if resumed is not None:
                return resumed

        order_created = False

        async def on_order(url: str) -> None:
            nonlocal order_created
            order_created = True
            async with self.daemon.db.session() as session:
                stored = await session.get(RenewalAttempt, attempt.id)
                if stored is not None:
                    stored.order_url = url
                    stored.order_count += 1
                    stored.state = "running"
            await checkpoint("order_created", job)

        async def before_finalize(url: str) -> None:
            await self._update_attempt(attempt.id, state="finalizing")

        async def issue(replaces: str | None) -> IssuedChain:
            return await self.daemon.issuer.issue(
                csr_pem=attempt.csr,
                directory=row.acme_directory_uri or "",
                dns_mapping=dict(row.dns_mapping or {}),
                register=False,
                progress=progress,
                job_id=job.id,
                replaces=replaces,
                on_order=on_order,
                before_finalize=before_finalize,
                preferred_chain=row.acme_preferred_chain,
            )

        try:
            return await issue(attempt.replaces)
        except AcmeError as exc:
            if attempt.replaces is None or order_created:
                raise
            # RFC 9773 §5: a CA may refuse "replaces" (already replaced, not
            # known to it); the renewal must not fail for that
            log.warning("replaces_refused", error=exc.message)
            await self._update_attempt(attempt.id, replaces=None)
            return await issue(None)

    async def _resume_order(
        self, job: Job, row: Certificate, attempt: AttemptView
    ) -> IssuedChain | None:
        """What the earlier order of this attempt produced; None to order again.

        An order that was never finalized (or that the CA no longer knows) is
        let go: without a finalize it issued nothing. One that is ready is
        finalized now, one that is processing is waited for, and a valid one
        is downloaded: the CA issued it, so it is used.
        """
        assert attempt.order_url is not None
        await job.set_progress(10, f"looking up the earlier order {attempt.order_url}")
        client, account_id = await self.daemon.issuer.client(
            row.acme_directory_uri or "", register=False
        )
        try:
            order = await client.order(attempt.order_url)
        except AcmeError as exc:
            if exc.retryable:
                raise
            log.warning("earlier_order_gone", order_url=attempt.order_url)
            return None
        log.info("earlier_order_found", order_url=order.url, status=order.status)
        if order.status == "ready":
            await self._update_attempt(attempt.id, state="finalizing")
            await job.set_progress(80, "finalizing the earlier order")
            csr = x509.load_pem_x509_csr(attempt.csr.encode())
            order = await client.finalize(
                order, csr.public_bytes(serialization.Encoding.DER)
            )
        elif order.status == "processing":
            order = await self._wait_processing(client, order)
        if order.status != "valid" or order.certificate_url is None:
            return None
        await checkpoint("finalized", job)
        await job.set_progress(90, "downloading the certificate of the earlier order")
        fullchain, alternates = await client.download(order.certificate_url)
        if row.acme_preferred_chain:
            fullchain = await client.select_chain(
                fullchain, alternates, row.acme_preferred_chain
            )
        return IssuedChain(fullchain, order.url, account_id, alternates)

    async def _wait_processing(self, client: AcmeClient, order: Order) -> Order:
        policy = self.daemon.issuer.poll_policy()
        deadline = time.monotonic() + policy.timeout
        interval = policy.initial
        while order.status == "processing":
            if time.monotonic() > deadline:
                raise AcmeError(
                    f"order {order.url} is still processing after {policy.timeout:g} s",
                    retryable=True,
                )
            await asyncio.sleep(interval)
            interval = policy.next_interval(interval)
            order = await client.order(order.url)
        return order

    # --- certificates signed by certd's own CAs ---------------------------------

    async def _renew_internal(
        self, job: Job, row: Certificate, attempt: AttemptView
    ) -> IssuedChain:
        from certd.renewal.resign import resign

        now = utcnow()
        async with self.daemon.db.session() as session:
            ca = await session.get(CertificateAuthority, row.signedby_id)
            # Asked again here, with the CAs above it: one may have been put
            # on hold since the renewal was accepted.
            signers = await load_signers(session, [row.signedby_id])
        problem = signer_problem(row, signers, now)
        if problem is not None:
            raise CannotSign(cannot_renew(row.name, problem))
        if ca is None or not ca.privatekey:
            raise PkiError(
                f"the CA that signed {row.name!r} is gone or has no private key"
            )
        await job.set_progress(50, f"signing with CA {ca.name!r}")
        base_url = self.daemon.config.pki.crl_base_url
        fullchain = resign(
            row.certificate or "",
            attempt.csr,
            ca.certificate,
            ca.privatekey,
            now=now,
            crl_url=crl_url(base_url, ca.id) if base_url else None,
        )
        return IssuedChain(fullchain, "", 0, [])

    # --- the outcome ------------------------------------------------------------

    async def _install(
        self, row: Certificate, attempt: AttemptView, issued: IssuedChain
    ) -> str:
        """Replace the certificate and its key in one transaction; return the serial."""
        leaf = x509.load_pem_x509_certificate(issued.fullchain_pem.encode())
        key = load_stored_private_key(attempt.privatekey)
        if public_key_der(leaf.public_key()) != public_key_der(key):  # type: ignore[arg-type]
            raise PkiError(
                "the new certificate is not for the renewal's key; the current "
                "certificate is kept"
            )
        serial = serial_hex(leaf.serial_number)
        now = utcnow()
        async with self.daemon.db.session() as session:
            # Locked on PostgreSQL until the commit: a daemon sharing the
            # store that plans or takes over the row meanwhile waits for this.
            cert = await session.get(Certificate, row.id, with_for_update=True)
            stored = await session.get(RenewalAttempt, attempt.id)
            if cert is None or stored is None:
                raise NotFoundError("certificate", row.id)
            node = self.daemon.node
            if node is not None and cert.renewing_node not in (None, node):
                # Our lease ran out (the store was out of reach for minutes)
                # and another daemon took it over: it renews, from this
                # attempt if it is still open; installing here too would
                # replace the certificate twice.
                raise RenewingElsewhere(cert.name, cert.renewing_node)
            signers = await load_signers(session, [cert.signedby_id])
            # Checked again in the transaction that installs: a CA revoked or
            # put on hold since it signed must not see its certificate land.
            problem = signer_problem(cert, signers, now)
            if problem is not None:
                raise CannotSign(cannot_renew(cert.name, problem))
            cert.certificate = issued.fullchain_pem
            cert.privatekey = attempt.privatekey
            cert.csr = attempt.csr
            if issued.order_url:
                cert.acme_uri = issued.order_url
            if issued.account_id:
                # The directory's account now, if the old one was deactivated.
                cert.acme_account_id = issued.account_id
            cert.failure_count = 0
            cert.last_error = None
            cert.retry_not_before = None
            cert.last_attempt_at = now
            cert.ari_window_start = cert.ari_window_end = None
            cert.ari_next_fetch_at = None
            staged = self.daemon.renewal.replan(
                session, cert, signers, self.settings(), now
            )
            if cert.deploy:
                cert.deploy_next_attempt_at = now
            stored.state = "succeeded"
            stored.privatekey = None
            stored.new_serial = serial
            stored.finished_at = now
            event = self.daemon.events.stage(
                session,
                "certificate.renewed",
                f"renewed {cert.name}: serial {serial}, valid until "
                f"{leaf.not_valid_after_utc.isoformat()}",
                certificate_id=cert.id,
                subject=cert.name,
                data={
                    "serial": serial,
                    "old_serial": stored.old_serial,
                    "not_after": leaf.not_valid_after_utc.isoformat(),
                    "order_url": issued.order_url or None,
                    "next_attempt_at": cert.next_attempt_at.isoformat()
                    if cert.next_attempt_at
                    else None,
                },
            )
            await session.flush()
        for staged_event in [event, *staged]:
            self.daemon.events.deliver(staged_event)
        log.info("certificate_renewed", serial=serial, order_url=issued.order_url)
        return serial

    async def _record_failure(
        self,
        row: Certificate,
        attempt: AttemptView | None,
        message: str,
        retry_after: float | None,
        *,
        keep_open: bool = False,
    ) -> None:
        now = utcnow()
        threshold = self.daemon.config.renewal.failure_alert_after
        async with self.daemon.db.session() as session:
            cert = await session.get(Certificate, row.id)
            stored = await session.get(RenewalAttempt, attempt.id) if attempt else None
            if cert is None:
                return
            if stored is not None:
                stored.error = message
                # once the CSR may have reached the CA, only the order can say
                # whether it issued: keep the attempt for the next run to ask
                if not keep_open and stored.state != "finalizing":
                    stored.state = "failed"
                    stored.privatekey = None
                    stored.finished_at = now
            cert.failure_count += 1
            cert.last_error = message
            cert.last_attempt_at = now
            cert.retry_not_before = (
                now + timedelta(seconds=retry_after) if retry_after else None
            )
            signers = await load_signers(session, [cert.signedby_id])
            blocked = self.daemon.renewal.replan(
                session, cert, signers, self.settings(), now
            )
            events = [
                self.daemon.events.stage(
                    session,
                    "certificate.renewal_failed",
                    f"renewing {cert.name} failed ({cert.failure_count} in a row): "
                    f"{message}",
                    certificate_id=cert.id,
                    subject=cert.name,
                    data={
                        "error": message,
                        "failure_count": cert.failure_count,
                        "last_attempt_at": now.isoformat(),
                        "next_attempt_at": cert.next_attempt_at.isoformat()
                        if cert.next_attempt_at
                        else None,
                        "retry_after": retry_after,
                    },
                )
            ]
            if cert.failure_count % threshold == 0:
                events.append(
                    self.daemon.events.stage(
                        session,
                        "certificate.renewal_failing",
                        f"{cert.name} has failed to renew {cert.failure_count} "
                        f"times in a row; last error: {message}",
                        certificate_id=cert.id,
                        subject=cert.name,
                        data={"error": message, "failure_count": cert.failure_count},
                    )
                )
            events += blocked
            await session.flush()
        for event in events:
            self.daemon.events.deliver(event)
        log.warning(
            "renewal_failed",
            error=message,
            failure_count=cert.failure_count,
            next_attempt_at=cert.next_attempt_at,
        )
