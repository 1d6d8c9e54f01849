"""SQLite runs in WAL mode with synchronous=FULL on every connection certd opens."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import text

from tests.daemon import make_config, running_daemon
from tests.hardening.conftest import database_path


async def test_every_connection_is_wal_and_fully_synchronous(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with running_daemon(make_config(state)) as running:
        engine = running.daemon.db.engine
        seen = []
        # Several connections at once, so the pool opens more than one.
        async with engine.connect() as first, engine.connect() as second:
            for conn in (first, second):
                seen.append(
                    (
                        (await conn.execute(text("PRAGMA journal_mode"))).scalar(),
                        (await conn.execute(text("PRAGMA synchronous"))).scalar(),
                        (await conn.execute(text("PRAGMA foreign_keys"))).scalar(),
                    )
                )
    # synchronous 2 is FULL: every commit is on disk before it returns.
    assert seen == [("wal", 2, 1), ("wal", 2, 1)]
    with sqlite3.connect(database_path(state)) as conn:
        # WAL mode is kept in the file, so any later opener gets it too.
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
