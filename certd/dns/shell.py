"""A user's own script as a provider: ``script set|unset <fqdn> <value>``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
from pathlib import Path

from pydantic import Field, field_validator

from certd.dns.base import (
    DNSProvider,
    ProviderAttributes,
    in_zone,
    normalize_name,
)
from certd.dns.resolve import PropagationSettings, zone_of

OUTPUT_LIMIT = 2000
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ShellAttributes(ProviderAttributes):
    """An executable that publishes and removes one TXT value per call."""

    script: str = Field(
        description="Absolute path of an executable, run as "
        "'script set <fqdn> <value>' and 'script unset <fqdn> <value>'"
    )
    timeout: float = Field(60.0, ge=0.1, le=3600, description="Seconds per call")
    zone: str | None = Field(
        None, description="Zone of the names; found by SOA if unset"
    )

    @field_validator("script")
    @classmethod
    def _check_script(cls, value: str) -> str:
        path = Path(value)
        if not path.is_absolute():
            raise ValueError("must be an absolute path")
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            raise ValueError(f"cannot be read: {exc.strerror}") from exc
        if not stat.S_ISREG(mode):
            raise ValueError("must be a regular file")
        if not os.access(path, os.X_OK):
            raise ValueError("must be executable by the daemon")
        _check_trusted(Path(os.path.realpath(path)))
        return str(path)

    @field_validator("zone", mode="before")
    @classmethod
    def _normalize_zone(cls, value: object) -> object:
        if value == "":
            return None
        return normalize_name(value) if isinstance(value, str) else value


def _check_trusted(path: Path) -> None:
    """Refuse a script that someone other than root or the daemon could change.

    The daemon runs the script with its own rights (root, often), so a script
    or a directory holding it that others may write would let them run code
    as the daemon.
    """
    for item, what in ((path, "the script"), (path.parent, "its directory")):
        info = item.stat()
        if info.st_uid not in (0, os.geteuid()):
            raise ValueError(
                f"{what} ({item}) must be owned by root or the daemon's user"
            )
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ValueError(f"{what} ({item}) must not be writable by group or others")


class ShellProvider(DNSProvider):
    """Runs the script directly (no shell), with a timeout, and checks its status.

    The script also gets ``CERTD_ACTION``, ``CERTD_ZONE``, ``CERTD_FQDN`` and
    ``CERTD_VALUE`` in its environment; its output ends up in the error when it
    fails.
    """

    name = "shell"
    title = "Shell script"
    Attributes = ShellAttributes
    attributes: ShellAttributes

    async def find_zone(self, fqdn: str) -> str:
        """The configured zone, or the zone whose SOA the resolvers give for fqdn."""
        fqdn = normalize_name(fqdn)
        configured = self.attributes.zone
        if configured is not None:
            if not in_zone(fqdn, configured):
                raise self.error(f"{fqdn} is not in the configured zone {configured}")
            return configured
        settings = PropagationSettings(
            resolvers=self.context.resolvers, query_timeout=self.context.request_timeout
        )
        return await zone_of(fqdn, settings)

    async def add_txt(self, zone: str, fqdn: str, value: str) -> None:
        """Run ``script set <fqdn> <value>``."""
        await self._run("set", zone, fqdn, value)
        self.log.info("txt_record_added", zone=zone, fqdn=fqdn)

    async def remove_txt(self, zone: str, fqdn: str, value: str) -> None:
        """Run ``script unset <fqdn> <value>``."""
        await self._run("unset", zone, fqdn, value)
        self.log.info("txt_record_removed", zone=zone, fqdn=fqdn)

    async def _run(self, action: str, zone: str, fqdn: str, value: str) -> None:
        script = self.attributes.script
        timeout = self.attributes.timeout
        fqdn = normalize_name(fqdn)
        env = {
            "PATH": os.environ.get("PATH", DEFAULT_PATH),
            "LANG": "C.UTF-8",
            "CERTD_ACTION": action,
            "CERTD_ZONE": normalize_name(zone),
            "CERTD_FQDN": fqdn,
            "CERTD_VALUE": value,
        }
        try:
            process = await asyncio.create_subprocess_exec(
                script,
                action,
                fqdn,
                value,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                # its own process group, so a timeout also ends what it started
                start_new_session=True,
            )
        except OSError as exc:
            raise self.error(f"cannot run {script}: {exc.strerror or exc}") from exc

        try:
            # asyncio.timeout: wait_for on Python 3.11 can drop a job's cancel.
            async with asyncio.timeout(timeout):
                output, _ = await process.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise self.error(
                f"{script} {action} {fqdn} did not finish within {timeout:g} s "
                "and was killed",
                retryable=True,
            ) from None

        text = output.decode(errors="replace").strip()
        if process.returncode != 0:
            shown = text[-OUTPUT_LIMIT:] if text else "(no output)"
            raise self.error(
                f"{script} {action} {fqdn} exited with status "
                f"{process.returncode}: {shown}"
            )
        self.log.debug("script_finished", action=action, fqdn=fqdn, output=text)
