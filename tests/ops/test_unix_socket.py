"""A daemon does not take over a unix socket another one is serving on."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from certd.config import Config
from certd.errors import FieldError, ValidationError
from certd.service import Daemon
from tests.daemon import make_config, running_daemon


def _config(tmp_path: Path) -> tuple[Config, Path]:
    config = make_config(tmp_path / "state")
    path = config.server.unix_socket
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    return config, path


async def _refused(config: Config) -> FieldError:
    """The one field error a daemon with ``config`` fails to start with."""
    daemon = Daemon(config)
    with pytest.raises(ValidationError) as caught:
        await daemon.start()
    await daemon.stop()
    (error,) = caught.value.errors
    return error


async def test_a_second_daemon_refuses_a_socket_that_answers(tmp_path: Path) -> None:
    first = make_config(tmp_path / "first")
    path = first.server.unix_socket
    assert path is not None
    async with running_daemon(first) as running:
        second = make_config(tmp_path / "second")
        second.server.unix_socket = path
        caught = await _refused(second)
        assert caught.field == "server.unix_socket"
        assert "already listens" in caught.message
        # the first daemon keeps its socket and its clients
        async with running.unix_client() as client:
            assert await client.call("core.ping") == "pong"


async def test_a_socket_file_left_by_a_killed_daemon_is_replaced(
    tmp_path: Path,
) -> None:
    config, path = _config(tmp_path)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # bound, never listening, file left behind
    stale.close()
    async with running_daemon(config) as running:
        async with running.unix_client() as client:
            assert await client.call("core.ping") == "pong"


@pytest.mark.parametrize("kind", ["file", "directory"])
async def test_a_path_that_is_not_a_socket_is_refused_and_kept(
    tmp_path: Path, kind: str
) -> None:
    config, path = _config(tmp_path)
    if kind == "file":
        path.write_text("precious data")
    else:
        path.mkdir()
    caught = await _refused(config)
    assert caught.field == "server.unix_socket"
    assert caught.message == f"{path} exists and is not a socket"
    assert path.read_text() == "precious data" if kind == "file" else path.is_dir()


async def test_a_listener_too_busy_to_accept_still_counts_as_in_use(
    tmp_path: Path,
) -> None:
    config, path = _config(tmp_path)
    busy = socket.socket(socket.AF_UNIX)
    busy.bind(str(path))
    busy.listen(0)
    waiting = []
    try:
        # Fill its backlog: the next connect waits instead of being refused.
        for _ in range(4):
            client = socket.socket(socket.AF_UNIX)
            client.setblocking(False)
            try:
                client.connect(str(path))
            except BlockingIOError:
                pass
            waiting.append(client)
        caught = await _refused(config)
        assert "already listens" in caught.message
        assert path.exists()
    finally:
        for client in waiting:
            client.close()
        busy.close()
