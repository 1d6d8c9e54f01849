"""Session-wide fixtures: one BIND and one pebble shared by every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.testbed import NamedServer, PebbleServer, start_named, start_pebble


@pytest.fixture(scope="session")
def named(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NamedServer]:
    """BIND serving example.test and example.org.test with TSIG updates."""
    with start_named(tmp_path_factory.mktemp("named")) as server:
        yield server


@pytest.fixture(scope="session")
def pebble(
    tmp_path_factory: pytest.TempPathFactory, named: NamedServer
) -> Iterator[PebbleServer]:
    """pebble validating DNS-01 against the session's BIND."""
    with start_pebble(tmp_path_factory.mktemp("pebble"), named.port) as server:
        yield server
