"""A pebble issuing one-minute certificates, and ACME helpers for renewal tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from certd.client import Client
from tests.integration.orders import make_csr, order_certificate
from tests.testbed import NamedServer, PebbleServer, start_pebble

LIFETIME = 60


@pytest.fixture(scope="session")
def short_pebble(
    tmp_path_factory: pytest.TempPathFactory, named: NamedServer
) -> Iterator[PebbleServer]:
    """pebble whose certificates live one minute, so renewals come due in seconds."""
    with start_pebble(
        tmp_path_factory.mktemp("short-pebble"),
        named.port,
        validity_seconds=LIFETIME,
    ) as server:
        yield server


def rfc2136(named: NamedServer, secret: str | None = None) -> dict[str, Any]:
    return {**named.rfc2136_attributes(), "tsig_secret": secret or named.tsig_secret}


async def issue_acme(
    client: Client,
    pebble: PebbleServer,
    authenticator_id: int,
    name: str,
    domains: list[str],
    **extra: Any,
) -> dict[str, Any]:
    """A CSR and an ACME certificate for ``domains`` through the API."""
    csr_id = await make_csr(client, name, domains)
    return await order_certificate(
        client, pebble.directory_url, authenticator_id, name, csr_id, domains, **extra
    )
