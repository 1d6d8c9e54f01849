"""CPU-heavy work (key generation) in worker processes, off the event loop.

RSA-4096 generation takes up to seconds; in a thread it would still compete
with the event loop for the interpreter, so it runs in processes. Only plain
data crosses the boundary: options in, PEM out.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def generate_key_pem(options: dict[str, Any]) -> str:
    """Generate a private key from KeyOptions fields and return it as PKCS#8 PEM."""
    from certd.pki.keys import generate_private_key, private_key_to_pem
    from certd.pki.models import KeyOptions

    return private_key_to_pem(generate_private_key(KeyOptions.model_validate(options)))


class Workers:
    """A lazily started pool of worker processes."""

    def __init__(self, processes: int = 2) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            # forkserver: forking a process that runs threads and an event loop
            # could copy held locks into the child.
            context = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(self.processes, mp_context=context)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
