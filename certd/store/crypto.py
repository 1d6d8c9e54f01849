"""Encryption at rest: AES-256-GCM for private keys and provider secrets.

A value is sealed as ``enc:v1:<key id>:<base64 of nonce || ciphertext+tag>``.
The key id names the master key that sealed it, so a wrong key is reported as
such instead of as a failed tag check. The associated data binds each value to
its table and column: a private key copied into another column (or a provider
secret into a key column) no longer opens.

The data key is derived from the master key with HKDF, so the master key
itself never touches a cipher and can serve other purposes: the key webhook
URLs are named under in the store (:func:`hook_key`) is derived the same way
with a label of its own, and is independent of the data key.

Columns declare :class:`EncryptedText` or :class:`EncryptedJSON`; the keyring
comes from the database engine they run on (:func:`install_keyring`), so code
above the store reads and writes plain values.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Text, TypeDecorator

from certd.errors import SecretStoreError

PREFIX = "enc:v1:"
EMPTY_DOCUMENT = "{}"
KEY_BYTES = 32
NONCE_BYTES = 12
_HKDF_INFO = b"certd store encryption v1"
_KEY_ID_LABEL = b"certd master key id"
_HOOK_KEY_INFO = b"certd webhook names v1"
# Attribute set on an engine's dialect; the TypeDecorators read it from there.
_DIALECT_ATTRIBUTE = "certd_keyring"


def key_id(master_key: bytes) -> str:
    """A short public name of a master key; it reveals nothing about the key."""
    return hmac.new(master_key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def sealed_key_id(value: str) -> str | None:
    """The key id a sealed value names, or None for anything else."""
    if not is_sealed(value):
        return None
    return value[len(PREFIX) :].split(":", 1)[0]


def associated_data(table: str, column: str) -> bytes:
    return f"certd:{table}.{column}".encode()


class Keyring:
    """The master key that seals new values, and older keys that still open."""

    def __init__(self, master_key: bytes, *older: bytes) -> None:
        for key in (master_key, *older):
            if len(key) != KEY_BYTES:
                raise SecretStoreError(
                    f"a master key must be {KEY_BYTES} bytes, not {len(key)}"
                )
        self.key_id = key_id(master_key)
        # Held in memory only: a stored copy would let a reader of the store
        # test guesses of a URL against its name there.
        self.hook_key = hook_key(master_key)
        self._ciphers = {key_id(k): AESGCM(_data_key(k)) for k in (*older, master_key)}

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._ciphers)

    def seal(self, plaintext: str, table: str, column: str) -> str:
        """Encrypt ``plaintext`` for one column under the current master key."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.key_id].encrypt(
            nonce, plaintext.encode(), associated_data(table, column)
        )
        blob = base64.b64encode(nonce + sealed).decode("ascii")
        return f"{PREFIX}{self.key_id}:{blob}"

    def open(self, value: str, table: str, column: str) -> str:
        """Decrypt a sealed value of one column.

        Raises:
            SecretStoreError: the value is not sealed, names a key this keyring
                does not hold, or fails authentication (tampered or moved).
        """
        where = f"{table}.{column}"
        if not is_sealed(value):
            raise SecretStoreError(
                f"{where} holds a value that is not encrypted; restart the daemon "
                "so that it encrypts stored secrets"
            )
        kid, _, blob = value[len(PREFIX) :].partition(":")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise SecretStoreError(
                f"{where} was encrypted with master key {kid}, but the configured "
                f"master key is {self.key_id}: restore the master key this store "
                "was written with"
            )
        try:
            raw = base64.b64decode(blob, validate=True)
            plaintext = cipher.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated_data(table, column)
            )
        except (binascii.Error, InvalidTag, ValueError):
            raise SecretStoreError(
                f"a value in {where} does not decrypt with master key {kid}: "
                "it was altered or copied from another column"
            ) from None
        return plaintext.decode()


def _data_key(master_key: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_HKDF_INFO
    ).derive(master_key)


def hook_key(master_key: bytes) -> bytes:
    """The key the store names webhooks under (certd.deploy.events.hook_digest).

    Deploy spec digests use it too, their input prefixed apart
    (certd.deploy.deployer.spec_digest).
    """
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_HOOK_KEY_INFO
    ).derive(master_key)


def install_keyring(engine: Any, keyring: Keyring | None) -> None:
    """Let the encrypted columns of ``engine`` use ``keyring``."""
    dialect = getattr(engine, "sync_engine", engine).dialect
    setattr(dialect, _DIALECT_ATTRIBUTE, keyring)


def keyring_of(dialect: Any) -> Keyring:
    keyring: Keyring | None = getattr(dialect, _DIALECT_ATTRIBUTE, None)
    if keyring is None:
        raise SecretStoreError(
            "the store's master key is not loaded; encrypted columns cannot be used"
        )
    return keyring


class EncryptedText(TypeDecorator[str]):
    """A text column stored sealed under the store's master key."""

    impl = Text
    cache_ok = True

    def __init__(self, table: str, column: str) -> None:
        super().__init__()
        self.table = table
        self.column = column

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        if value is None:
            return None
        return keyring_of(dialect).seal(value, self.table, self.column)

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        if value is None:
            return None
        return keyring_of(dialect).open(value, self.table, self.column)


class EncryptedJSON(TypeDecorator[Any]):
    """A JSON document stored sealed, as one encrypted text value."""

    impl = Text
    cache_ok = True

    def __init__(self, table: str, column: str) -> None:
        super().__init__()
        self.table = table
        self.column = column

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if value is None:
            return None
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
        return keyring_of(dialect).seal(text, self.table, self.column)

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        if value is None:
            return None
        if value == EMPTY_DOCUMENT:
            # A server default: an empty document hides nothing.
            return {}
        return json.loads(keyring_of(dialect).open(value, self.table, self.column))
