"""Deploying one certificate: its files, then its hooks, with retries.

The outcome is kept in the certificate's ``deploy_state``; a deployment that
failed sets ``deploy_next_attempt_at`` and the scheduler tries again (files
when they failed, otherwise only the hooks that failed). A failed deployment
never touches the certificate itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from certd.deploy.files import Material, write_target
from certd.deploy.hooks import hook_environment, run_hook
from certd.deploy.models import load_spec
from certd.errors import DeployError, NotFoundError, PkiError
from certd.pki.extensions import serial_hex
from certd.store.models import Certificate, utcnow

if TYPE_CHECKING:
    from certd.service import Daemon

log = structlog.get_logger(__name__)


def spec_digest(stored: dict[str, Any] | None) -> str:
    """Identifies a deploy spec, so that a changed one is deployed afresh."""
    return hashlib.sha256(json.dumps(stored or {}, sort_keys=True).encode()).hexdigest()


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

    def retry_delay(self, attempts: int) -> timedelta:
        config = self.daemon.config.deploy
        seconds = config.retry_base * 2.0 ** min(attempts - 1, 32)
        return timedelta(seconds=min(seconds, config.retry_max))

    async def deploy(self, certificate_id: int, *, reason: str) -> dict[str, Any]:
        """Deploy one certificate now; return its new deploy state.

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
        async with self.daemon.db.session() as session:
            row = await session.get(Certificate, certificate_id)
            if row is None:
                raise NotFoundError("certificate", certificate_id)
            spec = load_spec(row.deploy)
            if spec.empty or not row.certificate or not row.privatekey:
                row.deploy_next_attempt_at = None
                return dict(row.deploy_state or {})
            owed = row.deploy_next_attempt_at
            if reason == "retry" and (owed is None or owed > utcnow()):
                # the scheduler read a retry time that another deployment has
                # since settled: nothing is owed now
                return dict(row.deploy_state or {})
        bound = structlog.contextvars.bind_contextvars(certificate=row.name)
        try:
            return await self._run(row, reason)
        finally:
            structlog.contextvars.reset_contextvars(**bound)

    async def _run(self, row: Certificate, reason: str) -> dict[str, Any]:
        spec = load_spec(row.deploy)
        previous: dict[str, Any] = dict(row.deploy_state or {})
        now = utcnow()
        try:
            material = Material.load(
                row.name, row.certificate or "", row.privatekey or ""
            )
        except PkiError as exc:
            return await self._save(row, previous, exc.message, [], {}, now, 1)
        leaf = material.certificates[0]
        fingerprint = leaf.fingerprint(hashes.SHA256()).hex()
        digest = spec_digest(row.deploy)
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
            effective = "changed"  # replaced without a deployment yet (a crash)
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
        async with self.daemon.db.session() as session:
            current = await session.get(Certificate, row.id)
            if current is None:
                return state
            current.deploy_state = state
            # A renewal that landed meanwhile has asked for its own deployment.
            if current.certificate == row.certificate:
                current.deploy_next_attempt_at = retry_at
            if failed:
                errors = deploy_errors(state)
                event = self.daemon.events.stage(
                    session,
                    "certificate.deploy_failed",
                    f"deploying {row.name} failed: {'; '.join(errors)}"
                    + (
                        f"; retrying at {retry_at.isoformat()}"
                        if retry_at
                        else "; giving up"
                    ),
                    certificate_id=row.id,
                    subject=row.name,
                    data={"errors": errors, "attempts": attempts, "will_retry": retry},
                    severity="warning" if retry else "error",
                )
            else:
                event = self.daemon.events.stage(
                    session,
                    "certificate.deployed",
                    f"deployed {row.name} to {len(set(files.values()))} file(s) "
                    f"and ran {len(hooks)} hook(s)",
                    certificate_id=row.id,
                    subject=row.name,
                    data={
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
