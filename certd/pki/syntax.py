"""Syntax of the names that go into certificates: DNS names, e-mail, URIs, SANs.

Shared by the parameter models (to report errors at the field) and by the
builders (to produce ``GeneralName`` objects); every function raises
``ValueError`` with a message meant for the user.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

import idna

SanKind = Literal["DNS", "IP", "email", "URI"]

# Public CAs stop at 100 names per certificate (Let's Encrypt refuses an order
# or CSR with more), and certd's own CAs keep to the same bound: a longer list
# only makes a certificate that clients parse slowly and some refuse.
MAX_SAN_ENTRIES = 100

# Prefixes are matched case-insensitively; "IP Address" is how OpenSSL prints
# an iPAddress, so output of `openssl x509 -text` can be pasted back.
_PREFIXES: dict[str, SanKind] = {
    "dns": "DNS",
    "ip": "IP",
    "ip address": "IP",
    "email": "email",
    "uri": "URI",
}
_PREFIX_RE = re.compile(r"^([A-Za-z][A-Za-z0-9 ]{0,15}):(.*)$", re.DOTALL)
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_LDH_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# RFC 5321 dot-atom for the local part; quoted local parts are not accepted.
_LOCAL_PART_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$"
)


def normalize_dns_name(value: str, *, allow_wildcard: bool = True) -> str:
    """Return the A-label form of a DNS name, lower case, without a trailing dot."""
    name = value.strip()
    if name.endswith(".") and not name.endswith(".."):
        name = name[:-1]
    if not name:
        raise ValueError("empty DNS name")

    wildcard = name.startswith("*.")
    rest = name[2:] if wildcard else name
    if wildcard and not allow_wildcard:
        raise ValueError(f"{value!r}: a wildcard is not allowed here")
    if "*" in rest:
        raise ValueError(
            f"{value!r}: a wildcard must be the whole leftmost label, "
            "as in *.example.com"
        )
    if not rest:
        raise ValueError(f"{value!r}: a wildcard needs a name after '*.'")

    try:
        encoded = idna.encode(rest, uts46=True, std3_rules=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"{value!r} is not a valid DNS name: {exc}") from None
    # idna accepts some ASCII labels it does not check (e.g. all-digit TLDs are
    # fine, but a leading hyphen must still be refused); check LDH ourselves.
    for label in encoded.split("."):
        if not _LDH_LABEL_RE.match(label):
            raise ValueError(f"{value!r}: label {label!r} is not a valid DNS label")
    if encoded.rsplit(".", 1)[-1].isdigit():
        # RFC 1123 2.1: a name whose last label is numeric reads as an address.
        raise ValueError(f"{value!r} is neither a valid DNS name nor an IP address")
    if len(encoded) > 253:
        raise ValueError(f"{value!r} is longer than 253 characters")

    return f"*.{encoded}" if wildcard else encoded


def normalize_email(value: str) -> str:
    """Return an e-mail address with its domain in A-label form."""
    address = value.strip()
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        raise ValueError(f"{value!r} is not an e-mail address (local@domain)")
    if not _LOCAL_PART_RE.match(local):
        # An internationalized local part would need SmtpUTF8Mailbox (RFC 9598).
        raise ValueError(
            f"{value!r}: the part before '@' must be plain ASCII without spaces"
        )
    if len(local) > 64:
        raise ValueError(f"{value!r}: the part before '@' exceeds 64 characters")
    try:
        host = normalize_dns_name(domain, allow_wildcard=False)
    except ValueError as exc:
        raise ValueError(f"{value!r}: bad domain: {exc}") from None
    return f"{local}@{host}"


def normalize_uri(value: str) -> str:
    """Check a URI for a SAN: absolute, ASCII, no spaces (RFC 5280 4.2.1.6)."""
    uri = value.strip()
    if not uri.isascii() or any(c.isspace() or ord(c) < 0x20 for c in uri):
        raise ValueError(
            f"{value!r}: a URI must be ASCII without spaces; percent-encode the rest"
        )
    match = _SCHEME_RE.match(uri)
    if not match or len(uri) == match.end():
        raise ValueError(f"{value!r} is not an absolute URI (scheme:rest)")
    return uri


def normalize_ip(value: str) -> str:
    """Return the canonical text of an IPv4 or IPv6 address."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise ValueError(f"{value!r}: an IPv6 zone index cannot go in a certificate")
    return str(address)


def check_san_count(count: int) -> None:
    """Refuse more subject alternative names than one certificate may carry.

    Raises:
        ValueError: ``count`` exceeds ``MAX_SAN_ENTRIES``.
    """
    if count > MAX_SAN_ENTRIES:
        raise ValueError(
            f"{count} subject alternative names given; a certificate may carry "
            f"at most {MAX_SAN_ENTRIES}, as at public CAs such as Let's Encrypt"
        )


def check_host_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    """Refuse an address that names no host: 0.0.0.0, ``::`` or ``::ffff:0.0.0.0``.

    Loopback and private addresses name hosts of a local network and pass.

    Raises:
        ValueError: the address is an unspecified one.
    """
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    if address.is_unspecified or (mapped is not None and mapped.is_unspecified):
        # RFC 1122 3.2.1.3 and RFC 4291 2.5.2: the unspecified address means
        # "no address yet" and is never assigned to a host.
        what = "the unspecified address" if mapped is None else "0.0.0.0 mapped to IPv6"
        raise ValueError(
            f"{str(address)!r} is {what}, which names no host; give the "
            "host's own address (loopback and private ones are fine)"
        )


def host_ip(value: str) -> str:
    """The canonical text of an IP address that names a host (see ``normalize_ip``).

    Raises:
        ValueError: not an IP address, or an unspecified one.
    """
    text = normalize_ip(value)
    check_host_address(ipaddress.ip_address(text))
    return text


def classify_san(entry: str) -> tuple[SanKind, str]:
    """Split one SAN entry into its kind and normalized value.

    An entry is ``TYPE:value`` with TYPE one of DNS, IP, email, URI (any case),
    or a bare value whose kind follows from its shape.
    """
    text = entry.strip()
    if not text:
        raise ValueError("empty entry")

    match = _PREFIX_RE.match(text)
    if match and match.group(1).lower() in _PREFIXES:
        kind = _PREFIXES[match.group(1).lower()]
        return kind, _normalize(kind, match.group(2))

    if _looks_like_ip(text):
        return "IP", host_ip(text)
    if "://" in text:
        return "URI", normalize_uri(text)
    if match or ":" in text:
        prefix = text.split(":", 1)[0]
        raise ValueError(
            f"{entry!r}: unknown type {prefix!r}; use DNS:, IP:, email: or URI:"
        )
    if "@" in text:
        return "email", normalize_email(text)
    return "DNS", normalize_dns_name(text)


def _looks_like_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _normalize(kind: SanKind, value: str) -> str:
    if kind == "DNS":
        return normalize_dns_name(value)
    if kind == "IP":
        return host_ip(value)
    if kind == "email":
        return normalize_email(value)
    return normalize_uri(value)


def canonical_san(entry: str) -> str:
    """Return the typed form of a SAN entry, e.g. ``DNS:xn--bcher-kva.example``."""
    kind, value = classify_san(entry)
    return f"{kind}:{value}"
