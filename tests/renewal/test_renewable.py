"""Which certificates certd renews, and the reason it gives for the others."""

from __future__ import annotations

import pytest

from certd.renewal.planning import not_renewable_because, renewal_kind
from certd.store.models import Certificate

PEM = "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(
    ("fields", "kind", "reason"),
    [
        ({"cert_type": "CSR", "certificate": None}, None, "it is a CSR"),
        ({"certificate": None}, None, "it holds no certificate"),
        ({"revoked": True, "signedby_id": 1}, None, "it is revoked"),
        (
            {"acme_account_id": 1, "acme_directory_uri": "https://ca/dir"},
            None,
            "its ACME directory or dns_mapping is missing",
        ),
        (
            {},
            None,
            "it was neither ordered over ACME nor signed by one of certd's CAs",
        ),
        ({"signedby_id": 1}, "internal", None),
        (
            {
                "acme_account_id": 1,
                "acme_directory_uri": "https://ca/dir",
                "dns_mapping": {"a.example.test": 1},
            },
            "acme",
            None,
        ),
    ],
)
def test_renewal_kind_and_the_reason_for_none(
    fields: dict[str, object], kind: str | None, reason: str | None
) -> None:
    values: dict[str, object] = {
        "name": "c",
        "cert_type": "CERTIFICATE",
        "certificate": PEM,
        "revoked": False,
        "acme_account_id": None,
        "acme_directory_uri": None,
        "dns_mapping": {},
        "signedby_id": None,
    }
    row = Certificate(**{**values, **fields})
    assert renewal_kind(row) == kind
    if reason is not None:
        assert not_renewable_because(row) == reason
