"""Several daemons sharing one PostgreSQL store: each does its part, none twice.

Two in-process daemons with their own state directories, one database and
one master key file, as hosts sharing an inventory run them.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509

from certd.api.pki_store import CrlPublisher
from certd.client import RpcError
from certd.config import WebhookConfig
from certd.renewal.checkpoints import HOLD_ENV, RELEASE_ENV
from certd.service import Daemon
from certd.store.models import utcnow
from tests.daemon import RunningDaemon, make_config, running_daemon
from tests.pki_api.conftest import issue, make_root
from tests.renewal.factory import wait_until
from tests.store.postgres import PostgresServer

T = TypeVar("T")


@dataclass
class Shared:
    """Two daemons on one database, and plain SQL on it."""

    one: RunningDaemon
    two: RunningDaemon
    postgres: PostgresServer
    database: str

    async def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = await self.postgres.connect(self.database)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    async def lock_waiters(self) -> int:
        """How many sessions of the database wait for a lock another one holds."""
        found = await self.rows(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = $1 AND wait_event_type = 'Lock'",
            self.database,
        )
        return int(found[0][0])


async def _start_two(
    stack: AsyncExitStack,
    tmp_path: Path,
    postgres: PostgresServer,
    database: str,
    **sections: Any,
) -> Shared:
    """Both daemons, with ``sections`` added to the config of each."""
    url = postgres.url(database)
    first = make_config(tmp_path / "one", store={"database_url": url}, **sections)
    one = await stack.enter_async_context(running_daemon(first))
    # The second daemon gets the first one's master key as a configured file.
    key_file = tmp_path / "master.key"
    key_file.write_bytes((first.store.state_dir / "master.key").read_bytes())
    key_file.chmod(0o600)
    second = make_config(
        tmp_path / "two",
        store={"database_url": url, "master_key_file": str(key_file)},
        **sections,
    )
    two = await stack.enter_async_context(running_daemon(second))
    return Shared(one, two, postgres, database)


@pytest.fixture
async def shared(
    tmp_path: Path, postgres: PostgresServer, request: pytest.FixtureRequest
) -> AsyncIterator[Shared]:
    database = await postgres.create_database(request.node.name)
    async with AsyncExitStack() as stack:
        yield await _start_two(stack, tmp_path, postgres, database)


async def _leaf(shared: Shared) -> dict[str, Any]:
    async with shared.one.client() as client:
        root = await make_root(client)
        return await issue(client, root["id"], "web")  # type: ignore[no-any-return]


async def _make_due(shared: Shared, certificate_id: int) -> None:
    await shared.rows(
        "UPDATE certificate SET next_attempt_at = $1 WHERE id = $2",
        utcnow() - timedelta(minutes=1),
        certificate_id,
    )


async def _in_task(step: Awaitable[T]) -> T:
    # Sessions of one task are refused while another is open in it: each
    # daemon's call runs in a task of its own, as it would in its process.
    return await asyncio.ensure_future(step)


async def test_a_daemon_starting_leaves_the_other_ones_renewal_and_jobs_alone(
    tmp_path: Path,
    postgres: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    database = await postgres.create_database("shared_start")
    url = postgres.url(database)
    release = tmp_path / "release"
    monkeypatch.setenv(HOLD_ENV, "attempt_recorded")
    monkeypatch.setenv(RELEASE_ENV, str(release))
    async with AsyncExitStack() as stack:
        first = make_config(tmp_path / "one", store={"database_url": url})
        one = await stack.enter_async_context(running_daemon(first))
        async with one.client() as client:
            root = await make_root(client)
            leaf = await issue(client, root["id"], "web")
            job_id = await client.call("certificate.renew", leaf["id"])
            held = await wait_until(
                lambda: (
                    (job := one.daemon.jobs.running.get(job_id))
                    and job.description == "held at attempt_recorded"
                )
            )
        assert held
        node_one = one.daemon.node
        # Rows of a daemon from before node ids, of the second daemon's own
        # earlier run, and of a third daemon still running somewhere.
        (tmp_path / "two").mkdir(mode=0o700)
        (tmp_path / "two" / "node-id").write_text("host-two-1\n")
        for node, method in [
            (None, "old.job"),
            ("host-two-1", "own.job"),
            ("host-three-1", "third.job"),
        ]:
            await _sql(
                postgres,
                database,
                "INSERT INTO job (method, arguments, state, progress_percent, "
                "progress_description, caller, node, created_at) "
                "VALUES ($1, '[]', 'RUNNING', 0, '', 'tests', $2, now())",
                method,
                node,
            )

        key_file = tmp_path / "master.key"
        key_file.write_bytes((first.store.state_dir / "master.key").read_bytes())
        key_file.chmod(0o600)
        second = make_config(
            tmp_path / "two",
            store={"database_url": url, "master_key_file": str(key_file)},
        )
        two = await stack.enter_async_context(running_daemon(second))
        started_two = dict(two.daemon.renewal.active)
        states = {
            method: state
            for method, state in await _sql(
                postgres, database, "SELECT method, state FROM job"
            )
        }
        renewing = await _sql(
            postgres,
            database,
            "SELECT renewing_node FROM certificate WHERE id = $1",
            leaf["id"],
        )

        # Asked of the second daemon, a renewal of it is refused at once, and
        # a scheduled one is skipped.
        async with two.client() as other:
            with pytest.raises(RpcError) as refused:
                await other.call("certificate.renew", leaf["id"])
            planned = await other.call(
                "certificate.renewal_plan", [["id", "=", leaf["id"]]], {"get": True}
            )
        await _sql(
            postgres,
            database,
            "UPDATE certificate SET next_attempt_at = $1 WHERE id = $2",
            utcnow() - timedelta(minutes=1),
            leaf["id"],
        )
        await two.daemon.renewal.tick()
        ticked = dict(two.daemon.renewal.active)
        scheduled = await _in_task(
            two.daemon.renewal.submit_renewal(leaf["id"], "schedule")
        )
        skipped = await two.daemon.jobs.wait(scheduled.id)

        release.touch()
        async with one.client() as client:
            renewed = await client.wait_job(job_id)
        after = await _sql(
            postgres,
            database,
            "SELECT certificate, renewing_node, renewal_lease_until, failure_count "
            "FROM certificate WHERE id = $1",
            leaf["id"],
        )
        attempts = await _sql(
            postgres, database, "SELECT state, job_id FROM renewal_attempt"
        )

    assert started_two == {}  # the open attempt was not resumed there
    assert states["certificate.renew"] in ("WAITING", "RUNNING")
    assert (states["old.job"], states["own.job"]) == ("ABORTED", "ABORTED")
    assert states["third.job"] == "RUNNING"
    assert renewing == [(node_one,)]
    assert planned["renewing_node"] == node_one
    assert "being renewed by another daemon" in refused.value.args[0]
    assert f"(node {node_one})" in refused.value.args[0]
    assert refused.value.data["type"] == "RenewingElsewhere"
    assert ticked == {}
    assert skipped["state"] == "SUCCESS"
    assert skipped["result"]["skipped"] is True
    assert renewed["serial"] != leaf["serial"]
    assert renewed.get("skipped", False) is False
    leaf_after = x509.load_pem_x509_certificate(after[0][0].encode())
    assert leaf_after.serial_number == int(renewed["serial"], 16)
    assert after[0][1:] == (None, None, 0)
    assert attempts == [("succeeded", job_id)]


async def _sql(
    postgres: PostgresServer, database: str, sql: str, *args: Any
) -> list[tuple[Any, ...]]:
    conn = await postgres.connect(database)
    try:
        return [tuple(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def test_two_daemons_finding_a_certificate_due_renew_it_once(
    shared: Shared,
) -> None:
    leaf = await _leaf(shared)
    await _make_due(shared, leaf["id"])

    jobs = await asyncio.gather(
        _in_task(shared.one.daemon.renewal.submit_renewal(leaf["id"], "schedule")),
        _in_task(shared.two.daemon.renewal.submit_renewal(leaf["id"], "schedule")),
    )
    ends = [
        await shared.one.daemon.jobs.wait(jobs[0].id),
        await shared.two.daemon.jobs.wait(jobs[1].id),
    ]
    renewed = await shared.rows(
        "SELECT count(*) FROM event WHERE kind = 'certificate.renewed'"
    )
    attempts = await shared.rows("SELECT state FROM renewal_attempt")
    stored = await shared.rows(
        "SELECT failure_count, renewing_node FROM certificate WHERE id = $1",
        leaf["id"],
    )

    assert [end["state"] for end in ends] == ["SUCCESS", "SUCCESS"]
    assert sorted(bool(end["result"].get("skipped")) for end in ends) == [False, True]
    assert renewed == [(1,)]
    assert attempts == [("succeeded",)]
    assert stored == [(0, None)]


async def test_a_lease_left_by_a_dead_daemon_is_taken_over_once_it_expires(
    shared: Shared,
) -> None:
    leaf = await _leaf(shared)
    await _make_due(shared, leaf["id"])
    lease = "UPDATE certificate SET renewing_node = 'gone-1', renewal_lease_until = $1"

    # A lease that has not run out: the certificate is not renewed here.
    await shared.rows(lease, utcnow() + timedelta(minutes=5))
    waiting = await _in_task(
        shared.two.daemon.renewal.submit_renewal(leaf["id"], "schedule")
    )
    waited = await shared.two.daemon.jobs.wait(waiting.id)
    # Once it has, the certificate is renewed by the daemon that finds it due.
    await shared.rows(lease, utcnow() - timedelta(seconds=1))
    taking = await _in_task(
        shared.two.daemon.renewal.submit_renewal(leaf["id"], "schedule")
    )
    took = await shared.two.daemon.jobs.wait(taking.id)
    stored = await shared.rows("SELECT renewing_node FROM certificate")

    assert waited["result"]["skipped"] is True
    assert took["state"] == "SUCCESS"
    assert took["result"].get("skipped", False) is False
    assert took["result"]["serial"] != leaf["serial"]
    assert stored == [(None,)]


async def test_a_webhook_delivery_is_claimed_by_one_daemon(shared: Shared) -> None:
    # Both daemons have dropped what no hook of theirs posts before this.
    for daemon in (shared.one.daemon, shared.two.daemon):
        await wait_until(functools.partial(_hooks_checked, daemon))
    digest = "ab" * 32
    hook = WebhookConfig(url="http://127.0.0.1:9/hook")
    event = await shared.rows(
        "INSERT INTO event (kind, severity, message, data, created_at) "
        "VALUES ('test.event', 'info', 'one event', '{}', now()) RETURNING id"
    )
    await shared.rows(
        "INSERT INTO webhook_delivery (event_id, hook, attempts, next_attempt_at, "
        "created_at) VALUES ($1, $2, 0, $3, now())",
        event[0][0],
        digest,
        utcnow() - timedelta(seconds=1),
    )
    first_claimed = asyncio.Event()
    commit = asyncio.Event()

    async def claim(daemon: Any, hold: bool) -> list[tuple[int, int, int]]:
        async with daemon.db.session() as session:
            rows = await daemon.events._claim(session, digest, hook, 10, utcnow())
            if hold:
                first_claimed.set()
                await commit.wait()
        return list(rows)

    first = asyncio.ensure_future(claim(shared.one.daemon, True))
    await first_claimed.wait()
    # The second claim reads the row as due, then waits for the first's commit.
    second = asyncio.ensure_future(claim(shared.two.daemon, False))
    await wait_until(lambda: _waiting(shared))
    commit.set()
    claims = [await first, await second]

    assert [len(rows) for rows in claims] == [1, 0]
    assert claims[0][0][1] == event[0][0]


def _hooks_checked(daemon: Daemon) -> bool:
    return daemon.events._checked_hooks is not None


async def _waiting(shared: Shared) -> bool:
    return await shared.lock_waiters() > 0


async def test_crl_numbers_do_not_repeat_when_two_daemons_publish_at_once(
    shared: Shared,
) -> None:
    async with shared.one.client() as client:
        root = await make_root(client)
    before = await shared.rows(
        "SELECT crl_number FROM certificate_authority WHERE id = $1", root["id"]
    )
    # Both publish while a third session holds the CA's row: they meet there.
    blocker = await shared.postgres.connect(shared.database)
    try:
        locked = blocker.transaction()
        await locked.start()
        await blocker.execute(
            "SELECT id FROM certificate_authority WHERE id = $1 FOR UPDATE", root["id"]
        )
        publishers: list[CrlPublisher] = [
            d.services["certificateauthority"].crls  # type: ignore[attr-defined]
            for d in (shared.one.daemon, shared.two.daemon)
        ]
        both = [
            asyncio.ensure_future(publisher.publish(root["id"]))
            for publisher in publishers
        ]
        await wait_until(lambda: _waiters(shared, 2))
        await locked.rollback()
        published = [await task for task in both]
    finally:
        await blocker.close()
    after = await shared.rows(
        "SELECT crl_number, crl FROM certificate_authority WHERE id = $1", root["id"]
    )
    crl = x509.load_pem_x509_crl(after[0][1].encode())
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    assert published == [True, True]
    assert after[0][0] == before[0][0] + 2
    assert number == after[0][0]


async def _waiters(shared: Shared, count: int) -> bool:
    return await shared.lock_waiters() >= count
