"""The master key: where it comes from, unlocking the store, and key rotation.

The key is 32 random bytes, kept as one line of base64 (raw bytes are read
too). It is looked for, in order, at the path in ``store.master_key_file``, as
the systemd credential ``certd-master-key`` (``LoadCredential=`` or
``LoadCredentialEncrypted=``), and as ``master.key`` in the state directory,
which is created on first start when the store holds no secrets yet.

Rotation writes the new key beside the old one (``master.key.new``) and a copy
of the old (``master.key.old``), re-encrypts every value in one transaction,
then renames the new key into place. A crash at any point leaves either the
old key with the old values or the new files with the new values; the next
start finishes or undoes the step from what the store holds.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import os
import stat
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog
from sqlalchemy import Text as SQLText
from sqlalchemy import column, select, table, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import TableClause

from certd.errors import SecretStoreError
from certd.store.crypto import (
    EMPTY_DOCUMENT,
    KEY_BYTES,
    EncryptedJSON,
    EncryptedText,
    Keyring,
    is_sealed,
    key_id,
    sealed_key_id,
)
from certd.store.db import Database
from certd.store.models import Base
from certd.store.nodes import presence_lock, refuse_while_present

log = structlog.get_logger(__name__)

MASTER_KEY_FILE = "master.key"
PENDING_SUFFIX = ".new"
BACKUP_SUFFIX = ".old"
CREDENTIAL_NAME = "certd-master-key"
LOCK_FILE = "certd.lock"

SourceKind = Literal["config", "credential", "state"]


@dataclass(frozen=True)
class KeySource:
    """Where the master key is read from, and whether certd may write it."""

    path: Path
    kind: SourceKind

    @property
    def writable(self) -> bool:
        return self.kind == "state"


def find_key_source(state_dir: Path, key_file: Path | None) -> KeySource:
    """The configured file, else the systemd credential, else the state file."""
    if key_file is not None:
        return KeySource(Path(key_file), "config")
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        candidate = Path(credentials) / CREDENTIAL_NAME
        if candidate.exists():
            return KeySource(candidate, "credential")
    return KeySource(Path(state_dir) / MASTER_KEY_FILE, "state")


@contextlib.contextmanager
def state_lock(state_dir: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold the state directory: shared by daemons, alone for a key rotation.

    A daemon running during a rotation would go on sealing values under the
    old key after its backup is gone, so the two exclude each other.

    Raises:
        SecretStoreError: the other side holds the lock.
    """
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SecretStoreError(
                f"{state_dir} is in use: stop the daemon before rotating the master key"
                if exclusive
                else f"a master key rotation is running on {state_dir}; "
                "start the daemon when it has finished"
            ) from None
        yield
    finally:
        os.close(fd)


def encrypted_columns() -> dict[str, list[str]]:
    """Every encrypted column of the schema, by table."""
    found: dict[str, list[str]] = {}
    for tbl in Base.metadata.sorted_tables:
        for col in tbl.columns:
            if isinstance(col.type, EncryptedText | EncryptedJSON):
                found.setdefault(tbl.name, []).append(col.name)
    return found


def _raw_table(name: str, columns: list[str]) -> TableClause:
    # Plain text columns: the values as stored, without the TypeDecorators.
    return table(name, column("id"), *(column(c, SQLText) for c in columns))


def parse_key(data: bytes, path: Path) -> bytes:
    """The key in a key file: 32 raw bytes, or their base64 on one line.

    Raises:
        SecretStoreError: the file holds anything else.
    """
    if len(data) == KEY_BYTES:
        return data
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise SecretStoreError(
            f"the master key file {path} must hold {KEY_BYTES} random bytes, raw or "
            "as base64 (make one with: head -c 32 /dev/urandom | base64)"
        )
    return key


def read_key_file(source: KeySource) -> bytes:
    """Read and check a master key file.

    Raises:
        SecretStoreError: unreadable, readable by others, or malformed.
    """
    path = source.path
    try:
        info = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise SecretStoreError(
            f"cannot read the master key file {path}: {exc.strerror}"
        ) from None
    # certd makes its own file 0600; any wider mode there means someone changed
    # it. Files an administrator provides may be shared with a group.
    loose = 0o077 if source.kind == "state" else 0o007
    if info.st_mode & loose:
        raise SecretStoreError(
            f"the master key file {path} is readable by others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
        )
    return parse_key(data, path)


def write_key_file(path: Path, key: bytes) -> None:
    """Write a key file atomically with mode 0600 and make it durable."""
    temporary = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, base64.b64encode(key) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def stored_key_ids(db: Database) -> dict[str, int]:
    """How many sealed values each master key id has in the store."""
    counts: dict[str, int] = {}
    async with db.engine.connect() as conn:
        for name, columns in encrypted_columns().items():
            raw = _raw_table(name, columns)
            for row in await conn.execute(select(*raw.c)):
                for value in row[1:]:
                    kid = sealed_key_id(value) if isinstance(value, str) else None
                    if kid is not None:
                        counts[kid] = counts.get(kid, 0) + 1
    return counts


async def unlock_store(
    db: Database, state_dir: Path, key_file: Path | None = None
) -> Keyring:
    """Load (or on first start create) the master key and make the store usable.

    Values written before encryption existed are encrypted, and every stored
    value is checked to open, so a wrong key stops the start with a clear
    message instead of failing later in a job.

    Raises:
        SecretStoreError: the key is missing, unreadable, malformed or not the
            one the store was written with.
    """
    source = find_key_source(state_dir, key_file)
    if source.writable:
        await _finish_rotation(db, source.path)
    if source.path.exists():
        master = read_key_file(source)
    elif source.writable:
        master = await _create_key(db, source.path)
    else:
        raise SecretStoreError(
            f"the master key file {source.path} does not exist"
            + (" (store.master_key_file)" if source.kind == "config" else "")
        )
    keyring = Keyring(master)
    await seal_and_verify(db, keyring)
    db.install_keyring(keyring)
    return keyring


async def _create_key(db: Database, path: Path) -> bytes:
    counts = await stored_key_ids(db)
    if counts:
        ids = ", ".join(sorted(counts))
        raise SecretStoreError(
            f"the master key file {path} is missing, but the store holds "
            f"{sum(counts.values())} secret(s) encrypted with master key {ids}: "
            "restore that file (or set store.master_key_file)"
        )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    master = os.urandom(KEY_BYTES)
    write_key_file(path, master)
    log.info("master_key_created", path=str(path), key_id=key_id(master))
    return master


async def seal_and_verify(db: Database, keyring: Keyring) -> int:
    """Encrypt values stored in the clear; check that every sealed value opens.

    Returns the number of values encrypted now.

    Raises:
        SecretStoreError: a sealed value does not open with ``keyring``.
    """
    sealed_now = 0
    async with db.engine.begin() as conn:
        for name, columns in encrypted_columns().items():
            raw = _raw_table(name, columns)
            for row in (await conn.execute(select(*raw.c))).all():
                changes: dict[str, str] = {}
                for col, value in zip(columns, row[1:], strict=True):
                    if value is None or value == EMPTY_DOCUMENT:
                        continue
                    if is_sealed(value):
                        keyring.open(value, name, col)
                    else:
                        changes[col] = keyring.seal(value, name, col)
                if changes:
                    await conn.execute(
                        update(raw).where(raw.c.id == row[0]).values(**changes)
                    )
                    sealed_now += len(changes)
    if sealed_now:
        log.info("store_secrets_encrypted", count=sealed_now, key_id=keyring.key_id)
    return sealed_now


async def _reseal(conn: AsyncConnection, old: Keyring, new: Keyring) -> int:
    count = 0
    for name, columns in encrypted_columns().items():
        raw = _raw_table(name, columns)
        for row in (await conn.execute(select(*raw.c))).all():
            changes: dict[str, Any] = {}
            for col, value in zip(columns, row[1:], strict=True):
                if value is None:
                    continue
                plain = old.open(value, name, col) if is_sealed(value) else value
                changes[col] = new.seal(plain, name, col)
            if changes:
                await conn.execute(
                    update(raw).where(raw.c.id == row[0]).values(**changes)
                )
                count += len(changes)
    return count


# Renames, in the rotation's transaction, what is named under a key derived
# from the master key: (connection, old keyring, new keyring).
Rekey = Callable[[AsyncConnection, Keyring, Keyring], Awaitable[object]]


async def rotate_master_key(
    db: Database,
    state_dir: Path,
    key_file: Path | None = None,
    new_key_file: Path | None = None,
    *,
    rekey: Rekey | None = None,
) -> tuple[str, str, int]:
    """Re-encrypt every stored secret under a new master key, in one transaction.

    With the key in the state directory a new key is made and replaces it.
    A key certd does not own (a configured file, a systemd credential) cannot
    be replaced by certd: ``new_key_file`` then names where the new key is
    read from (or created, if missing), and the configuration must be pointed
    at it afterwards. ``rekey`` runs in the same transaction (the webhook
    deliveries' names, certd.deploy.events.rekey_deliveries), so the store
    never holds names under one key and secrets under the other.

    Returns (old key id, new key id, number of values re-encrypted).

    Raises:
        SecretStoreError: the current key does not open the store, the new
            key cannot be read or written, or a daemon sharing the store runs.
    """
    # Under the lock daemons join the store with: none starts meanwhile
    # (one waiting finds the store under the new key and is refused).
    async with presence_lock(db):
        await refuse_while_present(db)
        return await _rotate(db, state_dir, key_file, new_key_file, rekey)


async def _rotate(
    db: Database,
    state_dir: Path,
    key_file: Path | None,
    new_key_file: Path | None,
    rekey: Rekey | None,
) -> tuple[str, str, int]:
    source = find_key_source(state_dir, key_file)
    old = await unlock_store(db, state_dir, key_file)
    if new_key_file is None and not source.writable:
        raise SecretStoreError(
            f"the master key comes from {source.path}, which certd does not "
            "write; give --new-key-file PATH and point the configuration at it"
        )
    old_key = read_key_file(source)
    if new_key_file is not None:
        target = KeySource(Path(new_key_file), "config")
        if target.path.exists():
            new_key = read_key_file(target)
        else:
            new_key = os.urandom(KEY_BYTES)
            write_key_file(target.path, new_key)
        if new_key == old_key:
            raise SecretStoreError(
                f"{target.path} holds the current master key; give a new one"
            )
    else:
        new_key = os.urandom(KEY_BYTES)
    new = Keyring(new_key)

    pending = source.path.with_name(source.path.name + PENDING_SUFFIX)
    backup = source.path.with_name(source.path.name + BACKUP_SUFFIX)
    replace_state_file = source.writable and new_key_file is None
    if replace_state_file:
        write_key_file(backup, old_key)
        write_key_file(pending, new_key)
    async with db.engine.begin() as conn:
        count = await _reseal(conn, old, new)
        if rekey is not None:
            await rekey(conn, old, new)
    if replace_state_file:
        os.replace(pending, source.path)
        _sync_directory(source.path.parent)
        backup.unlink()
    db.install_keyring(new)
    log.info(
        "master_key_rotated",
        old_key_id=old.key_id,
        new_key_id=new.key_id,
        values=count,
    )
    return old.key_id, new.key_id, count


async def _finish_rotation(db: Database, path: Path) -> None:
    """Complete or undo a rotation that a crash cut short."""
    pending = path.with_name(path.name + PENDING_SUFFIX)
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    if not pending.exists():
        if backup.exists() and path.exists():
            # The rename happened; only the clean-up of the backup was lost.
            backup.unlink()
        return
    new_key = read_key_file(KeySource(pending, "state"))
    old_key = read_key_file(KeySource(path, "state")) if path.exists() else None
    counts = await stored_key_ids(db)
    if old_key is not None and key_id(old_key) in counts:
        # The transaction never committed: the store is still under the old key.
        pending.unlink()
        outcome = "undone"
    else:
        os.replace(pending, path)
        _sync_directory(path.parent)
        outcome = "completed"
    with contextlib.suppress(FileNotFoundError):
        backup.unlink()
    log.warning(
        "master_key_rotation_recovered", outcome=outcome, key_id=key_id(new_key)
    )
