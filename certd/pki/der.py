"""The little DER reading certd needs beyond what cryptography exposes."""

from __future__ import annotations

import base64

from certd.errors import PkiError

SEQUENCE = 0x30
INTEGER = 0x02
OCTET_STRING = 0x04
OID = 0x06

PBES2 = "1.2.840.113549.1.5.13"
PBKDF2 = "1.2.840.113549.1.5.12"
SCRYPT = "1.3.6.1.4.1.11591.4.11"


def read_tlv(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """(tag, content, offset after it) of the element at ``offset``.

    Raises:
        IndexError, ValueError: the element runs past the end of ``data``.
    """
    tag = data[offset]
    length = data[offset + 1]
    offset += 2
    if length & 0x80:
        size = length & 0x7F
        if size == 0 or size > 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[offset : offset + size], "big")
        offset += size
    if offset + length > len(data):
        raise ValueError("DER element runs past its container")
    return tag, data[offset : offset + length], offset + length


def write_tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def children(content: bytes) -> list[tuple[int, bytes]]:
    out = []
    offset = 0
    while offset < len(content):
        tag, value, offset = read_tlv(content, offset)
        out.append((tag, value))
    return out


def oid_text(value: bytes) -> str:
    first, *rest = value
    parts = [first // 40, first % 40]
    number = 0
    for byte in rest:
        number = (number << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(number)
            number = 0
    return ".".join(str(p) for p in parts)


# Decrypting a key runs its KDF with the file's own parameters; a file may ask
# for billions of rounds. OpenSSL writes 2048, current guidance about 600,000.
MAX_PBKDF2_ITERATIONS = 2_000_000
MAX_SCRYPT_WORK = 2**20 * 8  # N * r, as for OpenSSL's strongest common setting


def check_key_encryption_cost(pem_block: bytes) -> None:
    """Refuse an encrypted PKCS#8 key whose KDF would take too long to run.

    Raises:
        PkiError: the key asks for more PBKDF2 iterations or scrypt work than
            certd will spend.
    """
    body = b"".join(
        line
        for line in pem_block.splitlines()
        if line and not line.startswith(b"-----")
    )
    try:
        der = base64.b64decode(body)
        _, info, _ = read_tlv(der, 0)
        (_, algorithm), *_ = children(info)
        (_, scheme_oid), (_, params) = children(algorithm)[:2]
        if oid_text(scheme_oid) != PBES2:
            return
        (_, kdf), *_ = children(params)
        (_, kdf_oid), (_, kdf_params) = children(kdf)[:2]
        fields = children(kdf_params)
    except (ValueError, IndexError, TypeError):
        return  # not readable here; the real loader will say what is wrong
    if oid_text(kdf_oid) == PBKDF2:
        iterations = int.from_bytes(fields[1][1], "big") if len(fields) > 1 else 0
        if iterations > MAX_PBKDF2_ITERATIONS:
            raise PkiError(
                f"the encrypted key asks for {iterations:,} PBKDF2 iterations; "
                f"certd decrypts keys with at most {MAX_PBKDF2_ITERATIONS:,}: "
                "export it again with fewer (openssl pkcs8 -iter)"
            )
    elif oid_text(kdf_oid) == SCRYPT and len(fields) >= 3:
        cost = int.from_bytes(fields[1][1], "big")
        block_size = int.from_bytes(fields[2][1], "big")
        if cost * block_size > MAX_SCRYPT_WORK:
            raise PkiError(
                "the encrypted key asks for more scrypt work than certd spends "
                "on a key: export it again with smaller parameters"
            )
