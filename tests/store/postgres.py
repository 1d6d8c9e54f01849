"""A throwaway PostgreSQL cluster for tests, reachable only on a unix socket."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

# Debian's layout: /usr/lib/postgresql/<major>/bin. 15 is what certd promises.
BIN_GLOB = "/usr/lib/postgresql/*/bin/initdb"
PREFERRED_MAJOR = "15"
SUPERUSER = "certd"
# The port only names the socket file; nothing listens on TCP.
PORT = 5432


def find_bin_dir() -> Path:
    """The directory of initdb and pg_ctl; fails loudly when PostgreSQL is missing."""
    found = sorted(
        (Path(p).parent for p in Path("/").glob(BIN_GLOB.lstrip("/"))),
        key=lambda d: (d.parent.name == PREFERRED_MAJOR, d.parent.name),
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
            "scripts/test installs it, or apt-get install postgresql"
        )
    return found[-1]


@dataclass
class PostgresServer:
    """A running cluster; ``socket_dir`` holds its socket, ``data_dir`` its files."""

    bin_dir: Path
    socket_dir: Path
    data_dir: Path

    @property
    def version(self) -> str:
        return self.bin_dir.parent.name

    def url(self, database: str) -> str:
        """The SQLAlchemy URL certd is configured with for ``database``."""
        return f"postgresql+asyncpg://{SUPERUSER}@/{database}?host={self.socket_dir}"

    async def connect(self, database: str = "postgres") -> asyncpg.Connection:
        return await asyncpg.connect(
            host=str(self.socket_dir), port=PORT, user=SUPERUSER, database=database
        )

    async def create_database(self, prefix: str = "certd") -> str:
        """A new, empty database; its name."""
        name = (
            f"{re.sub(r'[^a-z0-9_]', '_', prefix.lower())[:40]}_{secrets.token_hex(4)}"
        )
        conn = await self.connect()
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return name


def _as_owner(owner: str | None, argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", owner, "--", *argv] if owner else argv


def _run(owner: str | None, argv: list[str], log: Path | None = None) -> None:
    done = subprocess.run(_as_owner(owner, argv), capture_output=True, check=False)
    if done.returncode != 0:
        detail = log.read_text()[-2000:] if log is not None and log.exists() else ""
        raise RuntimeError(
            f"{Path(argv[0]).name} failed ({done.returncode}): "
            f"{done.stderr.decode(errors='replace')[-2000:]}\n{detail}"
        )


@contextlib.contextmanager
def start_postgres() -> Iterator[PostgresServer]:
    """initdb a cluster in a private temporary directory, start it, stop it after."""
    bin_dir = find_bin_dir()
    owner = "postgres" if os.geteuid() == 0 else None
    # Not under pytest's temporary directories: those are private to root,
    # and the postgres user must reach its data directory and socket.
    base = Path(tempfile.mkdtemp(prefix="certd-pg-"))
    data_dir, socket_dir, log = base / "data", base / "run", base / "postgres.log"
    pg_ctl = [str(bin_dir / "pg_ctl"), "--pgdata", str(data_dir)]
    try:
        if owner is not None:
            entry = pwd.getpwnam(owner)
            os.chown(base, entry.pw_uid, entry.pw_gid)
        base.chmod(0o700)
        _run(owner, ["mkdir", "-m", "0700", str(data_dir), str(socket_dir)])
        _run(
            owner,
            [
                str(bin_dir / "initdb"),
                *("--pgdata", str(data_dir), "--username", SUPERUSER),
                *("--auth", "trust", "--encoding", "UTF8", "--locale", "C"),
                "--no-sync",
            ],
        )
        # A unix socket in the private directory only: listen_addresses=''
        # opens no TCP port at all. Durability is of no use to a test cluster.
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{socket_dir}' "
            f"-c port={PORT} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        _run(
            owner,
            [*pg_ctl, "--log", str(log), "--options", options, "--wait", "start"],
            log,
        )
        try:
            yield PostgresServer(bin_dir, socket_dir, data_dir)
        finally:
            _run(owner, [*pg_ctl, "--mode", "immediate", "--wait", "stop"], log)
    finally:
        shutil.rmtree(base, ignore_errors=True)
