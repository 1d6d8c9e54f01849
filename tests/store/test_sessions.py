"""Sessions take turns for SQLite's one writer; a read sees one snapshot."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import Connection

from certd.store.db import Database
from certd.store.models import Job


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'certd.db'}")
    await database.migrate()
    try:
        yield database
    finally:
        await database.close()


async def test_a_writer_waits_its_turn_instead_of_polling_the_lock(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'certd.db'}")
    # SQLite's own wait for a writer's lock, cut from ten seconds to a tenth:
    # a writer that waited there would fail while the first one holds on.
    event.listen(db.engine.sync_engine, "connect", _short_busy_timeout)
    await db.migrate()
    try:

        async def second_writer() -> None:
            async with db.session() as session:
                session.add(Job(method="second", state="WAITING"))

        async with db.session() as session:
            session.add(Job(method="first", state="WAITING"))
            await session.flush()  # the first writer now holds the write lock
            second = asyncio.create_task(second_writer())
            await asyncio.sleep(0.5)
            assert not second.done()
        await asyncio.wait_for(second, 10)
        async with db.session() as session:
            methods = (await session.scalars(select(Job.method).order_by(Job.id))).all()
        assert methods == ["first", "second"]
    finally:
        await db.close()


def _short_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=100")
    cursor.close()


async def test_many_concurrent_writers_all_commit(db: Database) -> None:
    async def writer(n: int) -> None:
        for step in range(3):
            async with db.session() as session:
                session.add(Job(method=f"w{n}.{step}", state="WAITING"))
                await session.flush()
                await asyncio.sleep(0)  # let the others run while holding the lock

    await asyncio.wait_for(asyncio.gather(*(writer(n) for n in range(40))), 60)
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 120


async def test_a_session_inside_a_session_of_the_same_task_fails_at_once(
    db: Database,
) -> None:
    async with db.session() as session:
        session.add(Job(method="outer", state="WAITING"))
        with pytest.raises(RuntimeError, match="already open"):
            async with db.session():
                pass
    async with db.session() as session:
        # The outer session still committed, and the guard was reset with it.
        assert (await session.scalars(select(Job.method))).all() == ["outer"]


async def test_a_read_sees_the_store_as_it_was_at_its_first_statement(
    db: Database, tmp_path: Path
) -> None:
    count = select(func.count()).select_from(Job)

    def read(conn: Connection) -> tuple[int, int]:
        before = conn.execute(count).scalar_one()
        # Another writer commits between the read's two statements.
        other = sqlite3.connect(tmp_path / "certd.db")
        try:
            with other:
                other.execute(
                    "INSERT INTO job (method, arguments, state, progress_percent,"
                    " progress_description, caller, created_at)"
                    " VALUES ('other', '[]', 'WAITING', 0, '', '', '2026-01-01')"
                )
        finally:
            other.close()
        return before, conn.execute(count).scalar_one()

    assert await db.read(read) == (0, 0)
    assert await db.read(lambda conn: conn.execute(count).scalar_one()) == 1


async def test_the_readiness_ping_does_not_queue_behind_a_session(
    db: Database,
) -> None:
    async with db.session() as session:
        session.add(Job(method="held", state="WAITING"))
        await session.flush()  # the sessions' one connection is in use
        assert await asyncio.wait_for(db.ping(), 5) is True


async def test_an_in_memory_store_keeps_its_rows_across_sessions() -> None:
    db = Database("sqlite+aiosqlite:///:memory:")
    try:
        await db.migrate()
        async with db.session() as session:
            session.add(Job(method="kept", state="WAITING"))
        async with db.session() as session:
            assert (await session.scalars(select(Job.method))).all() == ["kept"]
        count = select(func.count()).select_from(Job)
        assert await db.read(lambda conn: conn.execute(count).scalar_one()) == 1
        assert await db.ping() is True
    finally:
        await db.close()
