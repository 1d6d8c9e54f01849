"""A daemon per test, and factories that build a PKI through its API."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from certd.client import Client, RpcError
from certd.store.db import Database
from tests.daemon import RunningDaemon, call_job, make_config, running_daemon
from tests.pki.conftest import OpenSSL

SUBJECT = {"country": "DE", "organization": "certd", "state": "Berlin"}


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty store at the newest schema, copied for each daemon.

    Migrating once instead of once per test keeps this directory fast; the
    daemon still runs its migration step, which finds nothing to do.
    """
    path = tmp_path_factory.mktemp("template") / "certd.db"

    async def migrate() -> None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        await db.migrate()
        await db.close()

    asyncio.run(migrate())
    return path


@pytest.fixture
async def certd(tmp_path: Path, migrated_store: Path) -> AsyncIterator[RunningDaemon]:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    shutil.copyfile(migrated_store, state / "certd.db")
    async with running_daemon(make_config(state)) as daemon:
        yield daemon


@pytest.fixture
async def client(certd: RunningDaemon) -> AsyncIterator[Client]:
    async with certd.client() as client:
        yield client


@pytest.fixture
def openssl(tmp_path: Path) -> OpenSSL:
    """Runs openssl in this test's temporary directory."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed")
    work = tmp_path / "openssl"
    work.mkdir()
    return OpenSSL(work)


async def make_root(client: Client, name: str = "root", **fields: Any) -> Any:
    """A root CA from the default profile unless ``fields`` say otherwise."""
    data = {"name": name, "create_type": "CA_CREATE_INTERNAL", "common": name}
    return await client.call(
        "certificateauthority.create", {**data, **SUBJECT, **fields}
    )


async def make_intermediate(
    client: Client, parent: int, name: str = "inter", **fields: Any
) -> Any:
    """An intermediate CA under ``parent``."""
    data = {
        "name": name,
        "create_type": "CA_CREATE_INTERMEDIATE",
        "signedby": parent,
        "common": name,
    }
    return await client.call(
        "certificateauthority.create", {**data, **SUBJECT, **fields}
    )


async def issue(client: Client, ca: int, name: str = "leaf", **fields: Any) -> Any:
    """An internal certificate signed by ``ca``: HTTPS ECC unless told otherwise."""
    data: dict[str, Any] = {
        "name": name,
        "create_type": "CERTIFICATE_CREATE_INTERNAL",
        "signedby": ca,
        "san": ["www.example.com"],
        "common": "www.example.com",
    }
    if "cert_extensions" not in fields and "profile" not in fields:
        data["profile"] = "HTTPS ECC Certificate"
    return await call_job(client, "certificate.create", {**data, **fields})


async def expect_error(client: Client, method: str, *params: Any) -> RpcError:
    """The error a call fails with; the test fails if it succeeds."""
    with pytest.raises(RpcError) as caught:
        await client.call(method, *params)
    return caught.value


def fields(error: RpcError) -> list[str]:
    """The field paths a validation error names."""
    return [e["field"] for e in error.data["errors"]]


async def snapshot(client: Client) -> dict[str, Any]:
    """Everything a refused call could have changed."""
    return {
        "certificates": await client.call("certificate.query"),
        "authorities": await client.call("certificateauthority.query"),
        "jobs": await client.call("core.get_jobs"),
    }


def leaf_of(entry: dict[str, Any]) -> x509.Certificate:
    """The first certificate of an entry's stored chain."""
    return x509.load_pem_x509_certificate(entry["certificate"].encode())


# The PKI library's factories (keys, CAs and certificates on a fixed clock)
# build the import corpus; importing them here makes them fixtures here too.
from tests.pki.conftest import _key_pool, make_ca, make_cert, make_key  # noqa: E402, F401
