"""Who is calling: API keys over HTTP, peer credentials over the unix socket.

An API key reads ``certd_<key id>_<secret>``. Only a SHA-256 digest of the
secret is stored; the key id finds the row without a scan. SHA-256 suffices
because the secret has 256 bits of entropy, so nothing is gained from a slow
password hash.

The NAS middleware's client takes keys as ``<number>-<letters and digits>``;
the same key reads so as ``<row id>-<secret>``. For its SCRAM login each key
also keeps a SCRAM-SHA-512 verifier, derived when the key is made (or, for
older keys, the first time the key is used).
"""

from __future__ import annotations

import asyncio
import base64
import grp
import hashlib
import hmac
import os
import re
import secrets
import socket
import string
import struct
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, select

from certd.api.scram import ScramVerifier, b64, derive_verifier
from certd.errors import ConflictError, NotFoundError, ValidationError
from certd.store.db import Database
from certd.store.models import ApiKey, utcnow

KEY_PREFIX = "certd"
# Letters and digits only, so the secret also fits the NAS client's key form;
# 43 characters of 62 carry 256 bits.
_SECRET_ALPHABET = string.ascii_letters + string.digits
_SECRET_LENGTH = 43
# Row ids are SQLite/PostgreSQL 64-bit integers: 18 ASCII digits always fit.
CLIENT_FORM = re.compile(r"([0-9]{1,18})-(\S+)")
# Verified keys are remembered briefly so a busy client does not cost a write
# (last_used_at) and a hash per call; whether the key still stands is read from
# the store on every call all the same (see ApiKeys.current).
CACHE_SECONDS = 5.0
# What a logged-in caller's key is now: one lookup by primary key, cheap enough
# to run on every call (Database.read_now does it on the calling thread).
_STANDING = select(ApiKey.name, ApiKey.revoked, ApiKey.readonly).where(
    ApiKey.id == bindparam("id")
)


@dataclass(frozen=True)
class Caller:
    """An authenticated caller."""

    name: str
    readonly: bool = False
    # Row id of the API key the caller proved; None for other callers.
    key: int | None = None

    def __str__(self) -> str:
        return self.name


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(token: str) -> tuple[str, str] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def _lookup(token: str) -> tuple[str, Any, str] | None:
    """(column, value, secret) that find a key in either of its forms."""
    if parts := split_key(token):
        return "key_id", parts[0], parts[1]
    if match := CLIENT_FORM.fullmatch(token):
        return "id", int(match[1]), match[2]
    return None


def client_form(row_id: int, key: str) -> str:
    """The ``<id>-<secret>`` form of a key, as the NAS middleware's client takes it."""
    parts = split_key(key)
    if parts is None:
        raise ValueError("not a certd API key")
    return f"{row_id}-{parts[1]}"


def _store_verifier(row: ApiKey, verifier: ScramVerifier) -> None:
    row.scram_salt = b64(verifier.salt)
    row.scram_iterations = verifier.iterations
    row.scram_stored_key = b64(verifier.stored_key)
    row.scram_server_key = b64(verifier.server_key)


def _verifier(row: ApiKey) -> ScramVerifier | None:
    if not (row.scram_salt and row.scram_iterations and row.scram_stored_key):
        return None
    return ScramVerifier(
        salt=base64.b64decode(row.scram_salt),
        iterations=row.scram_iterations,
        stored_key=base64.b64decode(row.scram_stored_key),
        server_key=base64.b64decode(row.scram_server_key or ""),
    )


def entry(row: ApiKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "key_id": row.key_id,
        "readonly": row.readonly,
        "revoked": row.revoked,
        "created_at": row.created_at.isoformat(),
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
    }


class ApiKeys:
    """Creates, lists, revokes and verifies API keys."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[float, str, Caller]] = {}

    async def create(
        self, name: str, readonly: bool = False
    ) -> tuple[dict[str, Any], str]:
        """Store a new key; return its entry and the key, shown only this once."""
        if not name or len(name) > 120:
            raise ValidationError.single("name", "must be 1 to 120 characters")
        key_id = secrets.token_hex(6)
        secret = "".join(
            secrets.choice(_SECRET_ALPHABET) for _ in range(_SECRET_LENGTH)
        )
        verifier = await asyncio.to_thread(derive_verifier, secret)
        async with self.db.session() as session:
            if await session.scalar(select(ApiKey.id).where(ApiKey.name == name)):
                raise ConflictError(f"an API key named {name!r} already exists")
            row = ApiKey(
                name=name, key_id=key_id, key_hash=_digest(secret), readonly=readonly
            )
            _store_verifier(row, verifier)
            session.add(row)
            await session.flush()
            return entry(row), f"{KEY_PREFIX}_{key_id}_{secret}"

    async def list(self) -> list[dict[str, Any]]:
        async with self.db.session() as session:
            rows = (await session.scalars(select(ApiKey).order_by(ApiKey.id))).all()
        return [entry(r) for r in rows]

    async def revoke(self, name: str) -> None:
        async with self.db.session() as session:
            row = await session.scalar(select(ApiKey).where(ApiKey.name == name))
            if row is None:
                raise NotFoundError("API key", name)
            row.revoked = True
        self._cache = {
            k: v for k, v in self._cache.items() if v[2].name != f"apikey:{name}"
        }

    async def verify(self, token: str) -> Caller | None:
        """The caller a key (in either form) belongs to; None if unknown or revoked."""
        found = _lookup(token)
        if found is None:
            return None
        column, value, secret = found
        cache_key = f"{column}:{value}"
        digest = _digest(secret)
        cached = self._cache.get(cache_key)
        now = time.monotonic()
        if cached and cached[0] > now and hmac.compare_digest(cached[1], digest):
            # The cache spares the hash and the write, not the revocation
            # check: another process (certd apikey revoke) may have revoked it.
            current = await self.current(cached[2])
            if current is None:
                self._cache.pop(cache_key, None)
            return current
        async with self.db.session() as session:
            row = await session.scalar(
                select(ApiKey).where(getattr(ApiKey, column) == value)
            )
            if (
                row is None
                or row.revoked
                or not hmac.compare_digest(row.key_hash, digest)
            ):
                self._cache.pop(cache_key, None)
                return None
            row.last_used_at = utcnow()
            needs_verifier = _verifier(row) is None
            row_id = row.id
            caller = Caller(
                name=f"apikey:{row.name}", readonly=row.readonly, key=row.id
            )
        if needs_verifier:
            # A key stored before SCRAM existed gets its verifier now, derived
            # outside the session: the store's connection is not held for it.
            verifier = await asyncio.to_thread(derive_verifier, secret)
            async with self.db.session() as session:
                row = await session.get(ApiKey, row_id)
                if row is not None and _verifier(row) is None:
                    _store_verifier(row, verifier)
        self._cache[cache_key] = (now + CACHE_SECONDS, digest, caller)
        return caller

    async def login(self, name: str, token: str) -> Caller | None:
        """The caller for a key given with the name it was created under, or None."""
        caller = await self.verify(token)
        if caller is None or caller.name != f"apikey:{name}":
            return None
        return caller

    async def scram_verifier(
        self, name: str, row_id: int
    ) -> tuple[Caller, ScramVerifier] | None:
        """The caller and SCRAM verifier of an active key with this name and id."""
        async with self.db.session() as session:
            row = await session.get(ApiKey, row_id)
            if row is None or row.revoked or row.name != name:
                return None
            verifier = _verifier(row)
            if verifier is None:
                return None
            caller = Caller(
                name=f"apikey:{row.name}", readonly=row.readonly, key=row.id
            )
            return caller, verifier

    async def current(self, caller: Caller) -> Caller | None:
        """The caller as its API key stands now; None once the key is revoked.

        A key made read-only since makes the caller read-only. Callers that did
        not log in with a key are returned as they are. Costs one lookup by
        primary key, on the calling thread where the store allows it.
        """
        if caller.key is None:
            return caller
        params = {"id": caller.key}
        rows = self.db.read_now(_STANDING, params)
        if rows is None:

            def read(conn: Connection) -> list[Any]:
                return list(conn.execute(_STANDING, params).all())

            rows = await self.db.read(read)
        if not rows:
            return None
        name, revoked, readonly = rows[0]
        if revoked or f"apikey:{name}" != caller.name:
            return None
        if readonly and not caller.readonly:
            return Caller(name=caller.name, readonly=True, key=caller.key)
        return caller

    async def mark_used(self, row_id: int) -> None:
        """Record a successful login that did not go through :meth:`verify`."""
        async with self.db.session() as session:
            row = await session.get(ApiKey, row_id)
            if row is not None:
                row.last_used_at = utcnow()


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def unix_caller(sock: socket.socket, group: str | None) -> Caller | None:
    """The caller on the unix socket: root, the daemon's user, or the socket group."""
    _, uid, gid = peer_credentials(sock)
    if uid in (0, os.geteuid()):
        return Caller(name=f"unix:uid={uid}")
    if group:
        try:
            entry_ = grp.getgrnam(group)
        except KeyError:
            return None
        if gid == entry_.gr_gid or _user_in_group(uid, entry_):
            return Caller(name=f"unix:uid={uid}")
    return None


def _user_in_group(uid: int, group: grp.struct_group) -> bool:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name in group.gr_mem
    except KeyError:
        return False
