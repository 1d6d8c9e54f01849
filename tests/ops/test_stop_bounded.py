"""A daemon stop ends, whatever it finds running: hooks, posts, jobs in the store.

Each stop runs under a generous hang guard (HANG_GUARD); the guard is there to
fail a stop that hangs, not to time one.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select
from structlog.testing import capture_logs

import certd.api.jobs as jobs_module
import certd.store.db as db_module
from certd.api.jobs import Job, JobState
from certd.client import Client
from certd.config import Config
from certd.service import Daemon
from tests.daemon import make_config
from tests.renewal.factory import make_chain, store_certificate, wait_until

HANG_GUARD = 30.0
STOPPING = "interrupted: the daemon is stopping"


class Sink:
    """A webhook endpoint on 127.0.0.1 that records posts; holds them when told."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.hold: asyncio.Event | None = None
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        if self.hold is not None:
            await self.hold.wait()
        return web.Response(status=200)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    sink = Sink()
    await sink.start()
    yield sink
    await sink.stop()


@contextlib.asynccontextmanager
async def hang_guard() -> AsyncIterator[None]:
    """Fail what has not ended HANG_GUARD seconds in: a hang, not slowness."""
    async with asyncio.timeout(HANG_GUARD) as guard:
        yield
    # Code that drops cancels ends normally once the guard has fired.
    assert not guard.expired(), f"still running after {HANG_GUARD} s"


@contextlib.asynccontextmanager
async def started(config: Config) -> AsyncIterator[Daemon]:
    """A started daemon, stopped by the test; stopped here only if a test failed."""
    daemon = Daemon(config)
    await daemon.start()
    try:
        yield daemon
    finally:
        if daemon.started:
            async with asyncio.timeout(HANG_GUARD):
                await daemon.stop()


async def stop_within_guard(daemon: Daemon) -> None:
    async with hang_guard():
        await daemon.stop()


def events_named(
    logs: list[MutableMapping[str, Any]], name: str
) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def job_row(config: Config, job_id: int) -> tuple[str, str | None]:
    with contextlib.closing(sqlite3.connect(config.store.state_dir / "certd.db")) as db:
        state, error = _one(db, "SELECT state, error FROM job WHERE id = ?", job_id)
    return state, error


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (killed, not yet reaped by init) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _one(db: sqlite3.Connection, sql: str, *args: Any) -> Any:
    return db.execute(sql, args).fetchone()


async def test_delivery_task_woken_as_it_is_cancelled_still_ends(
    tmp_path: Path, sink: Sink
) -> None:
    config = make_config(
        tmp_path / "state",
        events={"webhooks": [{"url": sink.url, "kinds": ["certificate.expiring"]}]},
    )

    def received(count: int) -> Callable[[], bool]:
        return lambda: len(sink.received) == count

    async with started(config) as daemon:
        events = daemon.events
        for round_ in range(1, 4):
            # Let the round's post end and the delivery task fall asleep.
            await wait_until(received(round_ - 1))
            await asyncio.sleep(0.2)
            await events.publish("certificate.expiring", f"round {round_}")
            # publish woke the delivery task, whose wait has ended but which has
            # not run since: a cancel now is one Python 3.11's wait_for drops.
            await asyncio.sleep(0)
            async with hang_guard():
                await events.close()
            running = [
                task
                for task in asyncio.all_tasks()
                if task.get_name() == "webhook-deliveries" and not task.done()
            ]
            assert running == []
            events.start()
        await wait_until(lambda: len(sink.received) == 3)
        await stop_within_guard(daemon)

    assert [post["message"] for post in sink.received] == [
        "round 1",
        "round 2",
        "round 3",
    ]


async def test_stop_kills_a_running_deploy_hook_and_what_it_started(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    script = (
        "import os, subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; "
        "time.sleep(300)']); "
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}'); "
        "time.sleep(300)"
    )
    config = make_config(tmp_path / "state")
    async with started(config) as daemon:
        cid = await store_certificate(daemon, "web", make_chain(["web.example.test"]))
        _, key = await daemon.api_keys.create("tests")
        spec = {"hooks": [{"argv": [sys.executable, "-c", script], "timeout": 300}]}
        async with Client(url=f"http://127.0.0.1:{daemon.http_port}", api_key=key) as c:
            await c.call("certificate.set_deploy", cid, spec)
        await wait_until(lambda: pids.exists() and " " in pids.read_text())
        [job] = daemon.jobs.running.values()
        await stop_within_guard(daemon)

    hook, child = (int(pid) for pid in pids.read_text().split())
    assert not _alive(hook)
    await wait_until(lambda: not _alive(child), timeout=HANG_GUARD)
    assert job_row(config, job.id) == ("ABORTED", STOPPING)
    with contextlib.closing(sqlite3.connect(config.store.state_dir / "certd.db")) as db:
        # The deployment is still owed: the next start runs the hook again.
        owed = _one(
            db, "SELECT deploy_next_attempt_at FROM certificate WHERE id=?", cid
        )
    assert owed[0] is not None


async def test_stop_releases_a_webhook_post_under_way(
    tmp_path: Path, sink: Sink
) -> None:
    sink.hold = asyncio.Event()  # the hook never answers
    config = make_config(
        tmp_path / "state",
        events={"webhooks": [{"url": sink.url, "timeout": 300}]},
    )
    async with started(config) as daemon:
        await daemon.events.publish("certificate.expiring", "web expires")
        await wait_until(lambda: sink.received)
        with capture_logs() as logs:
            await stop_within_guard(daemon)
    stopped_at = datetime.now(UTC).replace(tzinfo=None)

    with contextlib.closing(sqlite3.connect(config.store.state_dir / "certd.db")) as db:
        attempts, due = _one(
            db, "SELECT attempts, next_attempt_at FROM webhook_delivery"
        )
    # Claimed for the hook's 300 s timeout, then released at the stop: the
    # next start posts it at once.
    assert attempts == 0
    assert datetime.fromisoformat(due).replace(tzinfo=None) <= stopped_at
    assert events_named(logs, "stop_step_cut_short") == []
    assert events_named(logs, "webhook_claims_kept") == []


async def test_stop_aborts_a_job_holding_the_store_session(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state")
    holding = asyncio.Event()

    async def hold_session(job: Job) -> None:
        async with daemon.db.session() as session:
            await session.execute(select(1))
            holding.set()
            await asyncio.Event().wait()

    async with started(config) as daemon:
        job = await daemon.jobs.submit("test.hold_session", {}, hold_session)
        await holding.wait()
        with capture_logs() as logs:
            await stop_within_guard(daemon)

    assert job.state == JobState.ABORTED
    assert job_row(config, job.id) == ("ABORTED", STOPPING)
    assert events_named(logs, "stop_step_cut_short") == []
    assert events_named(logs, "store_session_left_open") == []


async def test_a_job_that_drops_its_cancel_is_cancelled_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_module, "SHUTDOWN_GRACE", 2.0)
    config = make_config(tmp_path / "state")
    dropped = asyncio.Event()

    async def drops_one_cancel(job: Job) -> None:
        async with daemon.db.session() as session:
            await session.execute(select(1))
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                # as asyncio.wait_for on Python 3.11 does when what it waits
                # for ends in the turn the cancel comes
                dropped.set()
            await asyncio.Event().wait()  # the job's next step

    async with started(config) as daemon:
        job = await daemon.jobs.submit("test.drops_cancel", {}, drops_one_cancel)
        await wait_until(lambda: job.state == JobState.RUNNING)
        with capture_logs() as logs:
            await stop_within_guard(daemon)

    assert dropped.is_set()
    assert job_row(config, job.id) == ("ABORTED", STOPPING)
    assert events_named(logs, "job_left_running") == []


async def test_a_job_that_ignores_cancels_is_left_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_module, "SHUTDOWN_GRACE", 1.0)
    monkeypatch.setattr(jobs_module, "FINAL_SAVE_ATTEMPTS", 1)
    monkeypatch.setattr(db_module, "CLOSE_WAIT", 0.5)
    config = make_config(tmp_path / "state")
    release = asyncio.Event()

    async def stubborn(job: Job) -> None:
        async with daemon.db.session() as session:
            await session.execute(select(1))
            while not release.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await release.wait()

    async with started(config) as daemon:
        job = await daemon.jobs.submit("test.stubborn", {}, stubborn)
        await wait_until(lambda: job.state == JobState.RUNNING)
        try:
            with capture_logs() as logs:
                await stop_within_guard(daemon)
        finally:
            release.set()  # else the job would outlive the test's event loop
        assert job.task is not None
        async with hang_guard():
            await asyncio.wait({job.task})

    [left] = events_named(logs, "job_left_running")
    assert (left["job_id"], left["method"]) == (job.id, "test.stubborn")
    [session] = events_named(logs, "store_session_left_open")
    assert session["sessions"] == 1
    assert [entry["event"] for entry in logs][-1] == "daemon_stopped"
    # Its end could not be saved: the row still says it waits, and the next
    # start marks it aborted.
    assert job_row(config, job.id)[0] == JobState.WAITING.value
