"""Input that would cost the daemon minutes of CPU is refused at once."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certd.errors import PkiError
from certd.pki.importing import MAX_CHAIN_LENGTH, import_chain
from certd.pki.keys import load_private_key


def _self_signed(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    import datetime

    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "X")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_a_bundle_of_many_same_named_certificates_is_refused_at_once() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    certs = [_self_signed(key) for _ in range(MAX_CHAIN_LENGTH + 1)]
    bundle = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)
    with pytest.raises(PkiError) as caught:
        import_chain(bundle)
    assert f"at most {MAX_CHAIN_LENGTH}" in caught.value.message


@pytest.mark.timeout(5)
def test_a_key_asking_for_millions_of_kdf_rounds_is_refused(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    plain = tmp_path / "key.pem"
    plain.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    # 65793 is 0x010101: three bytes that can be raised to 0x7fffff in place.
    encrypted = subprocess.run(
        [
            "openssl",
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-iter",
            "65793",
            "-in",
            str(plain),
            "-passout",
            "pass:secret",
            "-outform",
            "DER",
        ],
        capture_output=True,
        check=True,
    ).stdout
    assert encrypted.count(b"\x02\x03\x01\x01\x01") == 1
    patched = encrypted.replace(b"\x02\x03\x01\x01\x01", b"\x02\x03\x7f\xff\xff")
    import base64

    body = base64.encodebytes(patched).decode()
    pem = f"-----BEGIN ENCRYPTED PRIVATE KEY-----\n{body}-----END ENCRYPTED PRIVATE KEY-----\n"
    with pytest.raises(PkiError) as caught:
        load_private_key(pem, "secret")
    assert "8,388,607 PBKDF2 iterations" in caught.value.message
    # The unpatched key, with an ordinary count, still loads.
    ordinary = base64.encodebytes(encrypted).decode()
    loaded = load_private_key(
        f"-----BEGIN ENCRYPTED PRIVATE KEY-----\n{ordinary}-----END ENCRYPTED PRIVATE KEY-----\n",
        "secret",
    )
    assert loaded.private_numbers() == key.private_numbers()  # type: ignore[union-attr]
