"""A corpus of malformed and odd PEM, DER, CSR and key inputs for the PKI loaders.

Each input either loads correctly (the same key, the same certificates, the
same CSR) or is refused with a PkiError or ValidationError whose message is a
sentence for a person. Any other exception is a crash. tests/pki holds the
well-formed shapes; this corpus is built from mutations of a few base objects
plus hand-made oddities (negative and oversized serials, dates past 2049,
explicit EC parameters, foreign curves, weak keys).
"""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import (
    dsa,
    ec,
    ed448,
    ed25519,
    rsa,
    x25519,
)
from cryptography.x509.oid import NameOID

from certd.errors import PkiError, ValidationError
from certd.pki.csr import load_csr
from certd.pki.importing import import_chain
from certd.pki.inspect import describe_certificate
from certd.pki.keys import load_private_key, public_key_der

Kind = Literal["key", "chain", "csr"]
Expect = Literal["ok", "error", "either"]
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Case:
    name: str
    kind: Kind
    data: str | bytes
    expect: Expect
    # What a correct load gives: public key DER, certificate fingerprints, or
    # the CSR's DER.
    truth: Any = None
    passphrase: str | None = None


def pem_of_key(
    key: Any, fmt: serialization.PrivateFormat, password: bytes | None = None
) -> str:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption).decode()


def name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def build_cert(
    subject: str,
    key: Any,
    issuer: tuple[str, Any] | None = None,
    *,
    not_before: dt.datetime = NOW,
    not_after: dt.datetime | None = None,
    serial: int = 0x1234,
    ca: bool = False,
) -> x509.Certificate:
    issuer_name, issuer_key = issuer or (subject, key)
    return (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer_name))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after or not_before + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def fingerprints(*certs: x509.Certificate) -> frozenset[bytes]:
    return frozenset(c.fingerprint(hashes.SHA256()) for c in certs)


# --- DER surgery for certificates cryptography refuses to build -------------


def _tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of content, end of element) of the DER element at offset."""
    tag = data[offset]
    length = data[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    return tag, start, start + length


def _encode(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        header = bytes([size])
    else:
        raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
        header = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + header + content


def with_raw_serial(cert: x509.Certificate, key: Any, serial_content: bytes) -> str:
    """The certificate re-signed with an INTEGER serial of exactly these bytes."""
    der = cert.public_bytes(serialization.Encoding.DER)
    _, body, _ = _tlv(der, 0)
    _, tbs_body, tbs_end = _tlv(der, body)
    algorithm_end = _tlv(der, tbs_end)[2]
    algorithm = der[tbs_end:algorithm_end]
    version_end = _tlv(der, tbs_body)[2]
    serial_end = _tlv(der, version_end)[2]
    tbs = _encode(
        0x30,
        der[tbs_body:version_end]
        + _encode(0x02, serial_content)
        + der[serial_end:tbs_end],
    )
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    out = _encode(0x30, tbs + algorithm + _encode(0x03, b"\x00" + signature))
    return (
        "-----BEGIN CERTIFICATE-----\n"
        + "\n".join(
            base64.b64encode(out).decode()[i : i + 64]
            for i in range(0, len(base64.b64encode(out)), 64)
        )
        + "\n-----END CERTIFICATE-----\n"
    )


def openssl(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(
        ["openssl", *args], input=stdin, capture_output=True, check=True
    ).stdout


# --- the corpus ---------------------------------------------------------------


def mutations(text: str) -> list[tuple[str, str | bytes, Expect]]:
    """Damaged and re-dressed forms of one PEM object."""
    lines = text.strip().splitlines()
    body = lines[1:-1]
    label = lines[0].removeprefix("-----BEGIN ").removesuffix("-----")
    der = base64.b64decode("".join(body))
    joined = "\n".join(lines) + "\n"
    out: list[tuple[str, str | bytes, Expect]] = []
    for fraction in (0.1, 0.5, 0.9):
        cut = max(1, int(len(body) * fraction))
        out.append(
            (
                f"truncated body {fraction}",
                "\n".join([lines[0], *body[:cut], lines[-1]]),
                "error",
            )
        )
    out += [
        ("cut mid-line", joined[: len(joined) // 2], "error"),
        ("no END line", "\n".join(lines[:-1]) + "\n", "error"),
        ("no BEGIN line", "\n".join(lines[1:]) + "\n", "error"),
        ("wrong label", joined.replace(label, "PUBLIC KEY"), "error"),
        (
            "mismatched END label",
            "\n".join([*lines[:-1], "-----END SOMETHING ELSE-----"]),
            "error",
        ),
        ("invalid base64 character", joined.replace(body[0][:4], "!@#$", 1), "error"),
        (
            "flipped DER byte",
            _repem(label, der[:20] + bytes([der[20] ^ 0xFF]) + der[21:]),
            "either",
        ),
        ("trailing DER garbage", _repem(label, der + b"\x00\x00garbage"), "either"),
        ("DER instead of PEM", der, "error"),
        ("empty body", f"-----BEGIN {label}-----\n-----END {label}-----\n", "error"),
        ("CRLF line ends", joined.replace("\n", "\r\n"), "ok"),
        (
            "text around it",
            "subject=whatever\n\n" + joined + "\ntrailing words\n",
            "ok",
        ),
        ("indented", "\n".join("    " + line for line in lines) + "\n", "ok"),
        ("UTF-16", joined.encode("utf-16"), "error"),
        ("NUL inside", joined.replace("\n", "\n\x00", 2), "either"),
        (
            "nested BEGIN",
            "\n".join([lines[0], lines[0], *body, lines[-1], lines[-1]]),
            "either",
        ),
        ("huge junk prefix", "A" * 2_000_000 + "\n" + joined, "ok"),
    ]
    return out


def _repem(label: str, der: bytes) -> str:
    text = base64.b64encode(der).decode()
    chunks = [text[i : i + 64] for i in range(0, len(text), 64)]
    return (
        "\n".join([f"-----BEGIN {label}-----", *chunks, f"-----END {label}-----"])
        + "\n"
    )


@cache
def corpus() -> list[Case]:
    cases: list[Case] = []
    p256 = ec.generate_private_key(ec.SECP256R1())
    rsa2048 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs8 = serialization.PrivateFormat.PKCS8
    traditional = serialization.PrivateFormat.TraditionalOpenSSL

    # keys: good ones in every accepted form
    good_keys = {
        "EC P-256 PKCS#8": p256,
        "EC P-384": ec.generate_private_key(ec.SECP384R1()),
        "EC P-521": ec.generate_private_key(ec.SECP521R1()),
        "RSA 2048": rsa2048,
        "Ed25519": ed25519.Ed25519PrivateKey.generate(),
    }
    for label, key in good_keys.items():
        truth = public_key_der(key)
        cases.append(Case(f"key {label}", "key", pem_of_key(key, pkcs8), "ok", truth))
    cases.append(
        Case(
            "key RSA PKCS#1",
            "key",
            pem_of_key(rsa2048, traditional),
            "ok",
            public_key_der(rsa2048),
        )
    )
    cases.append(
        Case(
            "key EC SEC1",
            "key",
            pem_of_key(p256, traditional),
            "ok",
            public_key_der(p256),
        )
    )
    encrypted = pem_of_key(p256, pkcs8, b"corpus-pass")
    cases.append(
        Case(
            "key encrypted, right passphrase",
            "key",
            encrypted,
            "ok",
            public_key_der(p256),
            "corpus-pass",
        )
    )
    cases.append(Case("key encrypted, no passphrase", "key", encrypted, "error"))
    cases.append(
        Case(
            "key encrypted, wrong passphrase",
            "key",
            encrypted,
            "error",
            passphrase="wrong",
        )
    )
    cases.append(
        Case(
            "key encrypted PKCS#1, right passphrase",
            "key",
            pem_of_key(rsa2048, traditional, b"pw"),
            "ok",
            public_key_der(rsa2048),
            "pw",
        )
    )
    with_params = openssl("ecparam", "-name", "prime256v1", "-genkey").decode()
    cases.append(Case("key after EC PARAMETERS block", "key", with_params, "ok", None))

    # keys certd must refuse
    refused = {
        "RSA 1024 (too weak)": rsa.generate_private_key(
            public_exponent=65537, key_size=1024
        ),
        "secp256k1 (foreign curve)": ec.generate_private_key(ec.SECP256K1()),
        "brainpoolP256r1": ec.generate_private_key(ec.BrainpoolP256R1()),
        "Ed448": ed448.Ed448PrivateKey.generate(),
        "X25519 (not for signing)": x25519.X25519PrivateKey.generate(),
        "DSA": dsa.generate_private_key(key_size=1024),
    }
    for label, key in refused.items():
        cases.append(Case(f"key {label}", "key", pem_of_key(key, pkcs8), "error"))
    explicit = openssl(
        "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-param_enc", "explicit"
    ).decode()
    # cryptography maps explicit parameters of a named curve back to the name.
    cases.append(Case("key with explicit EC parameters", "key", explicit, "either"))
    public = (
        p256.public_key()
        .public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        .decode()
    )
    cases.append(Case("public key instead of private", "key", public, "error"))
    cases.append(Case("two keys", "key", pem_of_key(p256, pkcs8) * 2, "error"))
    cases.append(Case("empty key input", "key", "", "error"))
    cases.append(Case("key junk only", "key", "\x00\xff" * 1000, "error"))
    for label, data, expect in mutations(pem_of_key(p256, pkcs8)):
        cases.append(
            Case(
                f"key mutation: {label}",
                "key",
                data,
                expect,
                public_key_der(p256) if expect == "ok" else None,
            )
        )

    # certificates and chains
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = build_cert("Corpus Root", root_key, ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = build_cert("leaf.example.test", leaf_key, ("Corpus Root", root_key))
    cases.append(Case("chain leaf alone", "chain", pem(leaf), "ok", fingerprints(leaf)))
    cases.append(
        Case(
            "chain leaf then root",
            "chain",
            pem(leaf) + pem(root),
            "ok",
            fingerprints(leaf, root),
        )
    )
    cases.append(
        Case(
            "chain root then leaf",
            "chain",
            pem(root) + pem(leaf),
            "ok",
            fingerprints(leaf, root),
        )
    )
    cases.append(Case("chain repeated certificate", "chain", pem(leaf) * 2, "error"))
    other = build_cert("stranger", ec.generate_private_key(ec.SECP256R1()))
    cases.append(
        Case(
            "chain with an unrelated certificate",
            "chain",
            pem(leaf) + pem(other),
            "error",
        )
    )
    cases.append(Case("chain given a key", "chain", pem_of_key(p256, pkcs8), "error"))
    for label, data, expect in mutations(pem(leaf)):
        cases.append(
            Case(
                f"certificate mutation: {label}",
                "chain",
                data,
                expect,
                fingerprints(leaf) if expect == "ok" else None,
            )
        )

    odd_key = ec.generate_private_key(ec.SECP256R1())
    odd: dict[str, x509.Certificate | str] = {
        "serial 1": build_cert("odd", odd_key, serial=1),
        "serial of 159 bits": build_cert("odd", odd_key, serial=(1 << 159) - 1),
        "not after 2050 (GeneralizedTime)": build_cert(
            "odd", odd_key, not_after=dt.datetime(2050, 1, 1, tzinfo=dt.UTC)
        ),
        "not after 9999": build_cert(
            "odd",
            odd_key,
            not_after=dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
        ),
        "not before 1950": build_cert(
            "odd", odd_key, not_before=dt.datetime(1950, 1, 1, tzinfo=dt.UTC)
        ),
        "valid for one second": build_cert(
            "odd", odd_key, not_after=NOW + dt.timedelta(seconds=1)
        ),
        "already expired": build_cert(
            "odd", odd_key, not_before=dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
        ),
    }
    base = build_cert("odd", odd_key)
    odd["negative serial"] = with_raw_serial(base, odd_key, b"\xff\x01")
    odd["serial zero"] = with_raw_serial(base, odd_key, b"\x00")
    odd["serial of 21 bytes"] = with_raw_serial(base, odd_key, b"\x01" * 21)
    odd["serial of 64 bytes"] = with_raw_serial(base, odd_key, b"\x7f" + b"\x00" * 63)
    odd["serial with a non-minimal encoding"] = with_raw_serial(
        base, odd_key, b"\x00\x01"
    )
    odd["empty serial"] = with_raw_serial(base, odd_key, b"")
    for label, cert in odd.items():
        text = cert if isinstance(cert, str) else pem(cert)
        truth = None if isinstance(cert, str) else fingerprints(cert)
        cases.append(Case(f"certificate {label}", "chain", text, "either", truth))
    explicit_cert = openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        "/dev/stdin",
        "-subj",
        "/CN=explicit",
        "-days",
        "1",
        stdin=explicit.encode(),
    ).decode()
    cases.append(
        Case(
            "certificate with an explicit-parameters key",
            "chain",
            explicit_cert,
            "either",
        )
    )
    big = pem(leaf) * 3000
    cases.append(Case("chain of 3000 copies", "chain", big, "error"))

    # CSRs
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name("csr.example.test"))
        .sign(p256, hashes.SHA256())
    )
    csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    csr_der = csr.public_bytes(serialization.Encoding.DER)
    cases.append(Case("csr good", "csr", csr_pem, "ok", csr_der))
    cases.append(
        Case(
            "csr old NEW CERTIFICATE REQUEST label",
            "csr",
            csr_pem.replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"),
            "ok",
            csr_der,
        )
    )
    tampered = bytearray(csr_der)
    tampered[-5] ^= 0x01
    cases.append(
        Case(
            "csr with a bad signature",
            "csr",
            _repem("CERTIFICATE REQUEST", bytes(tampered)),
            "error",
        )
    )
    cases.append(Case("csr given a certificate", "csr", pem(leaf), "error"))
    cases.append(Case("chain given a CSR", "chain", csr_pem, "error"))
    cases.append(Case("two csrs", "csr", csr_pem * 2, "error"))
    for label, data, expect in mutations(csr_pem):
        cases.append(
            Case(
                f"csr mutation: {label}",
                "csr",
                data,
                expect,
                csr_der if expect == "ok" else None,
            )
        )
    return cases


def clear(message: str) -> bool:
    return (
        bool(message.strip())
        and len(message) < 600
        and "Traceback" not in message
        and " object at 0x" not in message
    )


LOADERS: dict[Kind, Callable[[Case], Any]] = {
    "key": lambda case: load_private_key(case.data, case.passphrase),
    "chain": lambda case: import_chain(case.data),
    "csr": lambda case: load_csr(case.data),
}


def correct(case: Case, result: Any) -> bool:
    if case.truth is None:
        return True
    if case.kind == "key":
        return bool(public_key_der(result) == case.truth)
    if case.kind == "chain":
        return fingerprints(*result) == case.truth
    return bool(result.public_bytes(serialization.Encoding.DER) == case.truth)


def test_corpus_has_at_least_a_hundred_inputs() -> None:
    assert len(corpus()) >= 100


@pytest.mark.parametrize("case", corpus(), ids=lambda case: case.name)
def test_clear_error_or_correct_load(case: Case) -> None:
    try:
        result = LOADERS[case.kind](case)
    except (PkiError, ValidationError) as exc:
        assert clear(exc.message), exc.message
        assert case.expect in ("error", "either"), f"refused: {exc.message}"
        return
    assert case.expect in ("ok", "either"), f"accepted {case.name}"
    assert correct(case, result)


@pytest.mark.parametrize(
    "case", [c for c in corpus() if c.kind == "chain"], ids=lambda case: case.name
)
def test_describe_never_raises_and_agrees_with_import(case: Case) -> None:
    text = case.data if isinstance(case.data, str) else case.data.decode("latin-1")
    description = describe_certificate(text, now=NOW)
    if description["parsed"]:
        leaf = import_or_none(text)
        if leaf is not None:
            assert int(description["serial"], 16) == leaf.serial_number
            assert (
                description["not_valid_after"] == leaf.not_valid_after_utc.isoformat()
            )
    else:
        assert clear(description["parse_error"])


def import_or_none(text: str) -> x509.Certificate | None:
    try:
        return import_chain(text)[0]
    except (PkiError, ValidationError):
        return None


@pytest.mark.timeout(3)
def test_unterminated_begin_lines_are_linear() -> None:
    flood = "-----BEGIN CERTIFICATE-----\nAAAA\n" * 20_000
    with pytest.raises(PkiError):
        import_chain(flood)
