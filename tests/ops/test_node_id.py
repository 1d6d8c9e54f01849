"""Each daemon's node id: made once in its state directory, kept, and checked."""

from __future__ import annotations

import re
import sqlite3
import stat
from pathlib import Path

import pytest

from certd.errors import CertdError
from certd.service import Daemon
from certd.store.crypto import key_id
from certd.store.masterkey import parse_key
from certd.store.nodes import host_name
from tests.daemon import make_config, running_daemon


async def test_the_node_id_is_made_once_and_kept(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state")
    async with running_daemon(config) as first:
        made = first.daemon.node
    async with running_daemon(config) as again:
        kept = again.daemon.node
    path = tmp_path / "state" / "node-id"

    assert made is not None and re.fullmatch(r"[A-Za-z0-9.-]{1,40}-[0-9a-f]{16}", made)
    assert kept == made
    assert path.read_text() == made + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_an_empty_node_id_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "state" / "node-id").write_text("\n")
    async with running_daemon(make_config(tmp_path / "state")) as running:
        assert running.daemon.node
    assert (tmp_path / "state" / "node-id").read_text() == f"{running.daemon.node}\n"


async def test_a_node_id_file_with_something_else_stops_the_start(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "node-id").write_text("not a node id; rm -rf /\n")
    config = make_config(state)
    daemon = Daemon(config)

    with pytest.raises(CertdError) as refused:
        await daemon.start()

    assert refused.value.message == (
        f"{state / 'node-id'} does not hold a node id (letters, digits, '.', '_' "
        "or '-', at most 64): remove it to have a new one made"
    )
    assert config.server.unix_socket is not None
    assert not config.server.unix_socket.exists()
    assert (state / "node-id").read_text() == "not a node id; rm -rf /\n"


def _node_rows(state: Path) -> list[tuple[str, ...]]:
    with sqlite3.connect(state / "certd.db") as conn:
        return conn.execute(
            "SELECT node, host, master_key_id, instance, seen_at IS NULL FROM node"
        ).fetchall()


async def test_on_sqlite_the_node_row_is_written_and_marked_stopped(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    config = make_config(state)
    async with running_daemon(config) as first:
        running = _node_rows(state)
        presence = first.daemon.presence
        # One daemon per SQLite store: nothing beats there.
        beating = presence is not None and presence._heartbeat is not None
    stopped = _node_rows(state)
    async with running_daemon(config) as again:
        restarted = _node_rows(state)
    key = parse_key((state / "master.key").read_bytes(), state / "master.key")

    assert presence is not None
    row = (first.daemon.node, host_name(), key_id(key), presence.instance)
    assert running == [(*row, 0)]
    assert not beating
    assert stopped == [(*row, 1)]
    assert again.daemon.presence is not None
    assert restarted == [(*row[:3], again.daemon.presence.instance, 0)]
