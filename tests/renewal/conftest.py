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


async def replace_account(client: Client, pebble: PebbleServer) -> None:
    """Deactivate the ACME account and register a new one for the renewals.

    pebble hands an order an authorization its account already holds whenever
    rand.Intn(100) is not above PEBBLE_AUTHZREUSE: 1 time in 100 even at 0.
    Such an order is ready at once and publishes no TXT record, so a test that
    needs a renewal to go through DNS renews with an account that has validated
    nothing yet.
    """
    for account in await client.call(
        "acme.registration.query", [["status", "=", "valid"]]
    ):
        job_id = await client.call("acme.registration.deactivate", account["id"])
        assert (await client.wait_job(job_id))["status"] == "deactivated"
    job_id = await client.call(
        "acme.registration.create",
        {"acme_directory_uri": pebble.directory_url, "tos": True},
    )
    assert (await client.wait_job(job_id))["status"] == "valid"


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
