"""SCRAM-SHA-512 server side against a client written from RFC 5802."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certd.api.scram import (
    ITERATIONS,
    SALT_BYTES,
    ServerExchange,
    StandInVerifiers,
    derive_verifier,
    parse_client_first,
    tls_server_end_point,
)
from certd.errors import AuthenticationError
from tests.websocket.scram_client import ScramClient
from tests.websocket.tls import Digest, make_server_cert

SECRET = "Zx81abcdefghijklmnopqrstuvwxyz0123456789ABC"


def _exchange(
    client: ScramClient, secret: str = SECRET, server_binding: bytes | None = None
) -> tuple[ServerExchange, str]:
    first = parse_client_first(client.first())
    exchange = ServerExchange(first, derive_verifier(secret), server_binding)
    return exchange, client.final(exchange.server_first)


def test_finish_accepts_the_right_proof_and_signs_back() -> None:
    client = ScramClient("ci", 7, SECRET)
    exchange, final = _exchange(client)
    assert exchange.client_first.api_key() == ("ci", 7)
    assert client.check(exchange.finish(final))


def test_finish_refuses_a_proof_made_from_another_secret() -> None:
    exchange, final = _exchange(ScramClient("ci", 7, SECRET + "x"))
    with pytest.raises(AuthenticationError, match="proof is wrong"):
        exchange.finish(final)


def test_finish_refuses_a_foreign_nonce() -> None:
    client = ScramClient("ci", 7, SECRET)
    _, final = _exchange(client)
    other, _ = _exchange(ScramClient("ci", 7, SECRET))
    with pytest.raises(AuthenticationError, match="nonce"):
        other.finish(final)


def test_channel_binding_must_match_the_servers_certificate() -> None:
    cert, _ = make_server_cert("ec")
    binding = tls_server_end_point(cert.public_bytes(serialization.Encoding.DER))
    client = ScramClient("ci", 7, SECRET, channel_binding=binding)
    exchange, final = _exchange(client, server_binding=binding)
    assert client.check(exchange.finish(final))

    liar = ScramClient("ci", 7, SECRET, channel_binding=b"\x00" * 32)
    exchange, final = _exchange(liar, server_binding=binding)
    with pytest.raises(AuthenticationError, match="channel binding does not match"):
        exchange.finish(final)


def test_binding_without_tls_and_downgrades_are_refused() -> None:
    client = ScramClient("ci", 7, SECRET, channel_binding=b"\x01" * 32)
    first = parse_client_first(client.first())
    with pytest.raises(AuthenticationError, match="needs TLS"):
        ServerExchange(first, derive_verifier(SECRET), None)
    downgraded = parse_client_first("y,,n=ci:7,r=" + "A" * 44)
    with pytest.raises(AuthenticationError, match="downgraded"):
        ServerExchange(downgraded, derive_verifier(SECRET), b"\x01" * 32)


def test_unbound_login_over_tls_is_allowed() -> None:
    client = ScramClient("ci", 7, SECRET)
    exchange, final = _exchange(client, server_binding=b"\x02" * 32)
    assert client.check(exchange.finish(final))


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("n=ci:7,r=AAAA", "GS2 header"),
        ("n,a=admin,n=ci:7,r=" + "A" * 44, "authorization identities"),
        ("x,,n=ci:7,r=" + "A" * 44, "flag"),
        ("n,,r=" + "A" * 44 + ",n=ci:7", "'n=...,r=...'"),
        ("n,,n=ci:7,r=" + "A" * 44 + ",m=ext", "mandatory extensions"),
        ("n,,n=ci:7,r=not base64!", "not base64"),
        ("n,,n=ci:7,r=AAAA", "16 to 64 bytes"),
        ("n,,n=c=x:7,r=" + "A" * 44, "escape"),
    ],
)
def test_parse_client_first_refuses(message: str, error: str) -> None:
    with pytest.raises(AuthenticationError, match=error):
        parse_client_first(message)


def test_username_escapes_and_key_id() -> None:
    first = parse_client_first("n,,n=a=2Cb=3Dc:d:12,r=" + "A" * 44)
    assert first.username == "a,b=c:d:12"
    assert first.api_key() == ("a,b=c:d", 12)
    assert parse_client_first("n,,n=ci:" + "9" * 18 + ",r=" + "A" * 44).api_key() == (
        "ci",
        10**18 - 1,
    )
    # A superscript digit passes isdigit() but not int(); 19 digits can
    # overflow a 64-bit row id.
    for bad in ("ci", "ci:0", "ci:x", ":5", "ci:\u00b2", "ci:" + "9" * 19):
        with pytest.raises(AuthenticationError, match="API key id"):
            parse_client_first(f"n,,n={bad},r=" + "A" * 44).api_key()


@pytest.mark.parametrize(
    ("kind", "digest", "expected"),
    [
        ("rsa", hashes.SHA256(), "sha256"),
        ("ec", hashes.SHA384(), "sha384"),
        ("ec", hashes.SHA512(), "sha512"),
    ],
)
def test_tls_server_end_point_hashes_with_the_signature_hash(
    kind: str, digest: Digest, expected: str
) -> None:
    cert, _ = make_server_cert(kind, digest)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert tls_server_end_point(der) == hashlib.new(expected, der).digest()


def test_tls_server_end_point_promotes_sha1_to_sha256(tmp_path: Path) -> None:
    # cryptography no longer signs with SHA-1, openssl still does.
    pem = tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha1"),
            *("-keyout", str(tmp_path / "key.pem"), "-out", str(pem)),
            *("-subj", "/CN=127.0.0.1", "-days", "1"),
        ],
        check=True,
        capture_output=True,
    )
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    assert cert.signature_algorithm_oid._name == "sha1WithRSAEncryption"
    der = cert.public_bytes(serialization.Encoding.DER)
    assert tls_server_end_point(der) == hashlib.sha256(der).digest()


def test_tls_server_end_point_is_undefined_for_eddsa() -> None:
    cert, _ = make_server_cert("ed25519")
    with pytest.raises(AuthenticationError, match="undefined"):
        tls_server_end_point(cert.public_bytes(serialization.Encoding.DER))


def test_stand_in_verifiers_are_fixed_per_user_and_refuse_every_proof() -> None:
    stand_ins = StandInVerifiers()
    verifier = stand_ins.verifier("ghost:7")
    assert verifier == stand_ins.verifier("ghost:7")
    assert verifier.salt != stand_ins.verifier("ghost:8").salt
    assert verifier.salt != StandInVerifiers().verifier("ghost:7").salt
    assert len(verifier.salt) == SALT_BYTES
    assert verifier.iterations == ITERATIONS

    client = ScramClient("ghost", 7, SECRET)
    exchange = ServerExchange(parse_client_first(client.first()), verifier, None)
    with pytest.raises(AuthenticationError, match="SCRAM proof is wrong"):
        exchange.finish(client.final(exchange.server_first))
