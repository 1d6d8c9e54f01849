"""What one daemon sharing the store leaves to another: its jobs, its webhooks."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from certd.api.jobs import Job
from certd.client import RpcError
from certd.store.models import Event, WebhookDelivery, utcnow
from tests.daemon import make_config, running_daemon
from tests.renewal.factory import wait_until
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


async def test_deliveries_to_a_hook_another_daemon_has_are_left_to_it_for_a_day(
    tmp_path: Path, pg_url: str
) -> None:
    config = make_config(tmp_path / "state", store={"database_url": pg_url})
    async with running_daemon(config) as first:
        async with first.daemon.db.session() as session:
            event = Event(
                kind="certificate.renewed",
                severity="info",
                message="m",
                data={},
                created_at=utcnow(),
            )
            session.add(event)
            await session.flush()
            for age in (timedelta(0), timedelta(days=2)):
                session.add(
                    WebhookDelivery(
                        event_id=event.id,
                        hook="f" * 64,  # a hook this daemon has no config for
                        attempts=0,
                        next_attempt_at=utcnow(),
                        created_at=utcnow() - age,
                    )
                )
    # The next start checks the rows against its (empty) list of hooks.
    async with running_daemon(config) as again:

        async def ages() -> list[int] | None:
            async with again.daemon.db.session() as session:
                rows = (await session.scalars(select(WebhookDelivery))).all()
            days = sorted((utcnow() - row.created_at).days for row in rows)
            return days if days == [0] else None

        kept = await wait_until(ages, timeout=10)

    assert kept == [0]  # the day-old one was dropped, the fresh one left
