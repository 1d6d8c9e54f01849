"""What a CA's own certificate allows below it: name constraints, path length, time.

RFC 5280 lets a CA limit the names certified below it (4.2.1.10) and the
number of CAs that may follow it (4.2.1.9); a relying party refuses a chain
that breaks either, so certd refuses to sign or import one.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import string
from collections.abc import Sequence
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

from certd.errors import PkiError, ValidationCollector
from certd.pki.names import common_name_san, general_name_string, shown

_CONSTRAINED = (
    x509.DNSName,
    x509.IPAddress,
    x509.RFC822Name,
    x509.UniformResourceIdentifier,
    x509.DirectoryName,
)


def label(cert: x509.Certificate) -> str:
    """How a message names a certificate: its subject."""
    return repr(cert.subject.rfc4514_string() or "empty subject")


def check_issuers_valid(issuers: Sequence[x509.Certificate], now: dt.datetime) -> None:
    """Refuse to sign now under a CA whose validity has not begun.

    A certificate starting before its issuer would be refused by relying
    parties that check the whole chain at one time, and the CA is not
    trusted yet at all.

    Raises:
        PkiError: naming the first such CA and when it becomes valid.
    """
    for cert in issuers:
        start = cert.not_valid_before_utc
        if start > now:
            raise PkiError(
                f"certificate authority {label(cert)} is not valid before "
                f"{start.isoformat()}; it cannot sign until then"
            )


def check_path_lengths(chain: Sequence[x509.Certificate]) -> None:
    """Refuse a CA chain (the new CA first, its issuers above) RFC 5280 forbids.

    Every certificate above the first must be a CA allowed to sign
    certificates, and each pathLenConstraint must leave room for the
    non-self-issued CAs below it (4.2.1.9, 6.1.4 (l) and (m)).

    Raises:
        PkiError: naming the issuer at fault.
    """
    below = 0
    for index, cert in enumerate(chain):
        if index > 0:
            bc = _basic_constraints(cert)
            if bc is None or not bc.ca:
                raise PkiError(
                    f"{label(cert)} issued {label(chain[index - 1])} but is not "
                    "a CA (BasicConstraints ca is not true)"
                )
            ku = _key_usage(cert)
            if ku is not None and not ku.key_cert_sign:
                raise PkiError(
                    f"{label(cert)} issued {label(chain[index - 1])} but its "
                    "KeyUsage does not allow keyCertSign"
                )
            if bc.path_length is not None and below > bc.path_length:
                raise PkiError(
                    f"{label(cert)} has path length {bc.path_length}: at most "
                    f"{bc.path_length} CA certificate(s) may follow it, but "
                    f"{below} would (RFC 5280 4.2.1.9)"
                )
        if cert.issuer != cert.subject:
            # A self-issued CA certificate (a key rollover) is not counted.
            below += 1


def check_name_constraints(
    subject: x509.Name,
    san: Sequence[x509.GeneralName],
    issuers: Sequence[x509.Certificate],
) -> None:
    """Refuse names that a CA above forbids by its NameConstraints.

    ``issuers`` are the signing CA and those above it. Checked are the SAN
    entries, the subject itself against directoryName constraints, a common
    name that is an IP address or a host name with a dot (clients that still
    read it would otherwise trust a name the CA may not certify), and the subject's
    emailAddress against rfc822Name constraints (RFC 5280 4.2.1.10).

    Raises:
        ValidationError: at ``san`` for a SAN entry, ``common`` for the
            subject or its common name, ``email`` for its emailAddress.
    """
    checked: list[tuple[str, x509.GeneralName]] = [("san", name) for name in san]
    checked += [
        ("common", name)
        for name in common_name_san(subject)
        # As OpenSSL, a common name without a dot is not read as a host name.
        if not isinstance(name, x509.DNSName) or "." in name.value
    ]
    for attribute in subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        if isinstance(attribute.value, str):
            checked.append(("email", x509.RFC822Name(attribute.value)))
    if len(subject) > 0:
        checked.append(("common", x509.DirectoryName(subject)))

    errors = ValidationCollector()
    for issuer in issuers:
        try:
            nc = issuer.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            continue
        permitted = list(nc.permitted_subtrees or [])
        excluded = list(nc.excluded_subtrees or [])
        for field, name in checked:
            problem = _constraint_problem(name, permitted, excluded)
            if problem is not None:
                errors.add(
                    field,
                    f"{shown(general_name_string(name))} {problem} of certificate "
                    f"authority {label(issuer)} (RFC 5280 4.2.1.10)",
                )
    errors.check()


def _constraint_problem(
    name: x509.GeneralName,
    permitted: list[x509.GeneralName],
    excluded: list[x509.GeneralName],
) -> str | None:
    if not isinstance(name, _CONSTRAINED):
        return None
    for base in excluded:
        if type(base) is type(name) and _matches(name, base, excluding=True):
            return f"falls within the excluded subtree {general_name_string(base)}"
    same_kind = [base for base in permitted if type(base) is type(name)]
    if same_kind and not any(_matches(name, base) for base in same_kind):
        allowed = ", ".join(general_name_string(base) for base in same_kind[:5])
        return f"is outside the permitted subtrees ({allowed})"
    return None


def _matches(
    name: x509.GeneralName, base: x509.GeneralName, *, excluding: bool = False
) -> bool:
    if isinstance(name, x509.DNSName):
        return _dns_matches(name.value, str(base.value), excluding=excluding)
    if isinstance(name, x509.IPAddress):
        network = base.value
        address = name.value
        return (
            isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network)
            and isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
            and network.version == address.version
            and address in network
        )
    if isinstance(name, x509.RFC822Name):
        return _email_matches(name.value, str(base.value))
    if isinstance(name, x509.UniformResourceIdentifier):
        host = urlsplit(name.value).hostname
        # A URI without a host cannot be shown to be within a subtree.
        return host is not None and _host_matches(host, str(base.value))
    if isinstance(name, x509.DirectoryName):
        # RFC 5280 7.1: RDN by RDN from the top, the subtree's RDNs a prefix.
        # Verifiers differ on characters beyond ASCII (OpenSSL lowers ASCII
        # letters and collapses ASCII white space only), so a name counts as
        # permitted by the narrower reading and as excluded by the wider one:
        # what certd signs passes either.
        rdns = [_comparable_rdn(rdn, wide=excluding) for rdn in name.value.rdns]
        prefix = [_comparable_rdn(rdn, wide=excluding) for rdn in base.value.rdns]
        return rdns[: len(prefix)] == prefix
    return False


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
# OpenSSL 3's canonical name encoding (x509_name_canon, asn1_string_canon)
# collapses only what ossl_isspace calls space: these six ASCII characters.
# NBSP, U+3000 and other Unicode spaces (and the ASCII separators 0x1C-0x1F,
# which str.split takes as space) stay significant there.
_ASCII_SPACE = str.maketrans(dict.fromkeys("\t\n\r\f\v", " "))


def _lower_ascii(value: str) -> str:
    return value.translate(_ASCII_LOWER)


def _comparable_rdn(
    rdn: x509.RelativeDistinguishedName, *, wide: bool
) -> frozenset[tuple[str, str | bytes]]:
    # A multi-valued RDN is a set: its attributes match in any order.
    return frozenset(
        (attribute.oid.dotted_string, _prepared(attribute.value, wide=wide))
        for attribute in rdn
    )


def _prepared(value: str | bytes, *, wide: bool) -> str | bytes:
    """An attribute value as caseIgnoreMatch compares it (RFC 5280 7.1).

    Full RFC 4518 preparation is approximated: leading and trailing white
    space is stripped and each inner run collapsed to one space. The ``wide``
    reading case folds fully and takes all Unicode white space; the narrow
    one lowers ASCII letters and takes ASCII white space only, as OpenSSL
    does. NFKC normalisation and mapping of other characters are left out. A
    value that is no string (a BIT STRING is bytes) compares exactly, as do
    attribute types.
    """
    if isinstance(value, bytes):
        return value
    if wide:
        return " ".join(value.casefold().split())
    spaced = _lower_ascii(value).translate(_ASCII_SPACE)
    return " ".join(word for word in spaced.split(" ") if word)


def _dns_matches(name: str, base: str, *, excluding: bool) -> bool:
    name = name.lower().rstrip(".")
    base = base.lower().rstrip(".")
    if not base:
        return True
    if base.startswith("."):
        within = name.endswith(base)
    else:
        within = name == base or name.endswith("." + base)
    if within or not excluding or not name.startswith("*."):
        return within
    # A wildcard also covers every name one label below it, so *.example.com
    # reaches into an excluded bad.example.com.
    parent = name[2:]
    return base.partition(".")[2] == parent


def _email_matches(address: str, base: str) -> bool:
    local, _, host = address.rpartition("@")
    host = host.lower()
    if "@" in base:
        base_local, _, base_host = base.rpartition("@")
        return local == base_local and host == base_host.lower()
    return _host_matches(host, base)


def _host_matches(host: str, base: str) -> bool:
    host = host.lower().rstrip(".")
    base = base.lower().rstrip(".")
    if not base:
        return True
    if base.startswith("."):
        return host.endswith(base)
    return host == base


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
