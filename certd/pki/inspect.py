"""Describing certificates and CSRs as JSON-able dicts for certificate.query.

These functions never raise: stored data that no longer parses is reported
as ``parsed: False`` with the reason, so one bad row cannot break a query.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certd.pki.der import read_tlv, write_tlv
from certd.pki.extensions import colon_hex, extensions_dict, serial_hex
from certd.pki.keys import key_description
from certd.pki.names import name_fields, san_strings
from certd.pki.pem import missing_pem_reason, pem_blocks

FIELDS: tuple[str, ...] = (
    "parsed",
    "parse_error",
    "country",
    "state",
    "city",
    "organization",
    "organizational_unit",
    "common",
    "email",
    "DN",
    "subject_name_hash",
    "issuer_dn",
    "san",
    "serial",
    "not_valid_before",
    "not_valid_after",
    "lifetime",
    "days_left",
    "expired",
    "self_signed",
    "key_type",
    "key_length",
    "ec_curve",
    "digest_algorithm",
    "fingerprint_sha256",
    "fingerprint_sha1",
    "extensions",
    "chain_list",
    "chain",
    "is_ca",
)


def unparsed(reason: str) -> dict[str, Any]:
    """The description of something that could not be parsed."""
    result: dict[str, Any] = dict.fromkeys(FIELDS)
    result["parsed"] = False
    result["parse_error"] = reason
    return result


def describe_certificate(
    pem_chain: str, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Describe a PEM certificate, or a chain with the leaf first."""
    try:
        blocks = pem_blocks(pem_chain, ("CERTIFICATE",))
        if not blocks:
            return unparsed(missing_pem_reason(pem_chain, "certificate"))
        certs = []
        for index, block in enumerate(blocks):
            try:
                certs.append(x509.load_pem_x509_certificate(block))
            except ValueError as exc:
                return unparsed(
                    f"certificate {index} of the chain cannot be read: {exc}"
                )
        return _describe_loaded_certificate(certs, now or dt.datetime.now(dt.UTC))
    except Exception as exc:  # a query must survive any stored blob
        return unparsed(f"the certificate cannot be described: {exc}")


def describe_csr(pem: str) -> dict[str, Any]:
    """Describe a PEM CSR; certificate-only fields are None."""
    try:
        blocks = pem_blocks(pem, ("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"))
        if not blocks:
            return unparsed(missing_pem_reason(pem, "certificate signing request"))
        csr = x509.load_pem_x509_csr(blocks[0])
        result = unparsed("")
        result.update(_describe_subject(csr.subject, csr.extensions))
        result.update(key_description(csr.public_key()))  # type: ignore[arg-type]
        result["digest_algorithm"] = _hash_name(csr)
        result["parsed"] = True
        result["parse_error"] = None
        return result
    except Exception as exc:  # a query must survive any stored blob
        return unparsed(f"the CSR cannot be read: {exc}")


def _describe_loaded_certificate(
    certs: list[x509.Certificate], now: dt.datetime
) -> dict[str, Any]:
    leaf = certs[0]
    before = leaf.not_valid_before_utc
    after = leaf.not_valid_after_utc

    result: dict[str, Any] = {"parsed": True, "parse_error": None}
    result.update(_describe_subject(leaf.subject, leaf.extensions))
    result.update(key_description(leaf.public_key()))  # type: ignore[arg-type]
    result.update(
        subject_name_hash=subject_name_hash(leaf.subject),
        issuer_dn=leaf.issuer.rfc4514_string(),
        serial=serial_hex(leaf.serial_number),
        not_valid_before=before.isoformat(),
        not_valid_after=after.isoformat(),
        lifetime=(after - before).days,
        days_left=(after - now).days,
        expired=now > after,
        self_signed=leaf.issuer == leaf.subject,
        digest_algorithm=_hash_name(leaf),
        fingerprint_sha256=colon_hex(leaf.fingerprint(hashes.SHA256())),
        fingerprint_sha1=colon_hex(leaf.fingerprint(hashes.SHA1())),
        chain_list=[
            c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs
        ],
        chain=len(certs) > 1,
    )
    return {field: result.get(field) for field in FIELDS}


def _describe_subject(name: x509.Name, extensions: x509.Extensions) -> dict[str, Any]:
    result: dict[str, Any] = dict(name_fields(name))
    result["DN"] = name.rfc4514_string()
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        result["san"] = san_strings(san)
    except x509.ExtensionNotFound:
        result["san"] = []
    try:
        bc = extensions.get_extension_for_class(x509.BasicConstraints).value
        result["is_ca"] = bc.ca
    except x509.ExtensionNotFound:
        result["is_ca"] = False
    result["extensions"] = extensions_dict(extensions)
    return result


def _hash_name(obj: x509.Certificate | x509.CertificateSigningRequest) -> str | None:
    try:
        algorithm = obj.signature_hash_algorithm
    except Exception:  # an unknown algorithm just has no name
        return None
    return algorithm.name.upper().replace("-", "") if algorithm else None


# OpenSSL's X509_NAME_hash: SHA-1 over a canonical form of the name, in which
# every string value is converted to UTF8String, trimmed, inner whitespace
# runs collapsed to one space and ASCII upper case lowered; the RDN SETs are
# then concatenated without the outer SEQUENCE (crypto/x509/x_name.c).
_CANON_STRING_TAGS = {0x0C, 0x13, 0x14, 0x16, 0x1A, 0x1C, 0x1E}
_ASCII_SPACE = b" \t\n\v\f\r"


def subject_name_hash(name: x509.Name) -> str:
    """The OpenSSL subject hash of ``name`` as printed by ``openssl x509 -hash``."""
    der = name.public_bytes()
    _, content, _ = read_tlv(der, 0)
    canonical = bytearray()
    offset = 0
    while offset < len(content):
        _, rdn, offset = read_tlv(content, offset)
        entries = []
        inner = 0
        while inner < len(rdn):
            _, atv, inner = read_tlv(rdn, inner)
            entries.append(_canonical_entry(atv))
        canonical += write_tlv(0x31, b"".join(sorted(entries)))
    digest = hashlib.sha1(bytes(canonical)).digest()
    return f"{int.from_bytes(digest[:4], 'little'):08x}"


def _canonical_entry(atv: bytes) -> bytes:
    oid_end = read_tlv(atv, 0)[2]
    oid = atv[:oid_end]
    tag, value, _ = read_tlv(atv, oid_end)
    if tag not in _CANON_STRING_TAGS:
        return write_tlv(0x30, atv)
    return write_tlv(0x30, oid + write_tlv(0x0C, _canonical_text(_to_utf8(tag, value))))


def _to_utf8(tag: int, value: bytes) -> bytes:
    if tag == 0x0C:
        return value
    if tag == 0x1E:
        return value.decode("utf-16-be").encode()
    if tag == 0x1C:
        return value.decode("utf-32-be").encode()
    # One-byte string types: each byte is taken as a Latin-1 code point.
    return value.decode("latin-1").encode()


def _canonical_text(text: bytes) -> bytes:
    text = text.strip(_ASCII_SPACE)
    out = bytearray()
    previous_space = False
    for byte in text:
        if byte in _ASCII_SPACE:
            if not previous_space:
                out.append(0x20)
            previous_space = True
            continue
        previous_space = False
        out.append(byte + 0x20 if 0x41 <= byte <= 0x5A else byte)
    return bytes(out)
