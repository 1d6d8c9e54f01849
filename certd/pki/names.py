"""Subject names and subject alternative names."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from cryptography import x509
from cryptography.x509.oid import NameOID

from certd.errors import ValidationCollector
from certd.pki.models import Subject
from certd.pki.syntax import classify_san, normalize_dns_name, normalize_ip

# Conventional order, most general first, as OpenSSL and browsers show it.
SUBJECT_ATTRIBUTES: tuple[tuple[str, x509.ObjectIdentifier], ...] = (
    ("country", NameOID.COUNTRY_NAME),
    ("state", NameOID.STATE_OR_PROVINCE_NAME),
    ("city", NameOID.LOCALITY_NAME),
    ("organization", NameOID.ORGANIZATION_NAME),
    ("organizational_unit", NameOID.ORGANIZATIONAL_UNIT_NAME),
    ("common", NameOID.COMMON_NAME),
    ("email", NameOID.EMAIL_ADDRESS),
)


def build_name(subject: Subject) -> x509.Name:
    """The X.501 name of ``subject``; attributes left empty are omitted."""
    attributes = [
        x509.NameAttribute(oid, value)
        for field, oid in SUBJECT_ATTRIBUTES
        if (value := getattr(subject, field))
    ]
    return x509.Name(attributes)


def name_fields(name: x509.Name) -> dict[str, str | None]:
    """The first value of each subject attribute certd knows, keyed by field."""
    fields: dict[str, str | None] = {}
    for field, oid in SUBJECT_ATTRIBUTES:
        values = name.get_attributes_for_oid(oid)
        value = values[0].value if values else None
        fields[field] = value if isinstance(value, str) else None
    return fields


def parse_san(entries: list[str]) -> list[x509.GeneralName]:
    """Turn SAN entries (``DNS:``, ``IP:``, ``email:``, ``URI:`` or bare) into names.

    Raises:
        ValidationError: one error per bad or repeated entry, at ``san.<index>``.
    """
    errors = ValidationCollector()
    names: list[x509.GeneralName] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        try:
            kind, value = classify_san(entry)
        except ValueError as exc:
            errors.add(f"san.{index}", str(exc))
            continue
        typed = f"{kind}:{value}"
        if typed in seen:
            errors.add(f"san.{index}", f"{typed} repeats san.{seen[typed]}")
            continue
        seen[typed] = index
        names.append(_general_name(kind, value))
    errors.check()
    return names


def common_name_san(subject: x509.Name) -> list[x509.GeneralName]:
    """The subject's common names that are a host name or an IP address, as SANs.

    A common name such as "My Server" names no host and gives nothing.
    """
    names: list[x509.GeneralName] = []
    for attribute in subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attribute.value
        if not isinstance(value, str):
            continue
        name = _host_name(value)
        if name is not None and name not in names:
            names.append(name)
    return names


def _host_name(value: str) -> x509.GeneralName | None:
    # The CN is read literally: a "DNS:" or "IP:" prefix is not a type here.
    try:
        return _general_name("IP", normalize_ip(value))
    except ValueError:
        pass
    try:
        return _general_name("DNS", normalize_dns_name(value))
    except ValueError:
        return None


def _general_name(kind: str, value: str) -> x509.GeneralName:
    if kind == "DNS":
        return x509.DNSName(value)
    if kind == "IP":
        return x509.IPAddress(ipaddress.ip_address(value))
    if kind == "email":
        return x509.RFC822Name(value)
    return x509.UniformResourceIdentifier(value)


def general_name_string(name: x509.GeneralName) -> str:
    """One general name in typed form, e.g. ``DNS:a.example`` or ``IP:10.0.0.1``."""
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    if isinstance(name, x509.DirectoryName):
        return f"DirName:{name.value.rfc4514_string()}"
    if isinstance(name, x509.RegisteredID):
        return f"RID:{name.value.dotted_string}"
    if isinstance(name, x509.OtherName):
        return f"otherName:{name.type_id.dotted_string};{name.value.hex().upper()}"
    return f"unknown:{name!r}"


def san_strings(names: Iterable[x509.GeneralName]) -> list[str]:
    """General names in typed form, in their order."""
    return [general_name_string(name) for name in names]
