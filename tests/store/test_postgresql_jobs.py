"""A job run by one daemon sharing the store is followed, not aborted, from another."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from certd.api.jobs import Job
from certd.client import RpcError
from tests.store.test_postgresql_shared import Shared, shared  # noqa: F401


async def test_another_daemons_job_is_waited_for_and_watched(
    shared: Shared,  # noqa: F811
) -> None:
    gate = asyncio.Event()

    async def slow(job: Job) -> str:
        await job.set_progress(40, "half way")
        await gate.wait()
        return "done"

    job = await shared.one.daemon.jobs.submit("test.slow", {}, slow)
    async with shared.two.client() as other:

        async def halfway() -> dict[str, Any]:
            # the first progress reaches the row at its first flush
            return await other.call("core.job_watch", job.id, 5)  # type: ignore[no-any-return]

        watched = await halfway()
        while watched["progress"]["percent"] != 40:
            watched = await halfway()
        waiting = asyncio.ensure_future(other.call("core.job_wait", job.id, 30))
        await asyncio.sleep(0.5)
        still = not waiting.done()
        with pytest.raises(RpcError) as refused:
            await other.call("core.job_abort", job.id)
        gate.set()
        finished = await waiting
        timed_out = await other.call("core.job_wait", job.id, 0)

    assert watched["state"] == "RUNNING"
    assert watched["progress"]["description"] == "half way"
    assert still  # job_wait waited on the other daemon's job
    assert (finished["state"], finished["result"]) == ("SUCCESS", "done")
    assert timed_out == finished
    assert refused.value.message.endswith(
        f"job {job.id} does not run in this daemon: abort it in the daemon that runs it"
    )
    assert (await shared.one.daemon.jobs.entry(job.id))["state"] == "SUCCESS"
