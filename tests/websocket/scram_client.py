"""The client's half of SCRAM-SHA-512 as the NAS client does it, written from RFC 5802."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, hashlib.sha512)


@dataclass
class ScramClient:
    """One login: ``first()``, then ``final(server_first)``, then ``check(server_final)``."""

    name: str
    key_id: int
    secret: str
    channel_binding: bytes | None = None
    nonce: bytes = field(default_factory=lambda: os.urandom(32))

    def first(self) -> str:
        self.header = "p=tls-server-end-point,," if self.channel_binding else "n,,"
        self.bare = f"n={self.name}:{self.key_id},r={_b64(self.nonce)}"
        return self.header + self.bare

    def final(self, server_first: str) -> str:
        attrs = dict(part.split("=", 1) for part in server_first.split(","))
        combined = attrs["r"]
        assert base64.b64decode(combined)[:32] == self.nonce
        assert len(base64.b64decode(combined)) == 64
        iterations = int(attrs["i"])
        assert 50_000 <= iterations <= 5_000_000
        salted = hashlib.pbkdf2_hmac(
            "sha512", self.secret.encode(), base64.b64decode(attrs["s"]), iterations
        )
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha512(client_key).digest()
        self.server_key = _hmac(salted, b"Server Key")
        binding = self.header.encode() + (self.channel_binding or b"")
        without_proof = f"c={_b64(binding)},r={combined}"
        self.auth_message = f"{self.bare},{server_first},{without_proof}".encode()
        signature = _hmac(stored_key, self.auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return f"{without_proof},p={_b64(proof)}"

    def check(self, server_final: str) -> bool:
        expected = _b64(_hmac(self.server_key, self.auth_message))
        return server_final == f"v={expected}"
