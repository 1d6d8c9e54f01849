"""The daemons using a store: one row each, checked at start and before a key rotation.

Each daemon keeps a ``node`` row: its host, the key id of its master key, a
random token of its process, and when it was last seen (a heartbeat). Daemons
sharing a PostgreSQL store check the rows at start, one at a time under an
advisory lock, so that a second process with the same node id (a copied state
directory) or with another master key is refused before it touches anything,
and ``certd rotate-master-key`` is refused while any daemon still runs.

On SQLite one daemon uses the store (the state directory's lock sees to it):
the row is written at start and stop, nothing is checked and nothing beats.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import select, text, update
from sqlalchemy.exc import SQLAlchemyError

from certd.errors import CertdError, ConflictError, SecretStoreError
from certd.store.db import MIGRATION_LOCK, Database
from certd.store.models import Job, Node, utcnow

log = structlog.get_logger(__name__)

# How often a running daemon refreshes its row's seen_at.
HEARTBEAT_SECONDS = 30.0
# A daemon not seen for this many heartbeats is taken for gone (killed, or
# its host down); one seen since is taken for running.
MISSED_BEATS = 3
# How long, in heartbeats, a daemon starting on the host a running-looking
# row of its own node id names watches that row for a beat before it takes
# the row over: a daemon restarted after a crash finds its killed self there.
WATCH_BEATS = 1.5
# The PostgreSQL advisory lock under which daemons join the store and a key
# is rotated (the migration lock's number, plus one).
NODES_LOCK = MIGRATION_LOCK + 1


def host_name() -> str:
    """This host's name as node rows show it."""
    return socket.gethostname()[:255] or "unknown"


def _shared(db: Database) -> bool:
    # Only a server database can be used by daemons of several state directories.
    return db.engine.dialect.name != "sqlite"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "never"


@asynccontextmanager
async def presence_lock(db: Database) -> AsyncIterator[None]:
    """Hold the store's node lock: daemons join, and keys rotate, one at a time.

    A no-op on SQLite, where the state directory's lock already excludes them.
    """
    if not _shared(db):
        yield
        return
    # A transaction-level lock, released when the transaction ends, however
    # it ends (a session-level one could outlive an error in a pooled connection).
    async with db.engine.begin() as conn:
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": NODES_LOCK}
        )
        yield


def _seen_lately() -> Any:
    """SQL: the node row was refreshed within MISSED_BEATS heartbeats."""
    return Node.seen_at >= utcnow() - timedelta(
        seconds=HEARTBEAT_SECONDS * MISSED_BEATS
    )


async def present_nodes(db: Database) -> list[Node]:
    """Rows of the daemons seen within MISSED_BEATS heartbeats, in node order."""
    async with db.session() as session:
        found = await session.scalars(
            select(Node).where(_seen_lately()).order_by(Node.node)
        )
        return list(found)


async def refuse_while_present(db: Database) -> None:
    """Refuse a master key rotation while a daemon sharing the store runs.

    Call under :func:`presence_lock`. Nothing is checked on SQLite, where the
    state directory's lock refuses the rotation while the daemon runs.

    Raises:
        SecretStoreError: naming the daemons seen recently.
    """
    if not _shared(db):
        return
    running = await present_nodes(db)
    if running:
        names = ", ".join(
            f"{row.node} on {row.host} (last seen {_when(row.seen_at)})"
            for row in running
        )
        raise SecretStoreError(
            f"daemons still use the store: {names}; stop every daemon sharing "
            "it before rotating the master key (each would go on sealing "
            "values under the old key)"
        )


class NodePresence:
    """This daemon's row among the daemons using the store, and its heartbeat."""

    def __init__(self, db: Database, node: str, node_file: Path) -> None:
        """``node_file``: where the node id is kept, named when it is refused."""
        self.db = db
        self.node = node
        self.node_file = node_file
        self.host = host_name()
        self.instance = secrets.token_hex(16)
        self._heartbeat: asyncio.Task[None] | None = None
        self.joined = False

    async def join(self, master_key_id: str) -> None:
        """Check the other daemons and write this one's row; call under presence_lock.

        Raises:
            SecretStoreError: a daemon seen recently uses another master key.
            ConflictError: another process runs with this node id.
        """
        if _shared(self.db):
            present = await present_nodes(self.db)
            for row in present:
                if row.node != self.node and row.master_key_id != master_key_id:
                    raise SecretStoreError(
                        f"node {row.node} on {row.host} (last seen "
                        f"{_when(row.seen_at)}) uses master key {row.master_key_id} "
                        f"and this daemon {master_key_id}: secrets of the store "
                        "would end up under two keys; give every daemon sharing "
                        "it the same master key"
                    )
            own = next((row for row in present if row.node == self.node), None)
            if own is not None and own.instance != self.instance:
                await self._refuse_if_running(own)
        now = utcnow()
        async with self.db.session() as session:
            found = await session.get(Node, self.node, with_for_update=True)
            row = found if found is not None else Node(node=self.node)
            if found is None:
                session.add(row)
            row.host = self.host
            row.master_key_id = master_key_id
            row.instance = self.instance
            row.started_at = now
            row.seen_at = now
        self.joined = True
        log.info("node_joined", node=self.node, host=self.host, key_id=master_key_id)

    async def _refuse_if_running(self, own: Node) -> None:
        """Refuse if the process ``own`` names runs; else take its row over.

        Raises:
            ConflictError: it runs (on another host, or it beat meanwhile).
        """
        running = own.host != self.host
        if not running:
            # The same host name: the killed earlier run of this daemon, or a
            # copy of its host (a cloned VM keeps the name). A running one
            # beats within a heartbeat.
            running = await self._beats(own)
        if running:
            raise ConflictError(
                f"node {self.node} is in use by another certd on {own.host} "
                f"(last seen {_when(own.seen_at)}); on a copied state directory, "
                f"delete {self.node_file} to have a new node id made"
            )
        log.warning(
            "node_taken_over",
            node=self.node,
            host=own.host,
            last_seen=_when(own.seen_at),
        )

    async def _beats(self, own: Node) -> bool:
        """Whether the row ``own`` is refreshed within WATCH_BEATS heartbeats."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HEARTBEAT_SECONDS * WATCH_BEATS
        step = min(1.0, HEARTBEAT_SECONDS / 5)
        while loop.time() < deadline:
            await asyncio.sleep(step)
            async with self.db.session() as session:
                now = await session.get(Node, self.node)
                if now is None or now.seen_at is None:
                    return False  # it stopped meanwhile
                if now.instance != own.instance or now.seen_at != own.seen_at:
                    return True
        return False

    def start_heartbeat(self) -> None:
        """Refresh the row every HEARTBEAT_SECONDS (not on SQLite) until :meth:`leave`."""
        if _shared(self.db) and self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(), name="node-heartbeat")

    async def _beat(self) -> None:
        lost = False
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                async with self.db.session() as session:
                    done = await session.execute(
                        update(Node)
                        .where(Node.node == self.node, Node.instance == self.instance)
                        .values(seen_at=utcnow())
                    )
            except (SQLAlchemyError, OSError, CertdError) as exc:
                # The store is away for a moment: the next beat tries again.
                log.warning("node_heartbeat_failed", node=self.node, error=str(exc))
                continue
            if done.rowcount == 0 and not lost:  # type: ignore[attr-defined]
                # Another process with this node id took the row over after
                # this one went unseen: both now think they hold its leases.
                log.error(
                    "node_presence_lost",
                    node=self.node,
                    hint="another certd runs with this node id; stop one",
                )
            lost = done.rowcount == 0  # type: ignore[attr-defined]
            try:
                await self.abort_orphaned_jobs()
            except (SQLAlchemyError, OSError, CertdError) as exc:
                log.warning("orphaned_jobs_not_aborted", error=str(exc))

    async def abort_orphaned_jobs(self) -> int:
        """Mark ABORTED the unfinished jobs of daemons no longer seen; count them.

        A daemon killed for good (a host gone) leaves its WAITING and RUNNING
        rows behind, and every other daemon's core.job_wait would follow them
        for ever. Each running daemon ends them once their node has missed
        MISSED_BEATS heartbeats (a stopped daemon ended its own).
        """
        present = select(Node.node).where(_seen_lately())
        async with self.db.session() as session:
            done = await session.execute(
                update(Job)
                .where(
                    Job.state.in_(("WAITING", "RUNNING")),
                    Job.node.is_not(None),
                    Job.node != self.node,
                    Job.node.not_in(present),
                )
                .values(
                    state="ABORTED",
                    error="interrupted: its daemon (node "
                    + Job.node
                    + ") is no longer running",
                    finished_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
        count: int = done.rowcount  # type: ignore[attr-defined]
        if count:
            log.warning("orphaned_jobs_aborted", count=count)
        return count

    async def leave(self) -> None:
        """Stop the heartbeat and mark the row stopped, so a restart is not refused."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.wait({self._heartbeat})
            self._heartbeat = None
        if not self.joined:
            return
        async with self.db.session() as session:
            await session.execute(
                update(Node)
                .where(Node.node == self.node, Node.instance == self.instance)
                .values(seen_at=None)
            )
        self.joined = False
        log.info("node_left", node=self.node)
