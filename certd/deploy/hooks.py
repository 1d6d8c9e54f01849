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
READ_SIZE = 65536
# How long output is still read after the hook exited, for what it wrote last
# while a background process it started may hold the pipe open forever.
OUTPUT_GRACE = 0.5
# How long a cancelled hook is waited for after SIGKILL; a process stuck in
# the kernel (uninterruptible sleep) is left to the child watcher.
KILL_WAIT = 2.0
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


def withheld(hook: dict[str, Any]) -> dict[str, Any]:
    """A hook, as configured or as a record of its run, for a read-only API key.

    Its arguments may carry tokens or paths and its output whatever the
    program printed, so only the program and how many arguments were left
    out remain; a run keeps how it ended (status, timeout, error, time) and
    its output becomes null. An empty record (a hook not run) stays empty.
    """
    if not hook:
        return hook
    argv = list(hook.get("argv") or [])
    shown = {**hook, "argv": argv[:1], "arguments_withheld": max(len(argv) - 1, 0)}
    if "output" in hook:
        shown["output"] = None
        shown["output_withheld"] = True
    return shown


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
    node: str,
) -> dict[str, str]:
    """The whole environment of a hook: a safe PATH and the ``CERTD_*`` names.

    ``node`` is the deploying daemon's node id: hosts sharing a store each
    run the hook, and a script kept on shared storage can tell them apart.
    """
    env = {
        "PATH": SAFE_PATH,
        "LANG": "C.UTF-8",
        "CERTD_NODE": node,
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


class OutputTail:
    """The last few KB of a hook's output; what came before is counted, not kept."""

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self.limit = limit
        # a UTF-8 character is at most 4 bytes, and the first one kept may be cut
        self.keep = 4 * limit + 4
        self.data = bytearray()
        self.dropped = 0

    def feed(self, chunk: bytes) -> None:
        self.data += chunk
        excess = len(self.data) - self.keep
        if excess > 0:
            del self.data[:excess]
            self.dropped += excess

    def text(self) -> str:
        """The last ``limit`` characters, marked with "…" when cut."""
        text = self.data.decode("utf-8", errors="replace")
        if self.dropped or len(text) > self.limit:
            return "…" + text[-self.limit :]
        return text


def _tail(data: bytes) -> str:
    tail = OutputTail()
    tail.feed(data)
    return tail.text()


class _PipeReader:
    """Drains the read end of a hook's output pipe into an ``OutputTail``."""

    def __init__(self, fd: int, sink: OutputTail) -> None:
        self.fd = fd
        self.sink = sink
        self.eof = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            chunk = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            self.sink.feed(chunk)
            return
        self._loop.remove_reader(self.fd)
        self.eof.set()

    async def drained(self, grace: float) -> None:
        """Wait at most ``grace`` seconds for every writer to close the pipe."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel
        # that comes in the turn the pipe closed, and the deployment would go
        # on to its next hook while the daemon stops.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.eof.wait()

    def close(self) -> None:
        self._loop.remove_reader(self.fd)
        os.close(self.fd)


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def run_hook(argv: list[str], env: dict[str, str], timeout: float) -> HookResult:
    """Run one hook to its end or its timeout; never raises for a failing hook.

    The hook has ended when its own process has exited: a service it started
    in the background may keep the output pipe open, so the output is read
    only for a short grace after that, and the service is left running.
    """
    started = time.monotonic()
    # Our own pipe rather than asyncio's: its end is ours to stop reading at,
    # and the output is kept as a bounded tail while it is read.
    read_end, write_end = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_end,
            stderr=write_end,
            env=env,
            cwd="/",
            start_new_session=True,
        )
    except OSError as exc:
        os.close(read_end)
        return HookResult(
            argv,
            None,
            False,
            "",
            time.monotonic() - started,
            f"cannot run {argv[0]}: {exc.strerror}",
        )
    except BaseException:  # cancelled: asyncio has killed the child already
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    output = OutputTail()
    reader = _PipeReader(read_end, output)
    try:
        try:
            # Not wait_for: on Python 3.11 it swallows a cancel that arrives in
            # the turn the hook exits, and the daemon's stop would wait for
            # the deployment's next hooks.
            async with asyncio.timeout(timeout):
                await process.wait()
        except TimeoutError:
            _kill_group(process)
            await process.wait()
            await reader.drained(OUTPUT_GRACE)
            return HookResult(argv, process.returncode, True, output.text(), timeout)
        except asyncio.CancelledError:
            # The daemon stops or the job was aborted: the hook and whatever
            # it started in its session go with it.
            _kill_group(process)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_WAIT):
                    await process.wait()
            raise
        await reader.drained(OUTPUT_GRACE)
        return HookResult(
            argv,
            process.returncode,
            False,
            output.text(),
            time.monotonic() - started,
        )
    finally:
        reader.close()
