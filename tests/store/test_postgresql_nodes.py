"""The daemons using a PostgreSQL store see each other: copies and other keys are refused.

In-process daemons with their own state directories on one database, as
hosts sharing an inventory run them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from certd.config import Config
from certd.errors import ConflictError, SecretStoreError
from certd.service import Daemon
from certd.store import nodes
from certd.store.crypto import key_id
from certd.store.db import Database
from certd.store.masterkey import parse_key, rotate_master_key, stored_key_ids
from certd.store.models import utcnow
from tests.daemon import make_config, running_daemon
from tests.pki_api.conftest import make_root
from tests.store.postgres import PostgresServer


@dataclass
class Store:
    """One database, plain SQL on it, and configs of daemons using it."""

    postgres: PostgresServer
    database: str
    base: Path

    @property
    def url(self) -> str:
        return self.postgres.url(self.database)

    async def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = await self.postgres.connect(self.database)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    def config(self, name: str, key_file: Path | None = None) -> Config:
        store: dict[str, Any] = {"database_url": self.url}
        if key_file is not None:
            store["master_key_file"] = str(key_file)
        return make_config(self.base / name, store=store)

    def copy_key(self, config: Config) -> Path:
        """A configured key file holding the master key ``config``'s daemon made."""
        path = self.base / f"{config.store.state_dir.name}.key"
        path.write_bytes((config.store.state_dir / "master.key").read_bytes())
        path.chmod(0o600)
        return path


@pytest.fixture
async def store(
    tmp_path: Path, postgres: PostgresServer, request: pytest.FixtureRequest
) -> AsyncIterator[Store]:
    yield Store(postgres, await postgres.create_database(request.node.name), tmp_path)


def _master_key(config: Config) -> bytes:
    path = config.store.master_key_file or config.store.state_dir / "master.key"
    return parse_key(path.read_bytes(), path)


async def _refused(config: Config) -> Exception:
    daemon = Daemon(config)
    with pytest.raises((ConflictError, SecretStoreError)) as refused:
        await daemon.start()
    return refused.value


async def test_a_copied_state_directory_is_refused_and_leaves_the_first_ones_jobs(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Beats often, so that the copy starting on the same host sees one soon.
    monkeypatch.setattr(nodes, "HEARTBEAT_SECONDS", 0.2)
    first = store.config("one")
    async with running_daemon(first) as one:
        node = one.daemon.node
        assert node is not None
        await store.rows(
            "INSERT INTO job (method, arguments, state, progress_percent, "
            "progress_description, caller, node, created_at) "
            "VALUES ('held.job', '[]', 'RUNNING', 0, '', 'tests', $1, now())",
            node,
        )
        before = await store.rows("SELECT instance, host FROM node")
        # The state directory copied with its node id, the key configured.
        (store.base / "two").mkdir(mode=0o700)
        (store.base / "two" / "node-id").write_text(f"{node}\n")
        second = store.config("two", store.copy_key(first))
        refused = await _refused(second)
        states = await store.rows("SELECT state FROM job WHERE method = 'held.job'")
        after = await store.rows("SELECT instance, host FROM node")

    host = before[0][1]
    assert isinstance(refused, ConflictError)
    assert refused.message.startswith(
        f"node {node} is in use by another certd on {host} (last seen "
    )
    assert refused.message.endswith(
        f"; on a copied state directory, delete {store.base / 'two' / 'node-id'} "
        "to have a new node id made"
    )
    assert states == [("RUNNING",)]
    assert after == before
    assert second.server.unix_socket is not None
    assert not second.server.unix_socket.exists()


async def test_a_copy_on_another_host_is_refused_without_waiting(
    store: Store,
) -> None:
    first = store.config("one")
    async with running_daemon(first) as one:
        node = one.daemon.node
        # As the first daemon's host would show on a clone with a new name.
        await store.rows("UPDATE node SET host = 'elsewhere.example'")
        (store.base / "two").mkdir(mode=0o700)
        (store.base / "two" / "node-id").write_text(f"{node}\n")
        refused = await _refused(store.config("two", store.copy_key(first)))

    assert isinstance(refused, ConflictError)
    assert f"node {node} is in use by another certd on elsewhere.example" in str(
        refused
    )


async def test_a_daemon_with_another_master_key_is_refused_and_seals_nothing(
    store: Store,
) -> None:
    first = store.config("one")
    async with running_daemon(first) as one:
        second = store.config("two")  # makes a master key of its own
        refused = await _refused(second)
        async with one.client() as client:
            await make_root(client)
        db = Database(store.url)
        try:
            sealed = await stored_key_ids(db)
        finally:
            await db.close()
        rows = await store.rows("SELECT node, master_key_id FROM node")

    own, other = key_id(_master_key(first)), key_id(_master_key(second))
    assert own != other
    assert isinstance(refused, SecretStoreError)
    assert refused.message.startswith(f"node {one.daemon.node} on ")
    assert f"uses master key {own} and this daemon {other}: " in refused.message
    assert set(sealed) == {own}
    assert rows == [(one.daemon.node, own)]


async def test_rotating_the_key_is_refused_while_a_daemon_runs_and_done_after(
    store: Store,
) -> None:
    first = store.config("one")
    # The host rotating: its own daemon stopped, the same key in its directory.
    rotating = store.base / "rotating"
    rotating.mkdir(mode=0o700)
    async with running_daemon(first) as one:
        (rotating / "master.key").write_bytes(
            (first.store.state_dir / "master.key").read_bytes()
        )
        (rotating / "master.key").chmod(0o600)
        db = Database(store.url)
        try:
            with pytest.raises(SecretStoreError) as refused:
                await rotate_master_key(db, rotating)
        finally:
            await db.close()
        node = one.daemon.node
    old_key = _master_key(first)
    db = Database(store.url)
    try:
        old_id, new_id, count = await rotate_master_key(db, rotating)
    finally:
        await db.close()

    assert refused.value.message.startswith(f"daemons still use the store: {node} on ")
    assert refused.value.message.endswith(
        "; stop every daemon sharing it before rotating the master key (each "
        "would go on sealing values under the old key)"
    )
    assert old_id == key_id(old_key)
    assert new_id == key_id(parse_key((rotating / "master.key").read_bytes(), rotating))
    assert new_id != old_id
    assert count == 0


async def _killed(store: Store, config: Config) -> tuple[str, datetime]:
    """Run a daemon and leave its row as a kill would: seen, not marked stopped."""
    async with running_daemon(config) as one:
        node = one.daemon.node
        assert node is not None
        (seen,) = (await store.rows("SELECT seen_at FROM node"))[0]
    await store.rows("UPDATE node SET seen_at = $1", seen)
    return node, seen


async def test_a_killed_daemon_is_not_counted_after_the_heartbeat_window(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nodes, "HEARTBEAT_SECONDS", 0.2)
    first = store.config("one")
    node, _ = await _killed(store, first)
    # recent however long the rotation takes to look (a busy machine)
    await store.rows("UPDATE node SET seen_at = $1", utcnow() + timedelta(seconds=5))
    rotating = store.base / "rotating"
    rotating.mkdir(mode=0o700)
    (rotating / "master.key").write_bytes(
        (first.store.state_dir / "master.key").read_bytes()
    )
    (rotating / "master.key").chmod(0o600)
    db = Database(store.url)
    try:
        with pytest.raises(SecretStoreError):
            await rotate_master_key(db, rotating)
        window = nodes.HEARTBEAT_SECONDS * nodes.MISSED_BEATS
        await store.rows(
            "UPDATE node SET seen_at = $1", utcnow() - timedelta(seconds=window + 1)
        )
        _, new_id, _ = await rotate_master_key(db, rotating)
    finally:
        await db.close()

    assert new_id != key_id(_master_key(first))
    assert node


async def test_a_daemon_restarted_after_a_kill_takes_its_row_back(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its killed run beats no more: the restart watches the row for a beat
    # (1.5 heartbeats) and, seeing none, goes on.
    monkeypatch.setattr(nodes, "HEARTBEAT_SECONDS", 0.2)
    config = store.config("one")
    node, _ = await _killed(store, config)
    # Seen last a little ahead of now: still recent when the restart looks,
    # however long its start takes on a busy machine.
    await store.rows("UPDATE node SET seen_at = $1", utcnow() + timedelta(seconds=5))
    killed = await store.rows("SELECT instance FROM node")
    with capture_logs() as logs:
        async with running_daemon(config) as again:
            restarted = again.daemon.node
            rows = await store.rows("SELECT instance, seen_at IS NOT NULL FROM node")

    taken = [e for e in logs if e["event"] == "node_taken_over"]
    assert restarted == node
    assert rows[0][0] != killed[0][0]
    assert rows[0][1] is True
    assert [(e["node"], e["host"]) for e in taken] == [(node, nodes.host_name())]


async def test_a_restart_right_after_a_clean_stop_is_not_refused(
    store: Store,
) -> None:
    # The default heartbeat: a restart that had to watch for one would wait.
    config = store.config("one")
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(running_daemon(config))
        first_instance = one.daemon.presence.instance if one.daemon.presence else ""
    stopped = await store.rows("SELECT instance, seen_at FROM node")
    with capture_logs() as logs:
        async with running_daemon(config) as again:
            running = await store.rows("SELECT instance, seen_at IS NOT NULL FROM node")
            second_instance = again.daemon.presence.instance  # type: ignore[union-attr]

    assert stopped == [(first_instance, None)]
    assert running == [(second_instance, True)]
    assert second_instance != first_instance
    assert not [e for e in logs if e["event"] == "node_taken_over"]


async def test_the_heartbeat_refreshes_the_row(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nodes, "HEARTBEAT_SECONDS", 0.05)
    async with running_daemon(store.config("one")) as one:
        (started,) = (await store.rows("SELECT seen_at FROM node"))[0]
        for _ in range(200):
            (seen,) = (await store.rows("SELECT seen_at FROM node"))[0]
            if seen > started:
                break
            await asyncio.sleep(0.05)
        instance = one.daemon.presence.instance if one.daemon.presence else None
        (row,) = await store.rows("SELECT instance FROM node")

    assert seen > started
    assert row == (instance,)


async def test_of_two_daemons_with_other_keys_starting_together_one_starts(
    store: Store,
) -> None:
    daemons = [Daemon(store.config("one")), Daemon(store.config("two"))]
    outcomes = await asyncio.gather(
        *(daemon.start() for daemon in daemons), return_exceptions=True
    )
    try:
        started = [d for d, o in zip(daemons, outcomes, strict=True) if o is None]
        refused = [o for o in outcomes if o is not None]
        rows = await store.rows("SELECT node, master_key_id FROM node")
    finally:
        for daemon in daemons:
            if daemon.started:
                await daemon.stop()

    assert len(started) == 1
    assert [type(o) for o in refused] == [SecretStoreError]
    own = key_id(_master_key(started[0].config))
    assert rows == [(started[0].node, own)]


async def test_the_jobs_of_a_daemon_gone_for_good_are_ended_by_the_others(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nodes, "HEARTBEAT_SECONDS", 0.05)
    async with running_daemon(store.config("one")) as one:
        gate = asyncio.Event()

        async def blocked(job: Any) -> None:
            await gate.wait()

        own = await one.daemon.jobs.submit("test.blocked", [], blocked)
        await store.rows(
            "INSERT INTO node (node, host, master_key_id, instance, started_at, "
            "seen_at) VALUES ('gone-1', 'h', 'k', 'i', $1, $1), "
            "('alive-1', 'h', 'k', 'i', $1, $2)",
            utcnow() - timedelta(hours=1),
            utcnow() + timedelta(hours=1),  # seen (its clock a little ahead)
        )
        await store.rows(
            "INSERT INTO job (method, arguments, state, progress_percent, "
            "progress_description, caller, node, created_at) VALUES "
            "('certificate.renew', '[]', 'RUNNING', 50, '', 'scheduler', $1, $2)",
            "gone-1",
            utcnow(),
        )
        await store.rows(
            "INSERT INTO job (method, arguments, state, progress_percent, "
            "progress_description, caller, node, created_at) VALUES "
            "('certificate.renew', '[]', 'RUNNING', 50, '', 'scheduler', $1, $2)",
            "alive-1",
            utcnow(),
        )
        for _ in range(200):
            ended = await store.rows(
                "SELECT node, state, error FROM job WHERE node = 'gone-1'"
            )
            if ended[0][1] != "RUNNING":
                break
            await asyncio.sleep(0.05)
        others = await store.rows(
            "SELECT node, state FROM job WHERE node <> 'gone-1' ORDER BY id"
        )
        gate.set()
        await one.daemon.jobs.wait(own.id, 10)

    assert ended == [
        (
            "gone-1",
            "ABORTED",
            "interrupted: its daemon (node gone-1) is no longer running",
        )
    ]
    # its own job (its row not yet caught up) and a seen daemon's are left
    assert others == [(one.daemon.node, "WAITING"), ("alive-1", "RUNNING")]
