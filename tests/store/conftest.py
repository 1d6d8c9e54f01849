"""Fixtures of the store's tests: a PostgreSQL cluster for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.store.postgres import PostgresServer, start_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster on a private unix socket, stopped at the session's end."""
    with start_postgres() as server:
        yield server


@pytest.fixture
async def pg_url(postgres: PostgresServer, request: pytest.FixtureRequest) -> str:
    """The URL of a new, empty database for this test."""
    return postgres.url(await postgres.create_database(request.node.name))
