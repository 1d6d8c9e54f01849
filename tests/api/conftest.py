"""A daemon with no test bed behind it, for API behaviour that needs no CA."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.daemon import RunningDaemon, make_config, running_daemon


@pytest.fixture
async def certd(tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(make_config(tmp_path / "state")) as daemon:
        yield daemon
