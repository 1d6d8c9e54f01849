"""Sessions take turns for SQLite's one writer instead of racing for its lock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

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
