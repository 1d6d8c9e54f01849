"""Named points in a renewal where a test can hold it, to kill the daemon there.

Only tests set ``CERTD_TEST_HOLD_AT`` (comma-separated checkpoint names); a
renewal that reaches one of them reports "held at NAME" as its progress and
waits until the file named by ``CERTD_TEST_HOLD_RELEASE`` exists (forever
without it). Unset, a checkpoint costs one environment lookup.

The points, in order: ``attempt_recorded`` (key and CSR stored, nothing
ordered), ``order_created`` (order URL stored, no TXT yet), ``txt_published``
(TXT values in DNS), ``finalized`` (the CA issued, nothing downloaded) and
``installed`` (new certificate stored, not yet deployed).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

HOLD_ENV = "CERTD_TEST_HOLD_AT"
RELEASE_ENV = "CERTD_TEST_HOLD_RELEASE"
POINTS = (
    "attempt_recorded",
    "order_created",
    "txt_published",
    "finalized",
    "installed",
)


class ProgressSink(Protocol):
    percent: float

    async def set_progress(self, percent: float, description: str = "") -> None: ...


async def checkpoint(name: str, job: ProgressSink | None) -> None:
    """Hold here if a test asked to; otherwise return at once."""
    held = os.environ.get(HOLD_ENV)
    if not held or name not in held.split(","):
        return
    log.warning("renewal_held", checkpoint=name)
    if job is not None:
        await job.set_progress(job.percent, f"held at {name}")
    release = os.environ.get(RELEASE_ENV)
    # a file another process creates; nothing in this process can signal it
    while release is None or not Path(release).exists():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    log.warning("renewal_released", checkpoint=name)
