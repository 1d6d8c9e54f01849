"""Helpers to look at the store as an attacker with the files would."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


def database_path(state_dir: Path) -> Path:
    return state_dir / "certd.db"


def raw_values(state_dir: Path, table: str, column: str) -> list[Any]:
    """A column's values exactly as stored, bypassing certd's column types."""
    with sqlite3.connect(database_path(state_dir)) as conn:
        rows = conn.execute(f"SELECT {column} FROM {table} ORDER BY id").fetchall()
    return [row[0] for row in rows]


def raw_store_bytes(state_dir: Path) -> bytes:
    """The database file with its WAL and shared-memory index, as on disk."""
    out = b""
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{database_path(state_dir)}{suffix}")
        if path.exists():
            out += path.read_bytes()
    return out
