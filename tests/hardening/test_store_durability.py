"""SQLite runs in WAL mode with synchronous=FULL on every connection certd opens."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import text

from tests.daemon import make_config, running_daemon
from tests.hardening.conftest import database_path

PRAGMAS = ("journal_mode", "synchronous", "foreign_keys")


async def test_every_connection_is_wal_and_fully_synchronous(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with running_daemon(make_config(state)) as running:
        db = running.daemon.db
        # The connection every session writes through, and a reading thread's.
        async with db.session() as session:
            conn = await session.connection()
            writer = tuple(
                [(await conn.execute(text(f"PRAGMA {p}"))).scalar() for p in PRAGMAS]
            )
        reader = await db.read(
            lambda conn: tuple(
                conn.execute(text(f"PRAGMA {name}")).scalar() for name in PRAGMAS
            )
        )
        seen = [writer, reader]
    # synchronous 2 is FULL: every commit is on disk before it returns.
    assert seen == [("wal", 2, 1), ("wal", 2, 1)]
    with sqlite3.connect(database_path(state)) as conn:
        # WAL mode is kept in the file, so any later opener gets it too.
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
