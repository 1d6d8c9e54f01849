"""Key generation, PEM export and tolerant, strict PEM import."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import (
    dsa,
    ec,
    ed448,
    ed25519,
    padding,
    rsa,
)

from certd.errors import PkiError
from certd.pki.keys import (
    MAX_RSA_BITS,
    PrivateKey,
    generate_private_key,
    hash_algorithm,
    key_description,
    load_private_key,
    load_stored_private_key,
    private_key_to_pem,
    public_key_der,
    read_private_key,
    validate_private_key,
)
from certd.pki.models import KeyOptions
from tests.pki.conftest import MakeKey, OpenSSL, broken_crt, oversized_rsa_pem


def traditional(key: PrivateKey, password: bytes | None = None) -> str:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        encryption,
    ).decode()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {"key_type": "RSA", "key_length": 2048, "ec_curve": None}),
        (
            {"key_length": 3072},
            {"key_type": "RSA", "key_length": 3072, "ec_curve": None},
        ),
        (
            {"key_type": "EC"},
            {"key_type": "EC", "key_length": 384, "ec_curve": "SECP384R1"},
        ),
        (
            {"key_type": "EC", "ec_curve": "SECP256R1"},
            {"key_type": "EC", "key_length": 256, "ec_curve": "SECP256R1"},
        ),
        (
            {"key_type": "EC", "ec_curve": "SECP521R1"},
            {"key_type": "EC", "key_length": 521, "ec_curve": "SECP521R1"},
        ),
        (
            {"key_type": "ED25519"},
            {"key_type": "ED25519", "key_length": None, "ec_curve": None},
        ),
    ],
)
def test_generate_private_key_follows_options(
    options: dict[str, object], expected: dict[str, object]
) -> None:
    key = generate_private_key(KeyOptions.model_validate(options))

    assert key_description(key) == expected
    assert key_description(key.public_key()) == expected


def test_generated_rsa_key_uses_f4_exponent(make_key: MakeKey) -> None:
    key = make_key("RSA")

    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.public_key().public_numbers().e == 65537


def test_private_key_to_pem_is_pkcs8(make_key: MakeKey) -> None:
    for key in (make_key("RSA"), make_key("EC"), make_key("ED25519")):
        pem = private_key_to_pem(key)

        assert pem.startswith("-----BEGIN PRIVATE KEY-----\n")
        assert public_key_der(load_private_key(pem)) == public_key_der(key)


def test_encrypted_pem_round_trips_and_openssl_reads_it(
    make_key: MakeKey, openssl: OpenSSL
) -> None:
    key = make_key("EC")
    pem = private_key_to_pem(key, passphrase="s3cret pass")

    assert pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    assert public_key_der(load_private_key(pem, "s3cret pass")) == public_key_der(key)
    path = openssl.write("enc.key", pem)
    out = openssl.run("pkey", "-in", path, "-passin", "pass:s3cret pass", "-pubout")
    assert (
        out
        == key.public_key()
        .public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        .decode()
    )


def test_load_accepts_pkcs1_sec1_crlf_and_surrounding_text(make_key: MakeKey) -> None:
    rsa_key, ec_key = make_key("RSA"), make_key("EC")
    pkcs1 = traditional(rsa_key)
    sec1 = traditional(ec_key)
    assert pkcs1.startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert sec1.startswith("-----BEGIN EC PRIVATE KEY-----")

    wrapped = "Bag Attributes\n  localKeyID: 01 02\nKey Attributes: <No Attributes>\n"
    loaded_rsa = load_private_key(
        (wrapped + pkcs1 + "trailing text\n").replace("\n", "\r\n")
    )
    loaded_ec = load_private_key(("  " + sec1.replace("\n", "\n    ")).encode())

    assert public_key_der(loaded_rsa) == public_key_der(rsa_key)
    assert public_key_der(loaded_ec) == public_key_der(ec_key)


def test_load_skips_ec_parameters_block(openssl: OpenSSL) -> None:
    pem = openssl.run("ecparam", "-name", "prime256v1", "-genkey")
    assert pem.startswith("-----BEGIN EC PARAMETERS-----")

    key = load_private_key(pem)

    assert key_description(key) == {
        "key_type": "EC",
        "key_length": 256,
        "ec_curve": "SECP256R1",
    }


def test_load_reads_openssl_encrypted_keys(openssl: OpenSSL) -> None:
    pkcs8 = openssl.run(
        "genpkey", "-algorithm", "ED25519", "-aes-256-cbc", "-pass", "pass:pw"
    )
    legacy = openssl.run(
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-aes-128-cbc",
        "-pass",
        "pass:pw",
        "-outform",
        "PEM",
    )
    path = openssl.write("legacy.key", legacy)
    traditional_pem = openssl.run(
        "ec", "-in", path, "-passin", "pass:pw", "-aes128", "-passout", "pass:pw2"
    )
    assert "Proc-Type: 4,ENCRYPTED" in traditional_pem

    assert key_description(load_private_key(pkcs8, "pw"))["key_type"] == "ED25519"
    assert (
        key_description(load_private_key(traditional_pem, "pw2"))["ec_curve"]
        == "SECP384R1"
    )


def test_load_ignores_passphrase_for_plain_key(make_key: MakeKey) -> None:
    key = make_key("EC")

    loaded = load_private_key(private_key_to_pem(key), passphrase="unused")

    assert public_key_der(loaded) == public_key_der(key)


def test_load_wrong_or_missing_passphrase(make_key: MakeKey, openssl: OpenSSL) -> None:
    pem = private_key_to_pem(make_key("EC"), passphrase="right")
    legacy = traditional(make_key("EC"), b"right")

    for data in (pem, legacy):
        with pytest.raises(
            PkiError, match=r"^the passphrase does not decrypt the private key$"
        ):
            load_private_key(data, "wrong")
        with pytest.raises(
            PkiError, match=r"^the private key is encrypted; a passphrase is required$"
        ):
            load_private_key(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("", "no private key given (the input is empty)"),
        ("hello world", "no PEM private key found in the input"),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "no private key found; the input holds a CERTIFICATE block instead",
        ),
        (
            "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
            "the private key cannot be read",
        ),
    ],
)
def test_load_refuses_garbage(data: str, reason: str) -> None:
    with pytest.raises(PkiError) as info:
        load_private_key(data)

    assert info.value.message.startswith(reason)


def test_load_refuses_der_with_advice(make_key: MakeKey) -> None:
    der = make_key("EC").private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )

    with pytest.raises(PkiError, match="looks like binary DER; give it in PEM form"):
        load_private_key(der)


def test_load_refuses_two_keys(make_key: MakeKey) -> None:
    pem = private_key_to_pem(make_key("EC")) + private_key_to_pem(make_key("ED25519"))

    with pytest.raises(PkiError, match=r"^found 2 private keys; give exactly one$"):
        load_private_key(pem)


def test_load_refuses_short_rsa() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)

    with pytest.raises(PkiError) as info:
        load_private_key(traditional(weak))

    assert info.value.message == (
        "the RSA key has 1024 bits; at least 2048 are required "
        "(112-bit security, NIST SP 800-131A)"
    )


@pytest.mark.parametrize("bits", [MAX_RSA_BITS + 16, 16384])
def test_read_refuses_oversized_rsa_before_checking_it(bits: int) -> None:
    # The key is random numbers: had it been checked first, the refusal would
    # say it is inconsistent instead of naming its size.
    pem = oversized_rsa_pem(bits)

    for reader in (read_private_key, load_private_key):
        with pytest.raises(PkiError) as info:
            reader(pem)
        assert info.value.message == (
            f"the RSA key has {bits} bits; at most 8192 are accepted "
            "(larger keys take seconds to check and to sign with)"
        )


def test_the_size_bound_admits_8192_bits_and_the_check_still_runs() -> None:
    pem = oversized_rsa_pem(MAX_RSA_BITS)

    read = read_private_key(pem)

    assert isinstance(read, rsa.RSAPrivateKey) and read.key_size == 8192
    with pytest.raises(PkiError, match=r"^the RSA private key is inconsistent"):
        validate_private_key(read)
    with pytest.raises(PkiError, match=r"^the RSA private key is inconsistent"):
        load_private_key(pem)


def test_inconsistent_rsa_key_is_refused_on_import_and_read_from_the_store(
    make_key: MakeKey,
) -> None:
    good = make_key("RSA")
    assert isinstance(good, rsa.RSAPrivateKey)
    pem = private_key_to_pem(broken_crt(good))

    with pytest.raises(PkiError) as info:
        load_private_key(pem)
    assert info.value.message == (
        "the RSA private key is inconsistent: its primes, exponents and CRT "
        "values do not belong together"
    )
    # Reading alone does not check; validate_private_key is what refuses it.
    with pytest.raises(PkiError, match=r"^the RSA private key is inconsistent"):
        validate_private_key(read_private_key(pem))
    # A stored key is trusted as it is: loading it runs no check, and this one
    # still signs what the certificate's public key verifies.
    stored = load_stored_private_key(pem)
    assert isinstance(stored, rsa.RSAPrivateKey)
    signature = stored.sign(b"tbs", padding.PKCS1v15(), hashes.SHA256())
    good.public_key().verify(signature, b"tbs", padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize("key_type", ["RSA", "EC", "ED25519"])
def test_validate_returns_sound_keys(make_key: MakeKey, key_type: str) -> None:
    key = make_key(key_type)
    pem = private_key_to_pem(key)

    checked = validate_private_key(read_private_key(pem))

    assert public_key_der(checked) == public_key_der(key)
    assert public_key_der(load_private_key(pem)) == public_key_der(key)
    assert public_key_der(load_stored_private_key(pem)) == public_key_der(key)


def test_stored_keys_have_no_upper_size_bound_but_the_lower_one() -> None:
    # Keys stored before the bound existed keep signing.
    assert load_stored_private_key(oversized_rsa_pem(16384)).key_size == 16384  # type: ignore[union-attr]
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(PkiError, match=r"^the RSA key has 1024 bits"):
        load_stored_private_key(traditional(weak))


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (
            ec.generate_private_key(ec.SECP256K1()),
            "the EC key is on curve secp256k1; only SECP256R1, SECP384R1 and "
            "SECP521R1 are supported",
        ),
        (ed448.Ed448PrivateKey.generate(), "unsupported private key type"),
        (dsa.generate_private_key(2048), "unsupported private key type"),
    ],
)
def test_load_refuses_unsupported_keys(key: object, reason: str) -> None:
    pem = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()

    with pytest.raises(PkiError) as info:
        load_private_key(pem)

    assert info.value.message.startswith(reason)


def test_key_description_of_foreign_keys() -> None:
    assert key_description(ed448.Ed448PrivateKey.generate())["key_type"] == "ED448"  # type: ignore[arg-type]


def test_hash_algorithm_by_key(make_key: MakeKey) -> None:
    assert isinstance(hash_algorithm("SHA384", make_key("EC")), hashes.SHA384)
    assert isinstance(hash_algorithm(None, make_key("RSA")), hashes.SHA256)
    assert hash_algorithm("SHA512", make_key("ED25519")) is None
    assert isinstance(make_key("ED25519"), ed25519.Ed25519PrivateKey)
