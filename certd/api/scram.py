"""SCRAM-SHA-512 on the server side, as the NAS middleware's client speaks it.

The exchange is RFC 5802 with SHA-512 (named as in RFC 7677) and optional
RFC 5929 ``tls-server-end-point`` channel binding. The client departs from the
RFC in two ways, and certd follows it: the username is ``<name>:<key id>``, and
nonces are base64 of raw random bytes, the server's being the client's bytes
followed by its own 32.

Nothing here does I/O: callers look the verifier up and keep the exchange.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from certd.errors import AuthenticationError

# The client refuses iteration counts outside this range.
MIN_ITERATIONS = 50_000
MAX_ITERATIONS = 5_000_000
# The key secrets carry 256 bits of entropy, so more rounds would buy nothing
# against guessing; the client's minimum keeps each login cheap on both sides.
ITERATIONS = MIN_ITERATIONS
SALT_BYTES = 16
NONCE_BYTES = 32
CHANNEL_BINDING = "tls-server-end-point"
# A key's row id in a SCRAM username: a 64-bit integer, so 18 ASCII digits fit.
_ROW_ID = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class ScramVerifier:
    """What the server keeps of a secret: RFC 5802's salt, i, StoredKey, ServerKey."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, hashlib.sha512)


def derive_verifier(
    secret: str, salt: bytes | None = None, iterations: int = ITERATIONS
) -> ScramVerifier:
    """Derive a verifier from a secret; costs one PBKDF2 run, so call it off the loop."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    salted = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    return ScramVerifier(
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.sha512(client_key).digest(),
        server_key=_hmac(salted, b"Server Key"),
    )


class StandInVerifiers:
    """Verifiers for users that do not exist, so a server-first reveals nothing.

    RFC 5802's security considerations advise answering an unknown user as if
    it existed and failing the authentication at the end: otherwise the reply
    to a client-first-message tells which ``<name>:<key id>`` pairs are real.
    The salt is an HMAC of the username under a secret of this object, so the
    same name gets the same salt every time, as a real key does.
    """

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)

    def verifier(self, username: str) -> ScramVerifier:
        """A verifier no proof matches, with a salt fixed for ``username``."""
        seed = _hmac(self._secret, username.encode())
        return ScramVerifier(
            salt=seed[:SALT_BYTES],
            iterations=ITERATIONS,
            # Keys no secret derives to, so the proof check fails as for a
            # wrong secret.
            stored_key=_hmac(seed, b"Stored Key"),
            server_key=_hmac(seed, b"Server Key"),
        )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str, what: str) -> bytes:
    """Strict base64 decoding.

    Raises:
        AuthenticationError: ``text`` is not base64.
    """
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise AuthenticationError(f"SCRAM {what} is not base64") from None


def tls_server_end_point(cert_der: bytes) -> bytes:
    """RFC 5929 channel binding data for a server certificate.

    The certificate is hashed with its signature's hash, MD5 and SHA-1 being
    replaced by SHA-256 (RFC 5929, section 4.1).

    Raises:
        AuthenticationError: the signature has no single hash (EdDSA).
    """
    cert = x509.load_der_x509_certificate(cert_der)
    algorithm = cert.signature_hash_algorithm
    if algorithm is None:
        raise AuthenticationError(
            "tls-server-end-point is undefined for this certificate's signature"
        )
    if isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert_der)
    return digest.finalize()


def _attributes(text: str, what: str) -> list[tuple[str, str]]:
    pairs = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if len(key) != 1 or not sep:
            raise AuthenticationError(f"SCRAM {what} has a malformed attribute")
        pairs.append((key, value))
    return pairs


def _saslname(text: str) -> str:
    # RFC 5802, section 5.1: ',' and '=' travel as '=2C' and '=3D'.
    if "=" in text.replace("=2C", "").replace("=3D", ""):
        raise AuthenticationError("SCRAM username has a bad '=' escape")
    return text.replace("=2C", ",").replace("=3D", "=")


@dataclass(frozen=True)
class ClientFirst:
    """A parsed client-first-message."""

    gs2_header: str
    cbind_flag: str
    cbind_name: str | None
    username: str
    nonce: bytes
    bare: str

    def api_key(self) -> tuple[str, int]:
        """(name, key id) from the ``<name>:<key id>`` username.

        Raises:
            AuthenticationError: the username names no API key.
        """
        name, sep, key_id = self.username.rpartition(":")
        # isdigit() would take '²', which int() refuses.
        if not sep or not name or not _ROW_ID.fullmatch(key_id) or int(key_id) == 0:
            raise AuthenticationError("SCRAM username is not '<name>:<API key id>'")
        return name, int(key_id)


def parse_client_first(message: str) -> ClientFirst:
    """Parse ``gs2-header client-first-message-bare`` (RFC 5802, section 7).

    Raises:
        AuthenticationError: the message is malformed or asks for what certd
            does not do (an authzid, a mandatory extension).
    """
    flag, sep, rest = message.partition(",")
    authzid, sep2, bare = rest.partition(",")
    if not sep or not sep2:
        raise AuthenticationError("SCRAM client-first-message lacks a GS2 header")
    if authzid:
        raise AuthenticationError("SCRAM authorization identities are not supported")
    cbind_name = None
    if flag.startswith("p="):
        cbind_name = flag[2:]
        flag = "p"
    elif flag not in ("n", "y"):
        raise AuthenticationError("SCRAM GS2 channel binding flag is not n, y or p")
    attributes = _attributes(bare, "client-first-message")
    if len(attributes) < 2 or attributes[0][0] != "n" or attributes[1][0] != "r":
        raise AuthenticationError("SCRAM client-first-message is not 'n=...,r=...'")
    if any(key == "m" for key, _ in attributes[2:]):
        raise AuthenticationError("SCRAM mandatory extensions are not supported")
    nonce = unb64(attributes[1][1], "client nonce")
    if not 16 <= len(nonce) <= 64:
        raise AuthenticationError("SCRAM client nonce must be 16 to 64 bytes")
    return ClientFirst(
        gs2_header=message[: len(message) - len(bare)],
        cbind_flag=flag,
        cbind_name=cbind_name,
        username=_saslname(attributes[0][1]),
        nonce=nonce,
        bare=bare,
    )


class ServerExchange:
    """One exchange after the client-first-message: server-first out, then the proof."""

    def __init__(
        self,
        client_first: ClientFirst,
        verifier: ScramVerifier,
        channel_binding: bytes | None,
    ) -> None:
        """``channel_binding`` is this connection's tls-server-end-point data, or None.

        Raises:
            AuthenticationError: the client's channel binding choice cannot be met.
        """
        if client_first.cbind_flag == "p":
            if client_first.cbind_name != CHANNEL_BINDING:
                raise AuthenticationError(
                    f"SCRAM channel binding {client_first.cbind_name!r} is not "
                    f"supported; only {CHANNEL_BINDING}"
                )
            if channel_binding is None:
                raise AuthenticationError(
                    "SCRAM channel binding needs TLS, and this connection has none"
                )
        elif client_first.cbind_flag == "y" and channel_binding is not None:
            # RFC 5802, section 6: the client could bind but believes the server
            # cannot; over TLS that means someone stripped the binding.
            raise AuthenticationError("SCRAM channel binding was downgraded")
        self.client_first = client_first
        self.verifier = verifier
        self.channel_binding = channel_binding
        self.nonce = b64(client_first.nonce + secrets.token_bytes(NONCE_BYTES))
        self.server_first = (
            f"r={self.nonce},s={b64(verifier.salt)},i={verifier.iterations}"
        )

    def finish(self, client_final: str) -> str:
        """Check the client-final-message; return the server-final-message.

        Raises:
            AuthenticationError: wrong nonce, channel binding or proof.
        """
        without_proof, sep, proof_b64 = client_final.rpartition(",p=")
        if not sep:
            raise AuthenticationError("SCRAM client-final-message has no proof")
        attributes = dict(_attributes(without_proof, "client-final-message"))
        if attributes.get("r") != self.nonce:
            raise AuthenticationError("SCRAM nonce does not match this exchange")
        expected = self.client_first.gs2_header.encode()
        if self.client_first.cbind_flag == "p" and self.channel_binding is not None:
            expected += self.channel_binding
        if not hmac.compare_digest(unb64(attributes.get("c", ""), "c="), expected):
            raise AuthenticationError("SCRAM channel binding does not match")
        proof = unb64(proof_b64, "proof")
        auth_message = ",".join(
            (self.client_first.bare, self.server_first, without_proof)
        ).encode()
        signature = _hmac(self.verifier.stored_key, auth_message)
        if len(proof) != len(signature):
            raise AuthenticationError("SCRAM proof has the wrong length")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(
            hashlib.sha512(client_key).digest(), self.verifier.stored_key
        ):
            raise AuthenticationError("SCRAM proof is wrong")
        return f"v={b64(_hmac(self.verifier.server_key, auth_message))}"
