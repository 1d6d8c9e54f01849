"""Sessions and reads on PostgreSQL, where the SQLite-only reader is not used."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from sqlalchemy import func, insert, make_url, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.util import await_only

from certd.store.db import Database
from certd.store.models import Job, utcnow
from tests.store.postgres import PostgresServer

COUNT = select(func.count()).select_from(Job)


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Database]:
    database = Database(pg_url)
    await database.migrate()
    try:
        yield database
    finally:
        await database.close()


async def test_many_concurrent_writers_all_commit(db: Database) -> None:
    async def writer(n: int) -> None:
        for step in range(3):
            async with db.session() as session:
                session.add(Job(method=f"w{n}.{step}", state="WAITING"))
                await session.flush()
                await asyncio.sleep(0)

    await asyncio.wait_for(asyncio.gather(*(writer(n) for n in range(40))), 60)
    async with db.session() as session:
        assert await session.scalar(COUNT) == 120
        ids = (await session.scalars(select(Job.id))).all()
    assert sorted(ids) == list(range(1, 121))


async def test_a_read_sees_the_store_as_it_was_at_its_first_statement(
    db: Database, postgres: PostgresServer, pg_url: str
) -> None:
    database = make_url(pg_url).database
    assert database is not None

    async def other_writer() -> None:
        conn = await postgres.connect(database)
        try:
            await conn.execute(
                "INSERT INTO job (method, arguments, state, progress_percent,"
                " progress_description, caller, created_at)"
                " VALUES ('other', '[]', 'WAITING', 0, '', '', now())"
            )
        finally:
            await conn.close()

    def read(conn: Connection) -> tuple[int, int]:
        before = conn.execute(COUNT).scalar_one()
        # Another writer commits between the read's two statements.
        await_only(other_writer())
        return before, conn.execute(COUNT).scalar_one()

    assert await db.read(read) == (0, 0)
    assert await db.read(lambda conn: conn.execute(COUNT).scalar_one()) == 1


async def test_a_read_inside_a_session_does_not_wait_for_it(db: Database) -> None:
    # On SQLite a file store reads on connections of its own; on PostgreSQL
    # the pool has more than one connection, so a read needs no session's.
    async with db.session() as session:
        session.add(Job(method="held", state="WAITING"))
        await session.flush()
        unseen = await asyncio.wait_for(
            db.read(lambda conn: conn.execute(COUNT).scalar_one()), 5
        )
        assert await asyncio.wait_for(db.ping(), 5) is True
    assert unseen == 0
    assert await db.read(lambda conn: conn.execute(COUNT).scalar_one()) == 1


async def test_a_read_cannot_write(db: Database) -> None:
    def write(conn: Connection) -> None:
        conn.execute(
            insert(Job).values(
                method="sneaky",
                arguments=[],
                state="WAITING",
                progress_percent=0.0,
                progress_description="",
                caller="",
                created_at=utcnow(),
            )
        )

    with pytest.raises(DBAPIError, match="read-only transaction"):
        await db.read(write)
    assert await db.read(lambda conn: conn.execute(COUNT).scalar_one()) == 0


async def test_the_sqlite_shortcuts_fall_back_to_ordinary_reads(db: Database) -> None:
    async with db.session() as session:
        session.add(Job(method="one", state="WAITING"))
    statement = select(Job.id, Job.method, Job.created_at).where(Job.id == 1)

    # read_now is SQLite's alone: None sends the caller to read().
    assert db.read_now(statement, {}) is None
    rows = await db.read(lambda conn: db.plain_rows(conn, statement, {}))
    assert [row[:2] for row in rows] == [(1, "one")]
    assert type(rows[0]) is tuple
    created = rows[0][2]
    assert isinstance(created, datetime)
    assert created.utcoffset() is not None


async def test_a_session_inside_a_session_of_the_same_task_fails_at_once(
    db: Database,
) -> None:
    async with db.session() as session:
        session.add(Job(method="outer", state="WAITING"))
        with pytest.raises(RuntimeError, match="already open"):
            async with db.session():
                pass
    async with db.session() as session:
        assert (await session.scalars(select(Job.method))).all() == ["outer"]


async def test_connections_the_server_closed_are_replaced(
    db: Database, postgres: PostgresServer, pg_url: str
) -> None:
    # Both pooled connections are in use at once, so the pool keeps two.
    async with db.session() as session:
        session.add(Job(method="before", state="WAITING"))
        await session.flush()
        assert await db.read(lambda conn: conn.execute(COUNT).scalar_one()) == 0
    admin = await postgres.connect()
    try:
        # What a server restart or an idle timeout does to them.
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            make_url(pg_url).database,
        )
    finally:
        await admin.close()
    assert ended == 2

    async with db.session() as session:
        session.add(Job(method="after", state="WAITING"))
    assert await db.read(lambda conn: conn.execute(COUNT).scalar_one()) == 2
    assert await db.ping() is True
