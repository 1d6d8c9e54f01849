"""Subject names and subject alternative names."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

from certd.errors import ValidationCollector, ValidationError
from certd.pki.models import Subject
from certd.pki.syntax import (
    check_host_address,
    check_san_count,
    classify_san,
    normalize_dns_name,
    normalize_email,
    normalize_ip,
    normalize_uri,
)

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
        ValidationError: one error per bad or repeated entry, at ``san.<index>``,
            or one at ``san`` for more than ``MAX_SAN_ENTRIES`` entries.
    """
    try:
        check_san_count(len(entries))
    except ValueError as exc:
        raise ValidationError.single("san", str(exc)) from None
    errors = ValidationCollector()
    names: list[x509.GeneralName] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        try:
            kind, value = classify_san(entry)
        except ValueError as exc:
            errors.add(f"san.{index}", str(exc))
            continue
        if kind == "URI":
            try:
                check_uri_host(value)
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


# An entry longer than this is refused, as in a create request's SAN list.
MAX_NAME_LENGTH = 1024
# How much of an offending name a message repeats.
_SHOWN = 60
# RFC 5280 4.2.1.6 scheme-specific rules are applied; a file: URI names a
# local path, never an identity a relying party could check.
_REFUSED_URI_SCHEMES = frozenset({"file"})


def shown(value: object) -> str:
    """``value`` quoted for a message, cut to a readable length."""
    text = repr(str(value))
    if len(text) <= _SHOWN:
        return text
    return f"{text[: _SHOWN - 4]}...' ({len(str(value))} characters)"


def check_uri_host(uri: str) -> None:
    """Refuse a URI a certificate may not carry, beyond its syntax.

    RFC 5280 4.2.1.6: a URI with an authority names a host by its FQDN or IP
    address; an empty host (``file:///etc/passwd``) or a bad one is refused,
    and so is the ``file`` scheme.

    Raises:
        ValueError: with a message meant for the user.
    """
    parts = urlsplit(uri)
    if parts.scheme.lower() in _REFUSED_URI_SCHEMES:
        raise ValueError(
            f"{shown(uri)}: a {parts.scheme}: URI names a local resource, not "
            "an identity; use https:, urn: or another scheme"
        )
    if not uri[len(parts.scheme) + 1 :].startswith("//"):
        return
    host = parts.hostname
    try:
        parts.port  # noqa: B018 - reading it checks it
    except ValueError:
        raise ValueError(f"{shown(uri)}: the port is not a number") from None
    if not host:
        raise ValueError(
            f"{shown(uri)}: a URI with an authority must name a host (RFC 5280 4.2.1.6)"
        )
    try:
        address = ipaddress.ip_address(normalize_ip(host))
    except ValueError:
        address = None
    if address is not None:
        try:
            check_host_address(address)
        except ValueError as exc:
            raise ValueError(f"{shown(uri)}: {exc}") from None
        return
    try:
        normalize_dns_name(host, allow_wildcard=False)
    except ValueError:
        raise ValueError(
            f"{shown(uri)}: the host {shown(host)} is neither a DNS name nor an "
            "IP address (RFC 5280 4.2.1.6)"
        ) from None


def check_general_name(name: x509.GeneralName) -> x509.GeneralName:
    """One requested general name checked by the rules of a create request.

    Returns the name in the form certd issues: a DNS name in lower-case
    A-labels without a trailing dot, an e-mail address with its domain so.
    Only DNS names, IP addresses (4 or 16 bytes), e-mail addresses and URIs
    are accepted, as ``parse_san`` accepts them.

    Raises:
        ValueError: with a message meant for the user, naming the entry cut
            to a readable length.
    """
    if isinstance(name, x509.IPAddress):
        if not isinstance(name.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            # 8 or 32 bytes decode as a network: a name constraint's form,
            # never a subject's (RFC 5280 4.2.1.6 allows 4 or 16 octets).
            raise ValueError(
                f"IP:{name.value} is a network; an IP address entry holds one "
                "address of 4 or 16 bytes"
            )
        check_host_address(name.value)
        return name
    if isinstance(name, x509.DirectoryName | x509.OtherName | x509.RegisteredID):
        kind = type(name).__name__
        raise ValueError(
            f"a {kind} entry is not accepted; certd issues DNS, IP, email and "
            "URI names only"
        )
    if not isinstance(
        name, x509.DNSName | x509.RFC822Name | x509.UniformResourceIdentifier
    ):
        raise ValueError(f"{type(name).__name__} entries are not accepted")
    value = name.value
    kind = {"DNSName": "DNS", "RFC822Name": "email"}.get(type(name).__name__, "URI")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(
            f"{kind}:{shown(value)} is longer than {MAX_NAME_LENGTH} characters"
        )
    if value != value.strip() or not value:
        raise ValueError(f"{kind}:{shown(value)} is empty or has surrounding spaces")
    try:
        if isinstance(name, x509.DNSName):
            return x509.DNSName(normalize_dns_name(value))
        if isinstance(name, x509.RFC822Name):
            return x509.RFC822Name(normalize_email(value))
        uri = normalize_uri(value)
        check_uri_host(uri)
        return x509.UniformResourceIdentifier(uri)
    except ValueError as exc:
        # The syntax checks quote the whole value, which may be kilobytes.
        message = str(exc).replace(repr(value), shown(value))
        raise ValueError(f"{kind}: {message[:300]}") from None


def check_requested_names(
    names: Sequence[x509.GeneralName], field: str = "san"
) -> list[x509.GeneralName]:
    """Requested names (a CSR's) checked as ``check_general_name`` does.

    Raises:
        ValidationError: one error per bad or repeated entry, each at
            ``field`` and naming the entry's position, or one for more than
            ``MAX_SAN_ENTRIES`` entries.
    """
    try:
        check_san_count(len(names))
    except ValueError as exc:
        raise ValidationError.single(field, f"subjectAltName: {exc}") from None
    errors = ValidationCollector()
    checked: list[x509.GeneralName] = []
    seen: dict[x509.GeneralName, int] = {}
    for index, name in enumerate(names):
        try:
            good = check_general_name(name)
        except ValueError as exc:
            errors.add(field, f"subjectAltName entry {index}: {exc}")
            continue
        if good in seen:
            errors.add(
                field,
                f"subjectAltName entry {index}: {shown(general_name_string(good))} "
                f"repeats entry {seen[good]}",
            )
            continue
        seen[good] = index
        checked.append(good)
    errors.check()
    return checked
