"""Deploy hooks: commands run (argv, no shell) after a certificate changed.

A hook gets a small, fixed environment, never the daemon's own (which may hold
credentials): a safe PATH plus ``CERTD_*`` variables naming the certificate
and the files written for it. It runs in its own session so that on timeout
the whole process group is killed, not only the first process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import asdict, dataclass
from typing import Any

# Enough of a hook's output to see why it failed.
OUTPUT_LIMIT = 4096
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# File kind -> environment variable with its path.
PATH_VARIABLES = {
    "cert": "CERTD_CERT_PATH",
    "chain": "CERTD_CHAIN_PATH",
    "fullchain": "CERTD_FULLCHAIN_PATH",
    "privkey": "CERTD_KEY_PATH",
    "combined": "CERTD_COMBINED_PATH",
    "pkcs12": "CERTD_PKCS12_PATH",
}


@dataclass(frozen=True)
class HookResult:
    """How one run of a hook ended."""

    argv: list[str]
    returncode: int | None
    timed_out: bool
    output: str
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.error is None

    def describe(self) -> str:
        """Why a failed hook failed, in one line."""
        if self.error:
            return self.error
        if self.timed_out:
            return f"{self.argv[0]} was killed after its timeout of {self.seconds:g} s"
        return f"{self.argv[0]} exited with status {self.returncode}"

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def hook_environment(
    *,
    certificate_id: int,
    name: str,
    reason: str,
    serial: str,
    not_after: str,
    fingerprint: str,
    domains: list[str],
    files: dict[str, str],
) -> dict[str, str]:
    """The whole environment of a hook: a safe PATH and the ``CERTD_*`` names."""
    env = {
        "PATH": SAFE_PATH,
        "LANG": "C.UTF-8",
        "CERTD_CERT_ID": str(certificate_id),
        "CERTD_CERT_NAME": name,
        "CERTD_REASON": reason,
        "CERTD_SERIAL": serial,
        "CERTD_NOT_AFTER": not_after,
        "CERTD_FINGERPRINT_SHA256": fingerprint,
        "CERTD_DOMAINS": " ".join(domains),
    }
    for kind, path in files.items():
        env[PATH_VARIABLES[kind]] = path
    if files:
        env["CERTD_DEPLOY_DIR"] = os.path.dirname(next(iter(files.values())))
    return env


def _tail(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= OUTPUT_LIMIT else "…" + text[-OUTPUT_LIMIT:]


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def run_hook(argv: list[str], env: dict[str, str], timeout: float) -> HookResult:
    """Run one hook to its end or its timeout; never raises for a failing hook."""
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd="/",
            start_new_session=True,
        )
    except OSError as exc:
        return HookResult(
            argv,
            None,
            False,
            "",
            time.monotonic() - started,
            f"cannot run {argv[0]}: {exc.strerror}",
        )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        _kill_group(process)
        await process.wait()
        return HookResult(argv, process.returncode, True, "", timeout)
    except asyncio.CancelledError:
        _kill_group(process)
        await process.wait()
        raise
    return HookResult(
        argv,
        process.returncode,
        False,
        _tail(output or b""),
        time.monotonic() - started,
    )
