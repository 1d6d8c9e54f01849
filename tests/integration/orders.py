"""Ordering certificates through the daemon's API, step by step."""

from __future__ import annotations

from typing import Any

from certd.client import Client
from tests.daemon import call_job


async def make_csr(client: Client, name: str, san: list[str]) -> int:
    """Create a CSR with a P-256 key for ``san``; return its id."""
    csr = await call_job(
        client,
        "certificate.create",
        {
            "name": f"{name}-csr",
            "create_type": "CERTIFICATE_CREATE_CSR",
            "key_type": "EC",
            "ec_curve": "SECP256R1",
            "san": san,
        },
    )
    return int(csr["id"])


async def order_certificate(
    client: Client,
    directory_url: str,
    authenticator_id: int,
    name: str,
    csr_id: int,
    san: list[str],
    **extra: Any,
) -> dict[str, Any]:
    """Run ``certificate.create`` for an ACME certificate; return the entry."""
    entry = await call_job(
        client,
        "certificate.create",
        {
            "name": name,
            "create_type": "CERTIFICATE_CREATE_ACME",
            "csr_id": csr_id,
            "acme_directory_uri": directory_url,
            "tos": True,
            "dns_mapping": {domain: authenticator_id for domain in san},
            **extra,
        },
    )
    return dict(entry)


async def order(
    client: Client,
    directory_url: str,
    authenticator_id: int,
    name: str,
    san: list[str],
    **extra: Any,
) -> dict[str, Any]:
    """A CSR and then the ACME certificate for it."""
    csr_id = await make_csr(client, name, san)
    return await order_certificate(
        client, directory_url, authenticator_id, name, csr_id, san, **extra
    )
