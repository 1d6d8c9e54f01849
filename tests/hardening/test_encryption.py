"""Private keys and provider secrets are encrypted at rest, under a master key."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine

from certd.config import Config
from certd.errors import SecretStoreError
from certd.pki.keys import generate_private_key, private_key_to_pem
from certd.pki.models import KeyOptions
from certd.store.crypto import Keyring, is_sealed, key_id, sealed_key_id
from certd.store.db import Database, alembic_config
from certd.store.masterkey import (
    _reseal,
    encrypted_columns,
    find_key_source,
    unlock_store,
    write_key_file,
)
from certd.store.models import AcmeAccount
from tests.daemon import call_job, make_config, running_daemon, write_config
from tests.hardening.conftest import database_path, raw_store_bytes, raw_values

TSIG = base64.b64encode(b"canary tsig secret for encryption").decode()
RFC2136 = {
    "authenticator": "rfc2136",
    "server": "127.0.0.1",
    "port": 5399,
    "tsig_key_name": "acme-key",
    "tsig_secret": TSIG,
}
CSR = {
    "name": "csr",
    "create_type": "CERTIFICATE_CREATE_CSR",
    "key_type": "EC",
    "ec_curve": "SECP256R1",
    "san": ["a.example.test"],
}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def master_key(state_dir: Path) -> bytes:
    return base64.b64decode((state_dir / "master.key").read_text())


async def fill_store(config: Config) -> dict[str, Any]:
    """Store one secret of each kind through the daemon; return what was stored."""
    async with running_daemon(config) as running:
        async with running.client() as client:
            authenticator = await client.call(
                "acme.dns.authenticator.create",
                {"name": "bind", "attributes": RFC2136},
            )
            csr = await call_job(client, "certificate.create", CSR)
        account_pem = generated_pem()
        async with running.daemon.db.session() as session:
            session.add(
                AcmeAccount(directory="https://127.0.0.1:1/dir", key_pem=account_pem)
            )
    return {"authenticator": authenticator, "csr": csr, "account_pem": account_pem}


def generated_pem() -> str:
    options = KeyOptions.model_validate({"key_type": "EC"})
    return private_key_to_pem(generate_private_key(options))


def sealed_columns(state_dir: Path) -> dict[str, list[Any]]:
    out = {}
    for table, columns in encrypted_columns().items():
        for column in columns:
            out[f"{table}.{column}"] = raw_values(state_dir, table, column)
    return out


async def test_secrets_are_sealed_and_read_back(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = make_config(state)
    stored = await fill_store(config)

    columns = sealed_columns(state)
    assert columns["dns_authenticator.attributes"][0].startswith("enc:v1:")
    assert columns["certificate.privatekey"][0].startswith("enc:v1:")
    assert columns["acme_account.key_pem"][0].startswith("enc:v1:")
    kid = key_id(master_key(state))
    for values in columns.values():
        assert all(sealed_key_id(v) == kid for v in values if v is not None)
    everything = raw_store_bytes(state)
    assert TSIG.encode() not in everything
    assert b"PRIVATE KEY" not in everything
    body = "".join(stored["account_pem"].splitlines()[1:-1])
    assert body[:40].encode() not in everything

    async with running_daemon(config) as running:
        async with running.client() as client:
            entry = await client.call("acme.dns.authenticator.get_instance", 1)
            cert = await client.call("certificate.get_instance", stored["csr"]["id"])
        provider = await running.daemon.services[
            "acme.dns.authenticator"
        ].open_provider(1)  # type: ignore[attr-defined]
        async with running.daemon.db.session() as session:
            account = await session.get(AcmeAccount, 1)
    assert entry["secrets_set"] == ["tsig_secret"]
    assert entry["attributes"]["server"] == "127.0.0.1"
    assert provider.attributes.tsig_secret.get_secret_value() == TSIG
    assert cert["has_privatekey"] is True
    assert account is not None and account.key_pem == stored["account_pem"]


async def test_modes_of_state_dir_key_database_and_socket(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = make_config(state)
    async with running_daemon(config) as running:
        async with running.client() as client:
            await client.call(
                "acme.dns.authenticator.create",
                {"name": "bind", "attributes": RFC2136},
            )
        assert mode(state) == 0o700
        assert mode(state / "master.key") == 0o600
        assert config.server.unix_socket is not None
        assert mode(config.server.unix_socket) == 0o600
        for name in ("certd.db", "certd.db-wal", "certd.db-shm", "certd.lock"):
            assert mode(state / name) == 0o600, name
    assert len(master_key(state)) == 32


async def test_a_wide_state_dir_is_narrowed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    async with running_daemon(make_config(state)):
        assert mode(state) == 0o700


def _fill_not_null(
    conn: sqlite3.Connection, table: str, values: dict[str, Any]
) -> None:
    """Insert a row, giving every NOT NULL column without a default a value."""
    row = dict(values)
    for _, name, kind, notnull, default, pk in conn.execute(
        f"PRAGMA table_info({table})"
    ):
        if name in row or pk or not notnull or default is not None:
            continue
        kind = kind.upper()
        if "INT" in kind or "BOOL" in kind or "FLOAT" in kind or "REAL" in kind:
            row[name] = 0
        elif "JSON" in kind:
            row[name] = "{}"
        elif "DATETIME" in kind:
            row[name] = "2026-01-01 00:00:00.000000"
        else:
            row[name] = ""
    names = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", list(row.values()))


async def test_plaintext_rows_of_an_older_store_are_encrypted_at_start(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    engine = create_engine(f"sqlite:///{database_path(state)}")
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0006")
    engine.dispose()
    key_pem = generated_pem()
    with sqlite3.connect(database_path(state)) as conn:
        _fill_not_null(
            conn,
            "dns_authenticator",
            {
                "name": "old",
                "provider": "rfc2136",
                "attributes": json.dumps(
                    {k: v for k, v in RFC2136.items() if k != "authenticator"}
                ),
            },
        )
        _fill_not_null(
            conn,
            "certificate",
            {
                "name": "old-csr",
                "cert_type": "CSR",
                "create_type": "CERTIFICATE_CREATE_CSR",
                "privatekey": key_pem,
            },
        )
        _fill_not_null(
            conn,
            "acme_account",
            {"directory": "https://127.0.0.1:1/dir", "key_pem": key_pem},
        )
    assert TSIG.encode() in raw_store_bytes(state)

    async with running_daemon(make_config(state)) as running:
        provider = await running.daemon.services[
            "acme.dns.authenticator"
        ].open_provider(1)  # type: ignore[attr-defined]
        async with running.daemon.db.session() as session:
            account = await session.get(AcmeAccount, 1)

    assert provider.attributes.tsig_secret.get_secret_value() == TSIG
    assert account is not None and account.key_pem == key_pem
    columns = sealed_columns(state)
    assert is_sealed(columns["dns_authenticator.attributes"][0])
    assert is_sealed(columns["certificate.privatekey"][0])
    assert is_sealed(columns["acme_account.key_pem"][0])
    with sqlite3.connect(database_path(state)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
    assert TSIG.encode() not in raw_store_bytes(state)


def serve(config: Config, directory: Path) -> subprocess.CompletedProcess[str]:
    """Run ``certd serve`` expecting it to refuse to start."""
    path = write_config(directory / "certd.toml", config)
    return subprocess.run(
        [sys.executable, "-m", "certd", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_clean_refusal(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "certd: " in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


async def test_wrong_master_key_stops_the_start_clearly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = make_config(state)
    await fill_store(config)
    right = master_key(state)
    write_key_file(state / "master.key", os.urandom(32))

    result = serve(config, tmp_path)

    assert_clean_refusal(
        result, f"was encrypted with master key {key_id(right)}", "restore"
    )
    assert TSIG not in result.stderr


async def test_missing_master_key_is_not_replaced_silently(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = make_config(state)
    await fill_store(config)
    kid = key_id(master_key(state))
    (state / "master.key").unlink()

    result = serve(config, tmp_path)

    assert_clean_refusal(result, "is missing", kid)
    assert not (state / "master.key").exists()


@pytest.mark.parametrize(
    ("content", "file_mode", "message"),
    [
        (b"too short", 0o600, "must hold 32 random bytes"),
        (base64.b64encode(os.urandom(31)), 0o600, "must hold 32 random bytes"),
        (base64.b64encode(os.urandom(32)), 0o644, "chmod 600"),
    ],
)
def test_bad_master_key_files_are_refused(
    tmp_path: Path, content: bytes, file_mode: int, message: str
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    key = state / "master.key"
    key.write_bytes(content)
    key.chmod(file_mode)

    result = serve(make_config(state), tmp_path)

    assert_clean_refusal(result, message, str(key))


async def test_a_value_moved_to_another_column_does_not_open(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = make_config(state)
    await fill_store(config)
    sealed_key = raw_values(state, "certificate", "privatekey")[0]
    with sqlite3.connect(database_path(state)) as conn:
        conn.execute("UPDATE acme_account SET key_pem = ?", (sealed_key,))

    result = serve(config, tmp_path)

    assert_clean_refusal(result, "acme_account.key_pem", "copied from another column")


def test_keyring_seals_with_fresh_nonces_and_checks_everything() -> None:
    old, new = os.urandom(32), os.urandom(32)
    ring = Keyring(new, old)
    first = ring.seal("secret", "t", "c")
    second = ring.seal("secret", "t", "c")

    assert first != second
    assert ring.open(first, "t", "c") == "secret"
    assert sealed_key_id(first) == key_id(new)
    assert Keyring(new).open(first, "t", "c") == "secret"
    assert ring.open(Keyring(old).seal("older", "t", "c"), "t", "c") == "older"
    with pytest.raises(SecretStoreError, match="copied from another column"):
        ring.open(first, "t", "other")
    kid, blob = first[len("enc:v1:") :].split(":")
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    tampered = f"enc:v1:{kid}:{base64.b64encode(bytes(raw)).decode()}"
    with pytest.raises(SecretStoreError, match="altered"):
        ring.open(tampered, "t", "c")
    with pytest.raises(
        SecretStoreError, match=f"configured master key is {key_id(old)}"
    ):
        Keyring(old).open(first, "t", "c")
    with pytest.raises(SecretStoreError, match="not encrypted"):
        ring.open("-----BEGIN PRIVATE KEY-----", "t", "c")


async def test_systemd_credential_is_used_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    key = os.urandom(32)
    (credentials / "certd-master-key").write_bytes(key)
    (credentials / "certd-master-key").chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    state = tmp_path / "state"

    await fill_store(make_config(state))

    assert not (state / "master.key").exists()
    assert sealed_key_id(raw_values(state, "certificate", "privatekey")[0]) == key_id(
        key
    )
    assert find_key_source(state, None).kind == "credential"


async def test_configured_key_file_wins_and_must_exist(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key_path = tmp_path / "keys" / "certd.key"
    config = make_config(state, store={"master_key_file": str(key_path)})

    result = serve(config, tmp_path)
    assert_clean_refusal(result, f"{key_path} does not exist")

    key_path.parent.mkdir()
    write_key_file(key_path, os.urandom(32))
    await fill_store(config)
    assert not (state / "master.key").exists()
    assert sealed_key_id(raw_values(state, "certificate", "privatekey")[0]) == key_id(
        base64.b64decode(key_path.read_text())
    )


def certd_cli(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "certd", "--config", str(config_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_rotate_master_key_reencrypts_everything(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = make_config(state)
    stored = await fill_store(config)
    old = key_id(master_key(state))
    config_path = write_config(tmp_path / "certd.toml", config)

    result = certd_cli(config_path, "rotate-master-key")

    assert result.returncode == 0, result.stderr
    new = key_id(master_key(state))
    assert new != old
    assert f"from {old} to {new}" in result.stderr
    sealed = [v for vs in sealed_columns(state).values() for v in vs if v is not None]
    assert f"{len(sealed)} stored secret(s) re-encrypted" in result.stderr
    assert mode(state / "master.key") == 0o600
    assert sorted(p.name for p in state.glob("master.key*")) == ["master.key"]
    for values in sealed_columns(state).values():
        assert all(sealed_key_id(v) == new for v in values if v is not None)
    async with running_daemon(config) as running:
        provider = await running.daemon.services[
            "acme.dns.authenticator"
        ].open_provider(1)  # type: ignore[attr-defined]
        async with running.daemon.db.session() as session:
            account = await session.get(AcmeAccount, 1)
    assert provider.attributes.tsig_secret.get_secret_value() == TSIG
    assert account is not None and account.key_pem == stored["account_pem"]
    listed = certd_cli(config_path, "apikey", "list")
    assert listed.returncode == 0, listed.stderr


async def test_rotation_is_refused_while_a_daemon_runs(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = make_config(state)
    config_path = write_config(tmp_path / "certd.toml", config)
    async with running_daemon(config):
        kid = key_id(master_key(state))
        result = certd_cli(config_path, "rotate-master-key")
    assert result.returncode == 2
    assert "stop the daemon" in result.stderr
    assert key_id(master_key(state)) == kid


async def test_rotation_to_a_given_key_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    old_path = tmp_path / "old.key"
    write_key_file(old_path, os.urandom(32))
    config = make_config(state, store={"master_key_file": str(old_path)})
    await fill_store(config)
    config_path = write_config(tmp_path / "certd.toml", config)

    refused = certd_cli(config_path, "rotate-master-key")
    assert refused.returncode == 2 and "--new-key-file" in refused.stderr

    new_path = tmp_path / "new.key"
    result = certd_cli(
        config_path, "rotate-master-key", "--new-key-file", str(new_path)
    )
    assert result.returncode == 0, result.stderr
    assert str(new_path) in result.stderr
    assert mode(new_path) == 0o600
    new = key_id(base64.b64decode(new_path.read_text()))
    assert sealed_key_id(raw_values(state, "certificate", "privatekey")[0]) == new

    stale = serve(config, tmp_path)
    assert_clean_refusal(stale, f"was encrypted with master key {new}")
    moved = make_config(state, store={"master_key_file": str(new_path)})
    await fill_store_again(moved)


async def fill_store_again(config: Config) -> None:
    async with running_daemon(config) as running:
        async with running.client() as client:
            assert len(await client.call("acme.dns.authenticator.query")) == 1


@pytest.mark.parametrize("committed", [True, False])
async def test_a_rotation_cut_short_is_finished_or_undone(
    tmp_path: Path, committed: bool
) -> None:
    state = tmp_path / "state"
    config = make_config(state)
    await fill_store(config)
    old_key, new_key = master_key(state), os.urandom(32)
    # The files a rotation writes before its transaction.
    write_key_file(state / "master.key.old", old_key)
    write_key_file(state / "master.key.new", new_key)
    if committed:
        db = Database(config.store.url())
        async with db.engine.begin() as conn:
            await _reseal(conn, Keyring(old_key), Keyring(new_key))
        await db.close()

    db = Database(config.store.url())
    try:
        ring = await unlock_store(db, state)
    finally:
        await db.close()

    expected = new_key if committed else old_key
    assert ring.key_id == key_id(expected)
    assert master_key(state) == expected
    assert sorted(p.name for p in state.glob("master.key*")) == ["master.key"]
    await fill_store_again(config)


async def test_deploy_settings_with_a_pkcs12_passphrase_are_sealed(
    tmp_path: Path,
) -> None:
    from tests.hardening.test_access import self_signed

    state = tmp_path / "state"
    passphrase = "canary-pkcs12-passphrase-61f0"
    cert, key, _ = self_signed("deploy.example.test", ca=False)
    async with running_daemon(make_config(state)) as running:
        async with running.client() as client:
            entry = await call_job(
                client,
                "certificate.create",
                {
                    "name": "deployed",
                    "create_type": "CERTIFICATE_CREATE_IMPORTED",
                    "certificate": cert,
                    "privatekey": key,
                },
            )
            target = {
                "directory": str(tmp_path / "out"),
                "files": ["pkcs12"],
                "pkcs12_passphrase": passphrase,
            }
            await client.call(
                "certificate.set_deploy", entry["id"], {"targets": [target]}
            )
            shown = await client.call("certificate.get_deploy", entry["id"])
    assert passphrase not in json.dumps(shown)
    sealed = raw_values(state, "certificate", "deploy")[0]
    assert is_sealed(sealed)
    assert passphrase.encode() not in raw_store_bytes(state)
