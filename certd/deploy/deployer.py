"""Deploying one certificate onto this host: its files, then its hooks, with retries.

The spec is the certificate's, the same on every host; each daemon sharing a
store deploys it onto its own host and keeps the outcome in its own
``Deployment`` row (by node id). The certificate's ``deploy_next_attempt_at``
says when a deployment was last asked of every host; a host owes one while its
row answered an earlier request, or while its failed deployment is due again
(files when they failed, otherwise only the hooks that failed). A failed
deployment never touches the certificate itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import Select, Text, and_, cast, or_, select
from sqlalchemy.orm import load_only

from certd.deploy.files import Material, write_target
from certd.deploy.hooks import hook_environment, run_hook, withheld
from certd.deploy.models import load_spec
from certd.errors import DeployError, NotFoundError, PkiError
from certd.pki.extensions import serial_hex
from certd.store.crypto import keyring_of
from certd.store.models import Certificate, Deployment, utcnow

if TYPE_CHECKING:
    from certd.service import Daemon

log = structlog.get_logger(__name__)

# The node of a daemon not started yet; a started one always has its own id.
LOCAL_NODE = "local"


def spec_digest(stored: dict[str, Any] | None, key: bytes) -> str:
    """Identifies a deploy spec, so that a changed one is deployed afresh.

    Keyed (HMAC-SHA256 under ``key``, derived from the master key): the spec
    holds a PKCS#12 passphrase and hook arguments, and a plain hash shown in
    a deploy state would let its reader test guesses of them offline.
    """
    text = json.dumps(stored or {}, sort_keys=True).encode()
    return hmac.new(key, b"deploy spec\0" + text, hashlib.sha256).hexdigest()


def next_attempt(
    requested: datetime | None, mine: Deployment | None
) -> datetime | None:
    """When a host with deployment row ``mine`` owes a deployment; None if never.

    ``requested`` is the certificate's ``deploy_next_attempt_at``.
    """
    if requested is None:
        return None
    if mine is None or mine.requested_at != requested:
        return requested
    return mine.next_attempt_at


def owes(requested: datetime | None, mine: Deployment | None, now: datetime) -> bool:
    """Whether a host with deployment row ``mine`` owes a deployment at ``now``."""
    due = next_attempt(requested, mine)
    return due is not None and due <= now


def owed_here(node: str, now: datetime) -> Select[int]:
    """The ids of the certificates whose deployment ``node`` owes at ``now`` (owes)."""
    requested = Certificate.deploy_next_attempt_at
    return (
        select(Certificate.id)
        .outerjoin(
            Deployment,
            and_(Deployment.certificate_id == Certificate.id, Deployment.node == node),
        )
        .where(
            requested.is_not(None),
            requested <= now,
            or_(
                # no row of this node at all, or one that answered no request
                Deployment.requested_at.is_(None),
                Deployment.requested_at != requested,
                Deployment.next_attempt_at <= now,
            ),
        )
        .order_by(Certificate.id)
    )


def node_summary(
    requested: datetime | None, row: Deployment, now: datetime
) -> dict[str, Any]:
    """One node's deployment of a certificate in brief, for certificate.get_deploy."""
    state = row.state or {}
    due = next_attempt(requested, row)
    return {
        "ok": state.get("ok"),
        "serial": state.get("serial"),
        "reason": state.get("reason"),
        "deployed_at": state.get("deployed_at"),
        "attempts": state.get("attempts"),
        "errors": deploy_errors(state),
        "owed": due is not None and due <= now,
        "next_attempt_at": due.isoformat() if due else None,
    }


def _domains(leaf: x509.Certificate) -> list[str]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(name) for name in san.value.get_values_for_type(x509.DNSName)]


class Deployer:
    """Writes targets and runs hooks for certificates, one at a time each."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    @property
    def node(self) -> str:
        """The node id this daemon's deployments are kept under."""
        return self.daemon.node or LOCAL_NODE

    async def adopt(self) -> int:
        """Move deploy states kept per certificate into this node's rows; count them.

        Run at start. Before deployments were per host, the state on the
        certificate row told how the (one) daemon using the store deployed
        it: it becomes this node's. A settled deployment is asked again of
        every host, so the other daemons sharing the store deploy onto
        theirs; this one has already. Emptying the old state makes this run
        once, and the row locks make a second daemon starting at the same
        time find nothing left.
        """
        node, now, moved = self.node, utcnow(), 0
        async with self.daemon.db.session() as session:
            rows = (
                await session.scalars(
                    select(Certificate)
                    .options(
                        load_only(
                            Certificate.id,
                            Certificate.deploy,
                            Certificate.deploy_state,
                            Certificate.deploy_next_attempt_at,
                        )
                    )
                    .where(cast(Certificate.deploy_state, Text) != "{}")
                    .order_by(Certificate.id)
                    .with_for_update()
                )
            ).all()
            for row in rows:
                state = dict(row.deploy_state or {})
                row.deploy_state = {}
                if not state:
                    continue
                requested = retry_at = row.deploy_next_attempt_at
                if requested is None and not load_spec(row.deploy).empty:
                    requested = row.deploy_next_attempt_at = now
                if await session.get(Deployment, (row.id, node)) is None:
                    session.add(
                        Deployment(
                            certificate_id=row.id,
                            node=node,
                            state=state,
                            requested_at=requested,
                            next_attempt_at=retry_at,
                        )
                    )
                moved += 1
        if moved:
            log.info("deploy_states_adopted", node=node, count=moved)
        return moved

    def retry_delay(self, attempts: int) -> timedelta:
        config = self.daemon.config.deploy
        seconds = config.retry_base * 2.0 ** min(attempts - 1, 32)
        return timedelta(seconds=min(seconds, config.retry_max))

    async def deploy(self, certificate_id: int, *, reason: str) -> dict[str, Any]:
        """Deploy one certificate onto this host now; return this node's new state.

        ``reason`` is renewed, manual or retry (from the scheduler); hooks get
        it as ``CERTD_REASON``, a scheduled first deployment as configured (or
        changed, when the certificate changed without one). A retry redoes
        only what failed.

        Raises:
            NotFoundError: there is no such certificate.
        """
        async with self._locks[certificate_id]:
            return await self._deploy(certificate_id, reason)

    async def _deploy(self, certificate_id: int, reason: str) -> dict[str, Any]:
        node = self.node
        async with self.daemon.db.session() as session:
            row = await session.get(Certificate, certificate_id)
            if row is None:
                raise NotFoundError("certificate", certificate_id)
            mine = await session.get(Deployment, (certificate_id, node))
            previous: dict[str, Any] = dict(mine.state or {}) if mine else {}
            requested = row.deploy_next_attempt_at
            spec = load_spec(row.deploy)
            if spec.empty or not row.certificate or not row.privatekey:
                # nothing to deploy: the request is answered, no retry is left
                if mine is None:
                    mine = Deployment(certificate_id=certificate_id, node=node)
                    session.add(mine)
                mine.requested_at, mine.next_attempt_at = requested, None
                return previous
            if reason == "retry" and not owes(requested, mine, utcnow()):
                # the scheduler read a retry time that another deployment has
                # since settled: nothing is owed now
                return previous
        bound = structlog.contextvars.bind_contextvars(certificate=row.name)
        try:
            return await self._run(row, previous, requested, reason)
        finally:
            structlog.contextvars.reset_contextvars(**bound)

    async def _run(
        self,
        row: Certificate,
        previous: dict[str, Any],
        requested: datetime | None,
        reason: str,
    ) -> dict[str, Any]:
        spec = load_spec(row.deploy)
        now = utcnow()
        try:
            material = Material.load(
                row.name, row.certificate or "", row.privatekey or ""
            )
        except PkiError as exc:
            return await self._save(
                row, requested, previous, exc.message, [], {}, now, 1
            )
        leaf = material.certificates[0]
        fingerprint = leaf.fingerprint(hashes.SHA256()).hex()
        engine = self.daemon.db.engine
        keyring = keyring_of(getattr(engine, "sync_engine", engine).dialect)
        digest = spec_digest(row.deploy, keyring.hook_key)
        fresh = (
            reason != "retry"
            or previous.get("fingerprint") != fingerprint
            or previous.get("spec") != digest
            or previous.get("files_error") is not None
        )
        attempts = 1 if fresh else int(previous.get("attempts", 0)) + 1
        if reason != "retry":
            effective = reason
        elif not fresh:
            effective = previous.get("reason", reason)
        elif previous.get("fingerprint") not in (None, fingerprint):
            # replaced without a deployment here yet: renewed by another
            # daemon sharing the store, or a crash came in between
            effective = "changed"
        else:
            effective = "configured"

        files: dict[str, str] = {} if fresh else dict(previous.get("files", {}))
        files_error: str | None = None
        if fresh:
            for target in spec.targets:
                try:
                    written = await asyncio.to_thread(
                        write_target,
                        target,
                        material,
                        self.daemon.config.deploy.allowed_directories,
                    )
                except DeployError as exc:
                    files_error = exc.message
                    log.warning("deploy_files_failed", error=exc.message)
                    break
                for kind, path in written.items():
                    files.setdefault(kind, path)
                log.info("deploy_files_written", directory=target.directory)

        hooks: list[dict[str, Any]] = (
            [{} for _ in spec.hooks]
            if fresh
            else list(previous.get("hooks", [{} for _ in spec.hooks]))
        )
        if files_error is None:
            env = hook_environment(
                certificate_id=row.id,
                name=row.name,
                reason=effective,
                serial=serial_hex(leaf.serial_number),
                not_after=leaf.not_valid_after_utc.isoformat(),
                fingerprint=fingerprint,
                domains=_domains(leaf),
                files=files,
                node=self.node,
            )
            timeout = self.daemon.config.deploy.hook_timeout
            for index, hook in enumerate(spec.hooks):
                if hooks[index].get("ok"):
                    continue
                result = await run_hook(hook.argv, env, hook.timeout or timeout)
                hooks[index] = {
                    **result.record(),
                    "attempts": int(hooks[index].get("attempts", 0)) + 1,
                    "finished_at": utcnow().isoformat(),
                }
                self.daemon.metrics.hooks.labels("ok" if result.ok else "failed").inc()
                if result.ok:
                    log.info("deploy_hook_finished", program=hook.argv[0])
                else:
                    log.warning(
                        "deploy_hook_failed",
                        program=hook.argv[0],
                        error=result.describe(),
                        output=result.output[-500:],
                    )
        return await self._save(
            row,
            requested,
            {"fingerprint": fingerprint, "spec": digest, "reason": effective},
            files_error,
            hooks,
            files,
            now,
            attempts,
            serial=serial_hex(leaf.serial_number),
        )

    async def _save(
        self,
        row: Certificate,
        requested: datetime | None,
        base: dict[str, Any],
        files_error: str | None,
        hooks: list[dict[str, Any]],
        files: dict[str, str],
        now: datetime,
        attempts: int,
        serial: str | None = None,
    ) -> dict[str, Any]:
        failed_hooks = [h for h in hooks if h and not h.get("ok")]
        failed = files_error is not None or bool(failed_hooks)
        retry = failed and attempts <= self.daemon.config.deploy.hook_retries
        retry_at = now + self.retry_delay(attempts) if retry else None
        state = {
            **base,
            "serial": serial,
            "deployed_at": now.isoformat(),
            "ok": not failed,
            "attempts": attempts,
            "files": files,
            "files_error": files_error,
            "hooks": hooks,
            "next_attempt_at": retry_at.isoformat() if retry_at else None,
        }
        node = self.node
        async with self.daemon.db.session() as session:
            if await session.get(Certificate, row.id) is None:
                return state
            mine = await session.get(Deployment, (row.id, node))
            if mine is None:
                mine = Deployment(certificate_id=row.id, node=node)
                session.add(mine)
            mine.state = state
            mine.next_attempt_at = retry_at
            # The request read when this deployment started: a renewal that
            # landed meanwhile has made a new one, still owed.
            mine.requested_at = requested
            if failed:
                errors = deploy_errors(state)
                event = self.daemon.events.stage(
                    session,
                    "certificate.deploy_failed",
                    f"deploying {row.name} on {node} failed: {'; '.join(errors)}"
                    + (
                        f"; retrying at {retry_at.isoformat()}"
                        if retry_at
                        else "; giving up"
                    ),
                    certificate_id=row.id,
                    subject=row.name,
                    data={
                        "node": node,
                        "errors": errors,
                        "attempts": attempts,
                        "will_retry": retry,
                    },
                    severity="warning" if retry else "error",
                )
            else:
                event = self.daemon.events.stage(
                    session,
                    "certificate.deployed",
                    f"deployed {row.name} on {node} to "
                    f"{len(set(files.values()))} file(s) and ran {len(hooks)} hook(s)",
                    certificate_id=row.id,
                    subject=row.name,
                    data={
                        "node": node,
                        "files": files,
                        "serial": serial,
                        "reason": base.get("reason"),
                    },
                )
            await session.flush()
        self.daemon.events.deliver(event)
        self.daemon.metrics.deploys.labels("failed" if failed else "ok").inc()
        return state


def deploy_errors(state: dict[str, Any]) -> list[str]:
    """What went wrong in a deployment, from its deploy state; empty if nothing."""
    errors = [state["files_error"]] if state.get("files_error") else []
    errors += [
        h.get("error") or _hook_error(h)
        for h in state.get("hooks") or []
        if h and not h.get("ok")
    ]
    return errors


def state_for_readonly(state: Any) -> Any:
    """A deploy state (certificate.deploy's result) as a read-only API key sees it.

    Each hook's arguments and output are withheld (see hooks.withheld).
    """
    if not isinstance(state, dict):
        return state
    # Digests of the spec from before it was keyed are plain hashes of it.
    shown = {k: v for k, v in state.items() if k != "spec"}
    if isinstance(state.get("hooks"), list):
        shown["hooks"] = [withheld(hook) for hook in state["hooks"]]
    return shown


def failure(name: str, state: dict[str, Any]) -> DeployError | None:
    """The error a deployment job ends with, or None if it succeeded."""
    if state.get("ok"):
        return None
    errors = deploy_errors(state) or ["nothing was deployed"]
    retry = state.get("next_attempt_at")
    return DeployError(
        name,
        f"deployment failed: {'; '.join(errors)}"
        + (f"; retrying at {retry}" if retry else ""),
    )


def _hook_error(record: dict[str, Any]) -> str:
    program = (record.get("argv") or ["hook"])[0]
    if record.get("timed_out"):
        return f"{program} timed out"
    return f"{program} exited with status {record.get('returncode')}"
