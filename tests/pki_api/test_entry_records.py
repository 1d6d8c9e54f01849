"""Compact certificate records read as the entries the API has always listed."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certd.api.certificate_entries import ROW_FIELDS, record_of, split_chain
from certd.api.filters import QueryOptions, filter_entries
from certd.pki.inspect import FIELDS, describe_certificate, describe_csr

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
PEM = serialization.Encoding.PEM


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@pytest.fixture(scope="module")
def chain() -> str:
    """A leaf and its CA, as certd stores an imported chain."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("records CA"))
        .issuer_name(_name("records CA"))
        .public_key(ca_key.public_key())
        .serial_number(7)
        .not_valid_before(NOW - dt.timedelta(days=10))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("www.example.test"))
        .issuer_name(ca.subject)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(4242)
        .not_valid_before(NOW - dt.timedelta(days=5))
        .not_valid_after(NOW + dt.timedelta(days=20, hours=6))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("www.example.test")]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return leaf.public_bytes(PEM).decode() + ca.public_bytes(PEM).decode()


def _row(**values: Any) -> SimpleNamespace:
    row: dict[str, Any] = dict.fromkeys(ROW_FIELDS)
    row.update(
        id=1,
        name="web",
        cert_type="CERTIFICATE",
        create_type="CERTIFICATE_CREATE_IMPORTED",
        has_privatekey=1,
        dns_mapping=None,
        reuse_key=False,
        revoked=False,
        failure_count=0,
        created_at=NOW - dt.timedelta(days=5),
        version="2026-12-04 11:00:00",
    )
    row.update(values)
    return SimpleNamespace(**row)


def test_a_view_lists_what_the_description_says(chain: str) -> None:
    record = record_of(_row(certificate=chain), None)
    entry = record.as_dict(NOW)

    described = describe_certificate(chain, NOW)
    for field in FIELDS:
        assert entry[field] == described[field], field
    assert record.description.chain_from_text
    assert entry["chain_list"] == split_chain(chain)
    assert len(entry["chain_list"]) == 2
    assert entry["extensions"]["SubjectAlternativeName"]["critical"] is False
    assert entry["days_left"] == 20
    assert entry["expired"] is False
    assert entry["issuer"] == "external"
    assert entry["has_privatekey"] is True
    assert entry["certificate"] == chain
    assert entry["acme"] is None
    assert entry["dns_mapping"] == {}
    assert entry["renewal"] == {
        "next_attempt_at": None,
        "last_attempt_at": None,
        "last_error": None,
        "failure_count": 0,
    }
    assert entry["created_at"] == (NOW - dt.timedelta(days=5)).isoformat()


def test_days_left_and_expired_follow_the_clock(chain: str) -> None:
    record = record_of(_row(certificate=chain), None)
    later = NOW + dt.timedelta(days=21)
    assert record.as_dict(later)["days_left"] == -1
    assert record.as_dict(later)["expired"] is True
    assert record.as_dict(NOW)["expired"] is False
    # Read one at a time, fields are read at the moment of reading.
    assert record["days_left"] in (19, 20)
    assert record["expired"] is False


def test_a_chain_stored_in_other_whitespace_keeps_its_own_list(chain: str) -> None:
    text = "subject=CN = www.example.test\n" + chain.replace("\n", "\r\n")
    record = record_of(_row(certificate=text), None)
    assert not record.description.chain_from_text
    entry = record.as_dict(NOW)
    assert entry["chain_list"] == describe_certificate(text)["chain_list"]
    assert entry["chain_list"] == split_chain(chain)
    assert entry["certificate"] == text


def test_a_csr_row_is_described_from_its_request() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr_pem = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name("csr.example.test"))
        .sign(key, hashes.SHA256())
        .public_bytes(PEM)
        .decode()
    )
    record = record_of(_row(cert_type="CSR", csr=csr_pem), None)
    entry = record.as_dict(NOW)
    described = describe_csr(csr_pem)
    for field in FIELDS:
        assert entry[field] == described[field], field
    assert entry["cert_type_CSR"] is True
    assert entry["issuer"] is None
    assert entry["days_left"] is None
    assert entry["chain_list"] is None


def test_an_unchanged_text_keeps_its_description(chain: str) -> None:
    first = record_of(_row(certificate=chain), None)
    again = record_of(_row(certificate=chain, version="later", failure_count=2), first)
    assert again.description is first.description
    assert again["renewal"]["failure_count"] == 2
    changed = record_of(_row(certificate=chain + "\n"), first)
    assert changed.description is not first.description


def test_views_filter_order_and_come_back_as_dicts(chain: str) -> None:
    records = [
        record_of(_row(id=1, name="b", certificate=chain), None),
        record_of(_row(id=2, name="a", certificate=chain, revoked=True), None),
        record_of(_row(id=3, name="c", cert_type="CSR", csr=None), None),
    ]
    views = records
    assert dict(views[0]) == views[0].as_dict()
    assert "name" in views[0] and "nothing" not in views[0]
    assert len(views[0]) == len(views[0].as_dict())

    listed = filter_entries(
        views, [["cert_type", "=", "CERTIFICATE"]], QueryOptions(order_by=["name"])
    )
    assert [type(e) for e in listed] == [dict, dict]
    assert [e["name"] for e in listed] == ["a", "b"]

    selected = filter_entries(
        views,
        [
            ["renewal.failure_count", "=", 0],
            ["revoked", "=", False],
            ["chain", "=", True],
        ],
        QueryOptions(select=["id", "days_left", "acme"]),
    )
    assert selected == [{"id": 1, "days_left": 20, "acme": None}]

    one = filter_entries(views, [["id", "=", 3]], QueryOptions(get=True))
    assert type(one) is dict and one["parsed"] is False
