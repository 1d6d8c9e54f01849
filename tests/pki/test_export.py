"""PKCS#12 and PEM bundle export, read back by cryptography and openssl."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from certd.errors import PkiError
from certd.pki.export import to_pem_bundle, to_pkcs12
from certd.pki.importing import import_chain
from certd.pki.keys import load_private_key, public_key_der
from tests.pki.conftest import MakeCa, MakeCert, MakeKey, OpenSSL


def test_pkcs12_round_trip(
    make_ca: MakeCa, make_cert: MakeCert, make_key: MakeKey
) -> None:
    root = make_ca("Root")
    leaf = make_cert(issuer=root, key=make_key("RSA"))

    data = to_pkcs12(leaf.cert, leaf.key, [root.cert], "pässword")
    loaded = pkcs12.load_pkcs12(data, "pässword".encode())

    assert loaded.cert is not None and loaded.cert.certificate == leaf.cert
    assert loaded.cert.friendly_name == b"a.example"
    assert [c.certificate for c in loaded.additional_certs] == [root.cert]
    assert loaded.key is not None
    assert public_key_der(loaded.key) == public_key_der(leaf.key)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(data, b"wrong")


def test_pkcs12_read_by_openssl(
    make_ca: MakeCa, make_cert: MakeCert, openssl: OpenSSL
) -> None:
    root = make_ca("Root")
    leaf = make_cert(issuer=root)
    path = openssl.write(
        "a.p12", to_pkcs12(leaf.cert, leaf.key, [root.cert], "pw", "my cert")
    )

    info = openssl.run(
        "pkcs12",
        "-in",
        path,
        "-passin",
        "pass:pw",
        "-info",
        "-nokeys",
        with_stderr=True,
    )
    dump = openssl.run("pkcs12", "-in", path, "-passin", "pass:pw", "-nodes")

    assert "MAC: sha256" in info
    assert "PBES2, PBKDF2, AES-256-CBC" in info
    assert "friendlyName: my cert" in dump
    assert import_chain(dump) == [leaf.cert, root.cert]
    assert public_key_der(load_private_key(dump)) == public_key_der(leaf.key)


def test_pkcs12_without_password(make_cert: MakeCert, openssl: OpenSSL) -> None:
    leaf = make_cert()

    data = to_pkcs12(leaf.cert, leaf.key, [], None)

    loaded = pkcs12.load_pkcs12(data, None)
    assert loaded.cert is not None and loaded.cert.certificate == leaf.cert
    assert loaded.additional_certs == []
    dump = openssl.run(
        "pkcs12", "-in", openssl.write("a.p12", data), "-passin", "pass:", "-nodes"
    )
    assert "BEGIN PRIVATE KEY" in dump


def test_pkcs12_refuses_foreign_key(make_cert: MakeCert, make_key: MakeKey) -> None:
    leaf = make_cert()

    with pytest.raises(
        PkiError, match="the private key does not match the certificate"
    ):
        to_pkcs12(leaf.cert, make_key("ED25519"), [], "pw")


def test_pem_bundle(make_ca: MakeCa, make_cert: MakeCert) -> None:
    root = make_ca("Root")
    leaf = make_cert(issuer=root)

    bundle = to_pem_bundle(leaf.cert, [root.cert], leaf.key)

    assert bundle.startswith(leaf.pem + root.pem)
    assert bundle.endswith("-----END PRIVATE KEY-----\n")
    assert import_chain(bundle) == [leaf.cert, root.cert]
    assert to_pem_bundle(leaf.cert, []) == leaf.pem
