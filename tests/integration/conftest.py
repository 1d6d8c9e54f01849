"""A daemon wired to the session's pebble and BIND."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.daemon import RunningDaemon, make_config, running_daemon
from tests.testbed import NamedServer, PebbleServer


@pytest.fixture
async def certd(
    tmp_path: Path, named: NamedServer, pebble: PebbleServer
) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(
        make_config(tmp_path / "state", named=named, pebble=pebble)
    ) as d:
        yield d


@pytest.fixture
def rfc2136_attributes(named: NamedServer) -> dict[str, object]:
    return named.rfc2136_attributes()
