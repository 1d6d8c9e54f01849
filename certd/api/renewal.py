"""Renewal and deployment methods of the ``certificate`` namespace.

``certificate.renew`` forces a renewal now, ``certificate.renewal_plan`` says
when each certificate renews next and why, and ``certificate.get_deploy`` /
``certificate.set_deploy`` / ``certificate.deploy`` manage where a
certificate's files go and which hooks run when it changes.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from certd.api.filters import QueryOptions, entry_fields, query_entries
from certd.api.jobs import Job
from certd.api.registry import Service, api_method
from certd.deploy.deployer import next_attempt, node_summary, state_for_readonly
from certd.deploy.files import group_id, user_id, within
from certd.deploy.hooks import withheld
from certd.deploy.models import DeploySpec, load_spec
from certd.errors import (
    DeployError,
    NotFoundError,
    ValidationCollector,
    ValidationError,
)
from certd.renewal.planning import load_signers, renewal_refusal
from certd.renewal.renewer import RenewingElsewhere, lease_holder
from certd.store.models import Certificate, Deployment, utcnow


class Span(BaseModel):
    start: str | None
    end: str | None


class PlanEntry(BaseModel):
    """When a certificate renews next, and why."""

    model_config = ConfigDict(extra="forbid")

    id: int
    name: str
    kind: Literal["acme", "internal"] | None
    renewable: bool
    not_before: str | None
    not_after: str | None
    next_attempt_at: str | None
    reason: str | None
    window: Span | None
    window_source: Literal["renew_days", "lifetime_fraction", "ari"] | None
    due: bool
    failure_count: int
    last_attempt_at: str | None
    last_error: str | None
    retry_not_before: str | None
    ari_window: Span | None
    reuse_key: bool
    job_id: int | None
    renewing_node: str | None = Field(
        description="The daemon sharing the store that is renewing it now"
    )


class RenewResult(BaseModel):
    id: int
    name: str
    serial: str
    resumed: bool
    deployed: bool | None
    # a scheduled renewal found the certificate renewed meanwhile
    skipped: bool = False


class NodeDeploy(BaseModel):
    """How one daemon sharing the store last deployed a certificate onto its host."""

    ok: bool | None
    serial: str | None
    reason: str | None
    deployed_at: str | None
    attempts: int | None
    errors: list[str]
    owed: bool
    next_attempt_at: str | None


class DeployEntry(BaseModel):
    """A certificate's deploy targets and hooks (secrets hidden) and the last outcome.

    ``state`` and ``next_attempt_at`` are this daemon's (this host's);
    ``nodes`` has every daemon sharing the store that deployed it, by node id.
    """

    id: int
    name: str
    deploy: dict[str, Any]
    state: dict[str, Any]
    next_attempt_at: str | None
    nodes: dict[str, NodeDeploy]


async def _deploy_entry(
    session: AsyncSession, row: Certificate, node: str
) -> dict[str, Any]:
    found = (
        await session.scalars(
            select(Deployment)
            .where(Deployment.certificate_id == row.id)
            .order_by(Deployment.node)
        )
    ).all()
    requested, now = row.deploy_next_attempt_at, utcnow()
    mine = next((d for d in found if d.node == node), None)
    due = next_attempt(requested, mine)
    return {
        "id": row.id,
        "name": row.name,
        "deploy": load_spec(row.deploy).public(),
        "state": dict(mine.state or {}) if mine else {},
        "next_attempt_at": due.isoformat() if due else None,
        "nodes": {d.node: node_summary(requested, d, now) for d in found},
    }


def _deploy_entry_for_readonly(entry: dict[str, Any]) -> dict[str, Any]:
    """get_deploy's entry without hook arguments and output, for read-only keys."""
    deploy = entry["deploy"]
    return {
        **entry,
        "deploy": {**deploy, "hooks": [withheld(h) for h in deploy["hooks"]]},
        "state": state_for_readonly(entry["state"]),
    }


class RenewalService(Service):
    namespace = "certificate.renewal"

    async def _row(self, id: int) -> Certificate:
        async with self.app.db.session() as session:
            row = await session.get(Certificate, id)
        if row is None:
            raise NotFoundError("certificate", id)
        return row

    async def _renewable_row(self, id: int) -> Certificate:
        """The row, or why it cannot be renewed (its CA's state included)."""
        async with self.app.db.session() as session:
            row = await session.get(Certificate, id)
            if row is None:
                raise NotFoundError("certificate", id)
            signers = await load_signers(session, [row.signedby_id])
        refusal = renewal_refusal(row, signers)
        if refusal is not None:
            raise ValidationError.single("id", refusal)
        return row

    async def check_renew(self, id: int) -> None:
        """Refuse at once what cannot be renewed, or what is being renewed.

        The renewal is marked as started here, before its job is submitted,
        so that of many calls at once only one is accepted.
        """
        row = await self._renewable_row(id)
        holder = lease_holder(row, utcnow())
        if holder not in (None, self.app.node):
            # another daemon sharing the store renews it now: the job would
            # only find that out
            raise RenewingElsewhere(row.name, str(holder))
        self.app.renewal.accept(id, row.name)

    @api_method(job=True, name="certificate.renew", check="check_renew")
    async def renew(self, job: Job, id: int) -> RenewResult:
        """Renew a certificate now, whatever its plan says."""
        return await self.app.renewal.run_renewal(job, id, "manual")  # type: ignore[no-any-return]

    @api_method(readonly=True, name="certificate.renewal_plan")
    async def renewal_plan(
        self,
        filters: list[Any] = [],  # noqa: B006 - never mutated
        options: QueryOptions = QueryOptions(),  # noqa: B008 - immutable in use
    ) -> list[PlanEntry] | PlanEntry | int:
        """For each certificate: when it renews next and which rule decided.

        Filters and options as in certificate.query, over the plan's fields.
        """
        entries = await self.app.renewal.plan_entries(utcnow())
        return await query_entries(  # type: ignore[no-any-return]
            entries, filters, options, entry_fields(PlanEntry)
        )

    @api_method(
        readonly=True,
        name="certificate.get_deploy",
        readonly_view=_deploy_entry_for_readonly,
    )
    async def get_deploy(self, id: int) -> DeployEntry:
        """A certificate's file targets and hooks, and how its deployments went.

        A read-only API key gets each hook's program without its arguments,
        and its runs without their output (arguments_withheld, output_withheld).
        """
        async with self.app.db.session() as session:
            row = await session.get(Certificate, id)
            if row is None:
                raise NotFoundError("certificate", id)
            entry = await _deploy_entry(session, row, self.app.deployer.node)
        return entry  # type: ignore[return-value]

    def _check_allowed(self, spec: DeploySpec, errors: ValidationCollector) -> None:
        """Hold targets and hooks to what the host's administrator allowed."""
        config = self.app.config.deploy
        if config.allowed_directories:
            for index, target in enumerate(spec.targets):
                # symbolic links resolved; the deployer checks again when it
                # writes, since a link may change in between
                if not within(target.directory, config.allowed_directories):
                    errors.add(
                        f"deploy.targets.{index}.directory",
                        f"{os.path.realpath(target.directory)} is not under "
                        "deploy.allowed_directories of the daemon's config",
                    )
        if config.allowed_programs:
            allowed = {str(p) for p in config.allowed_programs}
            for index, hook in enumerate(spec.hooks):
                if hook.argv[0] not in allowed:
                    errors.add(
                        f"deploy.hooks.{index}.argv",
                        f"{hook.argv[0]} is not in deploy.allowed_programs of the "
                        "daemon's config",
                    )

    @api_method(name="certificate.set_deploy", secret_params=("deploy",))
    async def set_deploy(self, id: int, deploy: DeploySpec) -> DeployEntry:
        """Replace a certificate's file targets and hooks; deploys them soon after.

        A PKCS#12 passphrase is write-only: send it again with every change.
        """
        spec = deploy
        errors = ValidationCollector()
        for index, target in enumerate(spec.targets):
            for field, lookup, value in (
                ("owner", user_id, target.owner),
                ("group", group_id, target.group),
            ):
                try:
                    lookup(value)
                except DeployError as exc:
                    errors.add(f"deploy.targets.{index}.{field}", exc.message)
        self._check_allowed(spec, errors)
        errors.check()
        async with self.app.db.session() as session:
            row = await session.get(Certificate, id)
            if row is None:
                raise NotFoundError("certificate", id)
            if row.cert_type != "CERTIFICATE" and not spec.empty:
                raise ValidationError.single(
                    "id", f"{row.name!r} is a CSR; only certificates are deployed"
                )
            row.deploy = spec.stored()
            # asked of every host sharing the store, each deploying onto its own
            row.deploy_next_attempt_at = (
                utcnow() if not spec.empty and row.certificate else None
            )
            await session.flush()
            entry = await _deploy_entry(session, row, self.app.deployer.node)
            owed = row.deploy_next_attempt_at is not None
        if self.app.renewal.running:
            self.app.renewal.wake()
        elif owed:
            # no scheduler to pick it up (renewal.enabled = false): start it here
            await self.app.renewal.submit_deploy(id, "retry")
        return entry  # type: ignore[return-value]

    async def check_deploy(self, id: int) -> None:
        row = await self._row(id)
        if load_spec(row.deploy).empty:
            raise ValidationError.single(
                "id", f"{row.name!r} has no deploy targets or hooks; set them first"
            )
        if not row.certificate or not row.privatekey:
            raise ValidationError.single(
                "id", f"{row.name!r} has no certificate and private key to deploy"
            )

    @api_method(
        job=True,
        name="certificate.deploy",
        check="check_deploy",
        readonly_view=state_for_readonly,
    )
    async def deploy(self, job: Job, id: int) -> dict[str, Any]:
        """Write a certificate's files and run its hooks now.

        Onto this daemon's host only: each daemon sharing a store deploys onto
        its own. The job fails when the deployment failed; certificate.get_deploy
        shows each file and hook, and when it is tried again.
        """
        await self._row(id)
        return await self.app.renewal.run_deploy(job, id, "manual")  # type: ignore[no-any-return]
