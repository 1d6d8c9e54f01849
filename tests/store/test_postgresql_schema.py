"""On PostgreSQL too, a new store is made from the models, an old one migrated."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, select, text
from sqlalchemy.ext.asyncio import create_async_engine

import certd.store.db
from certd.store.db import Database, alembic_config, schema_head, schema_revision
from certd.store.masterkey import unlock_store
from certd.store.models import Base, DNSAuthenticator
from tests.store.postgres import PostgresServer


def _shape(conn: Connection) -> dict[str, Any]:
    """Every table's columns, defaults, keys, constraints and indexes, by name."""
    found = inspect(conn)
    shape: dict[str, Any] = {}
    for table in sorted(found.get_table_names()):
        shape[table] = {
            # Sorted: a column a migration added comes last in its table.
            "columns": sorted(
                (c["name"], repr(c["type"]), c["nullable"], c.get("default"))
                for c in found.get_columns(table)
            ),
            "primary_key": found.get_pk_constraint(table),
            "foreign_keys": sorted(
                (
                    fk["name"],
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                    sorted(fk["options"].items()),
                )
                for fk in found.get_foreign_keys(table)
            ),
            "unique": sorted(
                (u["name"], tuple(u["column_names"]))
                for u in found.get_unique_constraints(table)
            ),
            "checks": sorted(
                (c["name"], c["sqltext"]) for c in found.get_check_constraints(table)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), i["unique"])
                for i in found.get_indexes(table)
            ),
        }
    shape["sequences"] = sorted(found.get_sequence_names())
    return shape


async def _run(url: str, fn: Any) -> Any:
    """``fn(connection)`` in one committed transaction on a plain engine."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


async def _upgrade_to(url: str, revision: str) -> None:
    await _run(url, lambda conn: command.upgrade(alembic_config(conn), revision))


async def _migrate(url: str) -> None:
    db = Database(url)
    try:
        await db.migrate()
    finally:
        await db.close()


async def test_a_new_store_has_the_schema_the_migrations_build(
    postgres: PostgresServer,
) -> None:
    migrated = postgres.url(await postgres.create_database("migrated"))
    await _upgrade_to(migrated, "head")
    created = postgres.url(await postgres.create_database("created"))
    await _migrate(created)

    assert await _run(created, schema_revision) == schema_head()
    assert await _run(migrated, schema_revision) == schema_head()
    created_shape = await _run(created, _shape)
    migrated_shape = await _run(migrated, _shape)
    assert set(created_shape) == {t for t in Base.metadata.tables} | {
        "alembic_version",
        "sequences",
    }
    # Every table's id comes from a sequence (ids never reused).
    assert "certificate_id_seq" in created_shape["sequences"]
    for table in created_shape:
        assert created_shape[table] == migrated_shape[table], table
    # And both are what the models declare, as alembic itself compares them.
    diff = await _run(
        migrated,
        lambda conn: compare_metadata(MigrationContext.configure(conn), Base.metadata),
    )
    assert diff == []


async def test_an_older_store_is_migrated_to_the_head_keeping_its_rows(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    # 0006 is the last revision before provider attributes became sealed text:
    # the migrations that change column types and rebuild tables run on it.
    url = postgres.url(await postgres.create_database("old"))
    await _upgrade_to(url, "0006")
    attributes = '{"nameserver": "127.0.0.1", "secret": "c2VjcmV0"}'

    def fill(conn: Connection) -> None:
        conn.execute(
            text(
                "INSERT INTO dns_authenticator (id, name, provider, attributes,"
                " created_at) VALUES (1, 'bind', 'rfc2136', CAST(:a AS json), now())"
            ),
            {"a": attributes},
        )
        for id_, name, csr_id in ((1, "req", None), (2, "web", 1)):
            conn.execute(
                text(
                    "INSERT INTO certificate (id, name, cert_type, create_type,"
                    " csr_id, dns_mapping, revoked, failure_count, created_at,"
                    " updated_at) VALUES (:id, :name, 'CSR', 'CERTIFICATE_CREATE_CSR',"
                    " :csr_id, '{}', false, 0, now(), now())"
                ),
                {"id": id_, "name": name, "csr_id": csr_id},
            )
        conn.execute(
            text(
                "INSERT INTO event (kind, severity, certificate_id, message, data,"
                " created_at) VALUES ('x', 'info', 2, 'm', '{}', now())"
            )
        )
        # Rows given explicit ids leave the sequences behind; bring them along
        # as a store filled by certd would have them.
        for table in ("dns_authenticator", "certificate"):
            conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" (SELECT max(id) FROM {table}))"
                )
            )

    await _run(url, fill)

    await _migrate(url)

    assert await _run(url, schema_revision) == schema_head()

    def read(conn: Connection) -> tuple[Any, ...]:
        return (
            conn.execute(text("SELECT attributes FROM dns_authenticator")).scalar(),
            conn.execute(text("SELECT id, csr_id FROM certificate ORDER BY id")).all(),
            conn.execute(text("SELECT certificate_id FROM event")).all(),
            str(
                conn.execute(
                    text(
                        "SELECT data_type FROM information_schema.columns WHERE"
                        " table_name = 'dns_authenticator'"
                        " AND column_name = 'attributes'"
                    )
                ).scalar()
            ),
        )

    stored, certificates, events, column_type = await _run(url, read)
    # The JSON document came through as its text; the column is text now.
    assert column_type == "text"
    assert stored == attributes
    assert certificates == [(1, None), (2, 1)]
    assert events == [(2,)]

    # The start-up step seals the copied attributes, and they read back.
    db = Database(url)
    try:
        await unlock_store(db, tmp_path / "state")
        async with db.session() as session:
            row = await session.get(DNSAuthenticator, 1)
            assert row is not None
            assert row.attributes == {"nameserver": "127.0.0.1", "secret": "c2VjcmV0"}
            session.add(DNSAuthenticator(name="next", provider="rfc2136"))
            await session.flush()
            ids = (
                await session.scalars(
                    select(DNSAuthenticator.id).order_by(DNSAuthenticator.id)
                )
            ).all()
    finally:
        await db.close()
    assert ids == [1, 2]
    raw = await _run(
        url,
        lambda conn: conn.execute(
            text("SELECT attributes FROM dns_authenticator WHERE id = 1")
        ).scalar(),
    )
    assert raw.startswith("enc:v1:")

    # A second start finds nothing to do.
    before = await _run(url, _shape)
    await _migrate(url)
    assert await _run(url, _shape) == before


async def test_a_deleted_id_is_not_handed_out_again(pg_url: str) -> None:
    await _migrate(pg_url)

    def churn(conn: Connection) -> list[Any]:
        for n in (1, 2, 3):
            conn.execute(
                text(
                    "INSERT INTO certificate_authority (name, create_type,"
                    " certificate, revoked, crl_number, created_at)"
                    " VALUES (:n, 'CA_CREATE_IMPORTED', '-', false, 0, now())"
                ),
                {"n": f"ca{n}"},
            )
        conn.execute(text("DELETE FROM certificate_authority WHERE id = 3"))
        conn.execute(
            text(
                "INSERT INTO certificate_authority (name, create_type, certificate,"
                " revoked, crl_number, created_at)"
                " VALUES ('new', 'CA_CREATE_IMPORTED', '-', false, 0, now())"
            )
        )
        return list(
            conn.execute(
                text("SELECT id, name FROM certificate_authority ORDER BY id")
            ).all()
        )

    assert await _run(pg_url, churn) == [(1, "ca1"), (2, "ca2"), (4, "new")]


async def test_a_store_whose_creation_fails_is_left_empty(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    create = certd.store.db._create

    def interrupted(connection: Any, revision: str) -> None:
        create(connection, revision)
        raise RuntimeError("the process died here")

    monkeypatch.setattr(certd.store.db, "_create", interrupted)
    with pytest.raises(RuntimeError):
        await _migrate(pg_url)
    # PostgreSQL's DDL is transactional: no table of the half-made schema is left.
    assert await _run(pg_url, lambda conn: inspect(conn).get_table_names()) == []

    monkeypatch.setattr(certd.store.db, "_create", create)
    await _migrate(pg_url)
    assert await _run(pg_url, schema_revision) == schema_head()


async def test_daemons_starting_together_on_a_new_store_create_it_once(
    pg_url: str,
) -> None:
    databases = [Database(pg_url) for _ in range(4)]
    try:
        await asyncio.gather(*(db.migrate() for db in databases))
    finally:
        for db in databases:
            await db.close()
    assert await _run(pg_url, schema_revision) == schema_head()
