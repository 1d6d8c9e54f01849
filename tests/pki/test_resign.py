"""Renewing under a CA of ours applies the CA's start and name constraints again."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certd.errors import PkiError
from certd.pki.keys import private_key_to_pem
from certd.renewal.resign import resign
from tests.pki.conftest import NOW, Issued, MakeKey, cn
from tests.pki.test_crl_dp import csr_for
from tests.pki.test_name_rules import constrained_ca


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def old_leaf(ca: Issued, make_key: MakeKey, name: str) -> x509.Certificate:
    """A leaf signed without any check, as one from before the checks existed."""
    key = make_key("EC")
    return (
        x509.CertificateBuilder()
        .subject_name(cn(name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=80))
        .not_valid_after(NOW + dt.timedelta(days=10))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False
        )
        .sign(ca.key, hashes.SHA256())  # type: ignore[arg-type]
    )


def renew(leaf: x509.Certificate, ca: Issued, make_key: MakeKey, *chain: Issued) -> str:
    return resign(
        pem(leaf) + pem(ca.cert),
        csr_for(make_key),
        "".join(pem(c.cert) for c in (ca, *chain)),
        private_key_to_pem(ca.key),
        now=NOW,
    )


def test_a_name_the_ca_forbids_is_not_renewed(make_key: MakeKey) -> None:
    ca = constrained_ca(make_key, permitted=[x509.DNSName("good.test")])
    allowed = old_leaf(ca, make_key, "www.good.test")
    forbidden = old_leaf(ca, make_key, "evil.example")

    renewed = x509.load_pem_x509_certificates(renew(allowed, ca, make_key).encode())
    with pytest.raises(PkiError) as refused:
        renew(forbidden, ca, make_key)

    assert renewed[0].subject == allowed.subject
    assert refused.value.message.startswith("the CA's name constraints forbid it: ")
    assert "evil.example" in refused.value.message


def test_the_constraints_of_a_ca_above_bind_a_renewal(make_key: MakeKey) -> None:
    root = constrained_ca(make_key, permitted=[x509.DNSName("good.test")])
    issuing = constrained_ca(make_key, parent=root, name="Issuing CA")
    forbidden = old_leaf(issuing, make_key, "evil.example")

    with pytest.raises(PkiError, match="name constraints forbid it"):
        renew(forbidden, issuing, make_key, root)


def test_a_ca_not_valid_yet_renews_nothing(make_key: MakeKey) -> None:
    ca = constrained_ca(make_key, not_before=NOW + dt.timedelta(days=1))
    leaf = old_leaf(ca, make_key, "a.example")

    with pytest.raises(PkiError, match="is not valid before"):
        renew(leaf, ca, make_key)


def test_a_renewal_starts_no_earlier_than_its_ca(make_key: MakeKey) -> None:
    ca = constrained_ca(make_key, not_before=NOW - dt.timedelta(minutes=1))
    leaf = old_leaf(ca, make_key, "a.example")

    renewed = x509.load_pem_x509_certificates(renew(leaf, ca, make_key).encode())[0]

    assert renewed.not_valid_before_utc == ca.cert.not_valid_before_utc
