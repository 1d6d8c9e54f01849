"""A new store is made from the models; an old one is migrated: both end alike."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

import certd.store.db
from certd.store.db import (
    Database,
    alembic_config,
    schema_head,
    schema_revision,
)
from tests.hardening.test_encryption import _fill_not_null


def _shape(path: Path) -> dict[str, Any]:
    """Every table's columns, indexes, foreign keys and CHECK clauses."""
    shape: dict[str, Any] = {}
    with sqlite3.connect(path) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        for table in tables:
            columns = sorted(
                row[1:] for row in conn.execute(f"PRAGMA table_info('{table}')")
            )
            indexes = []
            for row in conn.execute(f"PRAGMA index_list('{table}')"):
                name = row[1]
                columns_of = tuple(
                    info[2] for info in conn.execute(f"PRAGMA index_info('{name}')")
                )
                # SQLite names the indexes behind UNIQUE constraints itself.
                shown = "(automatic)" if name.startswith("sqlite_autoindex") else name
                indexes.append((shown, row[2], row[3], columns_of))
            foreign_keys = sorted(
                row[2:] for row in conn.execute(f"PRAGMA foreign_key_list('{table}')")
            )
            sql = conn.execute(
                "SELECT sql FROM sqlite_master WHERE name = ?", (table,)
            ).fetchone()[0]
            checks = sorted(
                part.strip() for part in sql.split(",") if "CHECK" in part.upper()
            )
            shape[table] = {
                "autoincrement": "AUTOINCREMENT" in sql.upper(),
                "columns": columns,
                "indexes": sorted(indexes),
                "foreign_keys": foreign_keys,
                "checks": checks,
            }
    return shape


def _revision(path: Path) -> str | None:
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return schema_revision(conn)
    finally:
        engine.dispose()


def _upgrade_to(path: Path, revision: str) -> None:
    """Build a store at ``path`` by running the migrations up to ``revision``."""
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)
    engine.dispose()


async def _migrate(path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await db.migrate()
    finally:
        await db.close()


def test_head_is_the_newest_migration() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    assert schema_head() == scripts.get_current_head()


async def test_a_new_store_has_the_schema_the_migrations_build(tmp_path: Path) -> None:
    migrated = tmp_path / "migrated.db"
    _upgrade_to(migrated, "head")

    created = tmp_path / "created.db"
    await _migrate(created)

    assert _revision(created) == _revision(migrated) == schema_head()
    migrated_shape, created_shape = _shape(migrated), _shape(created)
    assert "certificate" in created_shape
    assert "alembic_version" in created_shape
    assert created_shape == migrated_shape


async def test_an_older_store_is_migrated_to_the_head(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _upgrade_to(path, "0004")
    assert _revision(path) == "0004"

    await _migrate(path)

    assert _revision(path) == schema_head()
    # A current store is left as it is: a second start changes nothing.
    before = _shape(path)
    await _migrate(path)
    assert _shape(path) == before
    assert _revision(path) == schema_head()


async def test_a_store_whose_creation_fails_is_left_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create = certd.store.db._create

    def interrupted(connection: Any, revision: str) -> None:
        create(connection, revision)
        raise RuntimeError("the process died here")

    path = tmp_path / "new.db"
    monkeypatch.setattr(certd.store.db, "_create", interrupted)
    with pytest.raises(RuntimeError):
        await _migrate(path)
    # No table of the half-made schema is left to make the next start fail.
    assert _shape(path) == {}

    monkeypatch.setattr(certd.store.db, "_create", create)
    await _migrate(path)
    assert _revision(path) == schema_head()


async def test_migrating_keeps_rows_that_point_at_a_rebuilt_table(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    _upgrade_to(path, "0007")
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA foreign_keys=ON")
        _fill_not_null(
            conn, "certificate", {"id": 1, "name": "req", "cert_type": "CSR"}
        )
        _fill_not_null(
            conn,
            "certificate",
            {"id": 2, "name": "web", "cert_type": "CERTIFICATE", "csr_id": 1},
        )
        _fill_not_null(
            conn, "renewal_attempt", {"certificate_id": 2, "state": "ordering"}
        )
        _fill_not_null(conn, "event", {"certificate_id": 2, "kind": "x"})

    # A later migration rebuilds the certificate table; the rows that
    # point at it must come through as they were.
    await _migrate(path)

    assert _revision(path) == schema_head()
    with sqlite3.connect(path) as conn:
        assert conn.execute(
            "SELECT csr_id FROM certificate WHERE id = 2"
        ).fetchone() == (1,)
        assert conn.execute(
            "SELECT certificate_id, state FROM renewal_attempt"
        ).fetchall() == [(2, "ordering")]
        assert conn.execute("SELECT certificate_id FROM event").fetchall() == [(2,)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


async def test_a_deleted_id_is_not_handed_out_again(tmp_path: Path) -> None:
    # A store from before the tables had AUTOINCREMENT, with rows 1 to 3.
    path = tmp_path / "old.db"
    _upgrade_to(path, "0009")
    with sqlite3.connect(path) as conn:
        for n in (1, 2, 3):
            _fill_not_null(
                conn, "certificate", {"id": n, "name": f"c{n}", "cert_type": "CSR"}
            )
            _fill_not_null(conn, "dns_authenticator", {"id": n, "name": f"a{n}"})

    await _migrate(path)

    with sqlite3.connect(path) as conn:
        for table, name, extra in (
            ("certificate", "c", {"cert_type": "CSR"}),
            ("dns_authenticator", "a", {}),
        ):
            conn.execute(f"DELETE FROM {table} WHERE id = 3")
            _fill_not_null(conn, table, {"name": f"{name}-new", **extra})
            assert conn.execute(
                f"SELECT id, name FROM {table} ORDER BY id"
            ).fetchall() == [(1, f"{name}1"), (2, f"{name}2"), (4, f"{name}-new")]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
