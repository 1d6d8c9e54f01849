"""Importing PEM chains of every shape, and refusing the broken ones."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from certd.errors import PkiError
from certd.pki.export import to_pkcs12
from certd.pki.importing import check_key_matches, import_chain, key_matches
from certd.pki.keys import private_key_to_pem
from tests.pki.conftest import Issued, MakeCa, MakeCert, MakeKey, OpenSSL


@pytest.fixture
def chain(make_ca: MakeCa, make_cert: MakeCert) -> tuple[Issued, Issued, Issued]:
    root = make_ca("Root")
    inter = make_ca("Inter", parent=root, lifetime_days=1000)
    leaf = make_cert(issuer=inter)
    return leaf, inter, root


def subjects(certs: list) -> list[str]:  # type: ignore[type-arg]
    return [c.subject.rfc4514_string() for c in certs]


@pytest.mark.parametrize(
    "order",
    [(0,), (0, 1), (0, 1, 2), (2, 1, 0), (2, 0, 1), (1, 2, 0), (1, 0)],
)
def test_import_rebuilds_leaf_first(
    chain: tuple[Issued, Issued, Issued], order: tuple[int, ...]
) -> None:
    text = "".join(chain[i].pem for i in order)

    certs = import_chain(text)

    assert subjects(certs) == subjects([chain[i].cert for i in sorted(order)])


def test_import_accepts_crlf_and_surrounding_text(
    chain: tuple[Issued, Issued, Issued],
) -> None:
    leaf, inter, root = chain
    text = (
        "subject=CN=Inter\nissuer=CN=Root\n"
        + inter.pem
        + "\n\n# the leaf\n"
        + leaf.pem.replace("\n", "\n  ")
        + "trailing words"
    ).replace("\n", "\r\n")

    assert subjects(import_chain(text.encode())) == ["CN=a.example", "CN=Inter"]
    assert root.cert not in import_chain(text)


def test_import_reads_openssl_pkcs12_dump_with_bag_attributes(
    chain: tuple[Issued, Issued, Issued], openssl: OpenSSL
) -> None:
    leaf, inter, root = chain
    p12 = openssl.write(
        "a.p12", to_pkcs12(leaf.cert, leaf.key, [inter.cert, root.cert], "pw")
    )
    dump = openssl.run("pkcs12", "-in", p12, "-passin", "pass:pw", "-nodes")
    assert "Bag Attributes" in dump and "PRIVATE KEY" in dump

    certs = import_chain(dump)

    assert subjects(certs) == ["CN=a.example", "CN=Inter", "CN=Root"]


def test_import_reads_openssl_text_output(
    chain: tuple[Issued, Issued, Issued], openssl: OpenSSL
) -> None:
    leaf = chain[0]
    text = openssl.run("x509", "-text", "-in", openssl.write("leaf.pem", leaf.pem))
    assert text.startswith("Certificate:\n")

    assert import_chain(text) == [leaf.cert]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("", "no certificate given (the input is empty)"),
        ("hello", "no PEM certificate found in the input"),
        (b"\x30\x82\x02\x00rest", "the certificate looks like binary DER"),
        (
            "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n",
            "certificate 0 cannot be read",
        ),
    ],
)
def test_import_refuses_garbage(data: str | bytes, reason: str) -> None:
    with pytest.raises(PkiError) as info:
        import_chain(data)

    assert info.value.message.startswith(reason)


def test_import_refuses_der_certificate(chain: tuple[Issued, Issued, Issued]) -> None:
    der = chain[0].cert.public_bytes(serialization.Encoding.DER)

    with pytest.raises(PkiError, match="looks like binary DER; give it in PEM form"):
        import_chain(der)


def test_import_refuses_a_key_alone(make_key: MakeKey) -> None:
    with pytest.raises(PkiError) as info:
        import_chain(private_key_to_pem(make_key("EC")))

    assert info.value.message == (
        "no certificate found; the input holds a PRIVATE KEY block instead"
    )


def test_import_refuses_duplicates(chain: tuple[Issued, Issued, Issued]) -> None:
    leaf, inter, _ = chain

    with pytest.raises(PkiError) as info:
        import_chain(leaf.pem + inter.pem + leaf.pem)

    assert info.value.message == "certificate 2 (CN=a.example) repeats certificate 0"


def test_import_refuses_a_gap(chain: tuple[Issued, Issued, Issued]) -> None:
    leaf, _, root = chain

    with pytest.raises(PkiError) as info:
        import_chain(root.pem + leaf.pem)

    assert info.value.message == (
        "the certificates form 2 separate chains instead of one: "
        "0 (CN=Root), self-signed; 1 (CN=a.example), issued by missing 'CN=Inter'; "
        "a certificate between them is missing or one does not belong"
    )


def test_import_refuses_gap_in_middle(make_ca: MakeCa, make_cert: MakeCert) -> None:
    root = make_ca("Root")
    inter1 = make_ca("Inter1", parent=root, lifetime_days=2000)
    inter2 = make_ca("Inter2", parent=inter1, lifetime_days=1000)
    leaf = make_cert(issuer=inter2)

    with pytest.raises(PkiError) as info:
        import_chain(leaf.pem + inter2.pem + root.pem)

    assert info.value.message == (
        "the certificates form 2 separate chains instead of one: "
        "0 (CN=a.example) -> 1 (CN=Inter2), issued by missing 'CN=Inter1'; "
        "2 (CN=Root), self-signed; "
        "a certificate between them is missing or one does not belong"
    )


def test_import_refuses_two_leaves(make_ca: MakeCa, make_cert: MakeCert) -> None:
    ca = make_ca("CA")
    first = make_cert(issuer=ca, common="one.example", san=["one.example"])
    second = make_cert(issuer=ca, common="two.example", san=["two.example"])

    with pytest.raises(PkiError) as info:
        import_chain(first.pem + second.pem + ca.pem)

    assert info.value.message == (
        "the certificates form 2 separate chains instead of one: "
        "0 (CN=one.example) -> 2 (CN=CA), self-signed; "
        "1 (CN=two.example) -> 2 (CN=CA), self-signed; "
        "a certificate between them is missing or one does not belong"
    )


def test_import_refuses_impostor_issuer(make_ca: MakeCa, make_cert: MakeCert) -> None:
    real = make_ca("Inter")
    impostor = make_ca("Inter")
    leaf = make_cert(issuer=real)

    with pytest.raises(PkiError) as info:
        import_chain(leaf.pem + impostor.pem)

    assert info.value.message == (
        "the chain is broken: certificate 0 (CN=a.example) names certificate 1 as "
        "issuer, but its signature does not verify with that certificate's key"
    )


def test_import_refuses_unrelated_extra(
    chain: tuple[Issued, Issued, Issued], make_ca: MakeCa
) -> None:
    leaf, inter, _ = chain
    other = make_ca("Other")

    with pytest.raises(PkiError) as info:
        import_chain(leaf.pem + inter.pem + other.pem)

    assert info.value.message == (
        "the certificates form 2 separate chains instead of one: "
        "0 (CN=a.example) -> 1 (CN=Inter), issued by missing 'CN=Root'; "
        "2 (CN=Other), self-signed; "
        "a certificate between them is missing or one does not belong"
    )


def test_check_key_matches(
    chain: tuple[Issued, Issued, Issued], make_key: MakeKey
) -> None:
    leaf, inter, _ = chain

    check_key_matches(leaf.cert, leaf.key)
    assert key_matches(inter.cert, inter.key)
    assert not key_matches(leaf.cert, inter.key)
    with pytest.raises(PkiError) as info:
        check_key_matches(leaf.cert, make_key("RSA"))
    assert info.value.message == (
        "the private key does not match the certificate (CN=a.example)"
    )
