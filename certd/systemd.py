"""systemd's notify protocol (sd_notify(3)), spoken directly over its socket.

``READY=1`` once the store and the API are up, ``STATUS=`` lines as the daemon
changes state, ``RELOADING=1``/``STOPPING=1`` around reloads and shutdown, and
``WATCHDOG=1`` from the event loop itself while ``WATCHDOG_USEC`` is set, so a
loop that hangs stops the pings and systemd restarts the daemon. Outside
systemd (no ``NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time

import structlog

log = structlog.get_logger(__name__)


def _address(path: str) -> str | None:
    if path.startswith("@"):
        # an abstract socket: the name starts with a NUL byte, not with '@'
        return "\0" + path[1:]
    if path.startswith("/"):
        return path
    return None  # vsock and other forms are not used for services


def notify(*assignments: str) -> bool:
    """Send ``KEY=value`` assignments to systemd; False when not under systemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = _address(path)
    if address is None:
        log.warning("notify_socket_unsupported", notify_socket=path)
        return False
    message = "\n".join(assignments).encode()
    try:
        with socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
        ) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as exc:
        log.warning("notify_failed", error=exc.strerror)
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of WATCHDOG_USEC), or None if off."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process (we were started by a wrapper)
    return int(usec) / 1_000_000 / 2


class Notifier:
    """The daemon's side of the protocol, with the watchdog task."""

    def __init__(self) -> None:
        self._watchdog: asyncio.Task[None] | None = None

    def ready(self, status: str) -> None:
        notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        notify(f"STATUS={status}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd match this message to its reload request
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the config")

    def reloaded(self, status: str) -> None:
        notify("READY=1", f"STATUS={status}")

    def stopping(self) -> None:
        notify("STOPPING=1", "STATUS=stopping: cleaning up running jobs")

    def start_watchdog(self) -> float | None:
        """Start pinging if systemd asked for it; return the interval."""
        interval = watchdog_interval()
        if interval is None or self._watchdog is not None:
            return interval
        self._watchdog = asyncio.create_task(self._ping(interval), name="watchdog")
        log.info("watchdog_started", interval=interval)
        return interval

    async def _ping(self, interval: float) -> None:
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
