"""CPU-heavy work (key generation) off the event loop.

OpenSSL's key generation runs without the interpreter lock held, so worker
threads keep the event loop answering while an RSA-4096 key is made; the pool
bounds how many such keys are made at once. Only plain data crosses over:
options in, PEM out (and the key object, so that callers need not load the
PEM again: for RSA that re-checks the key, about 0.25 s for RSA-4096, which on
the event loop would stall every other call). That check itself holds the
interpreter lock, so an imported key is checked in a child process instead
(certd.pki.keycheck).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from certd.pki.keys import PrivateKey

T = TypeVar("T")
# Niceness of the worker threads: with every core busy making keys, the
# scheduler still gives the event loop's thread most of a core, so calls keep
# answering in milliseconds instead of waiting for time slices.
WORKER_NICENESS = 10


def generate_key_pem(options: dict[str, Any]) -> str:
    """Generate a private key from KeyOptions fields and return it as PKCS#8 PEM."""
    from certd.pki.keys import generate_private_key, private_key_to_pem
    from certd.pki.models import KeyOptions

    return private_key_to_pem(generate_private_key(KeyOptions.model_validate(options)))


def generate_key(options: dict[str, Any]) -> tuple[str, PrivateKey]:
    """Generate a private key from KeyOptions fields: its PKCS#8 PEM and the key."""
    from certd.pki.keys import generate_private_key, private_key_to_pem
    from certd.pki.models import KeyOptions

    key = generate_private_key(KeyOptions.model_validate(options))
    return private_key_to_pem(key), key


def _lower_priority() -> None:
    # On Linux a thread id names one thread to setpriority; an unprivileged
    # process may always raise its own niceness.
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)


class Workers:
    """A lazily started pool of worker threads for CPU-bound calls."""

    def __init__(self, threads: int = 2) -> None:
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self.threads,
                thread_name_prefix="certd-cpu",
                initializer=_lower_priority,
            )
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
