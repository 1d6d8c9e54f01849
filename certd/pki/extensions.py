"""Building the chosen extensions and decoding any extension for display."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ObjectIdentifier,
)

from certd.pki.models import EXTENDED_KEY_USAGE_OIDS, KEY_USAGE_FLAGS, CertExtensions
from certd.pki.names import general_name_string, san_strings

_EKU_NAMES = {oid: name for name, oid in EXTENDED_KEY_USAGE_OIDS.items()}
_ACCESS_METHODS = {
    AuthorityInformationAccessOID.OCSP.dotted_string: "OCSP",
    AuthorityInformationAccessOID.CA_ISSUERS.dotted_string: "CA_ISSUERS",
}

Extension = tuple[x509.ExtensionType, bool]


def build_extensions(options: CertExtensions) -> list[Extension]:
    """BasicConstraints, KeyUsage and ExtendedKeyUsage as enabled in ``options``.

    AuthorityKeyIdentifier needs the issuer and is added by the signer.
    """
    result: list[Extension] = []
    bc = options.BasicConstraints
    if bc.enabled:
        path_length = bc.path_length if bc.ca else None
        result.append(
            (
                x509.BasicConstraints(ca=bc.ca, path_length=path_length),
                bc.extension_critical,
            )
        )

    ku = options.KeyUsage
    if ku.enabled:
        flags = {flag: getattr(ku, flag) for flag in KEY_USAGE_FLAGS}
        result.append((x509.KeyUsage(**flags), ku.extension_critical))

    eku = options.ExtendedKeyUsage
    if eku.enabled and eku.usages:
        oids = [ObjectIdentifier(EXTENDED_KEY_USAGE_OIDS[u]) for u in eku.usages]
        result.append((x509.ExtendedKeyUsage(oids), eku.extension_critical))
    return result


def san_extension(names: list[x509.GeneralName], subject: x509.Name) -> Extension:
    """The subjectAltName extension; critical when the subject is empty.

    RFC 5280 4.2.1.6: with an empty subject the SAN carries the identity and
    MUST be critical.
    """
    return x509.SubjectAlternativeName(names), len(subject) == 0


def crl_paths(ca_id: int) -> tuple[str, str]:
    """The HTTP paths at which the daemon serves a CA's CRL, DER and PEM.

    By the CA's id, which outlives a rename (ids are never reused): the DER
    path goes into every certificate the CA signs. The daemon also serves
    ``/crl/<name>.crl`` under the CA's current name, for people.
    """
    return f"/crl/by-id/{ca_id}.crl", f"/crl/by-id/{ca_id}.pem"


def crl_url(base_url: str, ca_id: int) -> str:
    """Where relying parties fetch a CA's CRL: the DER form under ``base_url``.

    RFC 5280 4.2.1.13 asks an HTTP distribution point for a DER CRL.
    """
    return base_url.rstrip("/") + crl_paths(ca_id)[0]


def crl_distribution_points(url: str) -> Extension:
    """cRLDistributionPoints with one point naming ``url``; never critical.

    RFC 5280 4.2.1.13 recommends it non-critical; the one point has neither
    reasons nor cRLIssuer, so its CRL covers every reason and the issuer itself.
    """
    point = x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)],
        relative_name=None,
        reasons=None,
        crl_issuer=None,
    )
    return x509.CRLDistributionPoints([point]), False


def extensions_dict(extensions: x509.Extensions) -> dict[str, dict[str, Any]]:
    """Every extension decoded to JSON-able values, keyed by a readable name."""
    result: dict[str, dict[str, Any]] = {}
    for ext in extensions:
        name, value = describe_extension(ext)
        result[name] = value
    return result


def describe_extension(
    ext: x509.Extension[x509.ExtensionType],
) -> tuple[str, dict[str, Any]]:
    """Decode one extension into ``(name, {critical, oid, ...values})``."""
    value = ext.value
    base: dict[str, Any] = {"critical": ext.critical, "oid": ext.oid.dotted_string}
    if isinstance(value, x509.UnrecognizedExtension):
        return ext.oid.dotted_string, {**base, "value_hex": value.value.hex().upper()}
    decoder = _DECODERS.get(type(value))
    if decoder is None:
        return type(value).__name__, {**base, "value_hex": _der_hex(value)}
    return type(value).__name__, {**base, **decoder(value)}


def _der_hex(value: x509.ExtensionType) -> str | None:
    try:
        return value.public_bytes().hex().upper()
    except (NotImplementedError, ValueError):
        return None


def colon_hex(data: bytes) -> str:
    """Bytes as upper-case hex pairs joined by colons, as OpenSSL prints key ids."""
    return ":".join(f"{b:02X}" for b in data)


def _basic_constraints(value: x509.BasicConstraints) -> dict[str, Any]:
    return {"ca": value.ca, "path_length": value.path_length}


def _key_usage(value: x509.KeyUsage) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    for flag in KEY_USAGE_FLAGS:
        try:
            flags[flag] = getattr(value, flag)
        except ValueError:
            # cryptography refuses to read encipher/decipher_only without keyAgreement.
            flags[flag] = False
    return flags


def _extended_key_usage(value: x509.ExtendedKeyUsage) -> dict[str, Any]:
    return {
        "usages": [
            _EKU_NAMES.get(oid.dotted_string, oid.dotted_string) for oid in value
        ]
    }


def _alt_name(
    value: x509.SubjectAlternativeName | x509.IssuerAlternativeName,
) -> dict[str, Any]:
    return {"names": san_strings(value)}


def _subject_key_identifier(value: x509.SubjectKeyIdentifier) -> dict[str, Any]:
    return {"key_identifier": colon_hex(value.digest)}


def _authority_key_identifier(value: x509.AuthorityKeyIdentifier) -> dict[str, Any]:
    issuer = value.authority_cert_issuer
    serial = value.authority_cert_serial_number
    return {
        "key_identifier": colon_hex(value.key_identifier)
        if value.key_identifier
        else None,
        "authority_cert_issuer": san_strings(issuer) if issuer is not None else None,
        "authority_cert_serial_number": serial_hex(serial)
        if serial is not None
        else None,
    }


def _access_descriptions(
    value: x509.AuthorityInformationAccess | x509.SubjectInformationAccess,
) -> dict[str, Any]:
    return {
        "descriptions": [
            {
                "method": _ACCESS_METHODS.get(
                    d.access_method.dotted_string, d.access_method.dotted_string
                ),
                "location": general_name_string(d.access_location),
            }
            for d in value
        ]
    }


def _distribution_points(
    value: x509.CRLDistributionPoints | x509.FreshestCRL,
) -> dict[str, Any]:
    points = []
    for point in value:
        points.append(
            {
                "full_name": san_strings(point.full_name) if point.full_name else None,
                "relative_name": point.relative_name.rfc4514_string()
                if point.relative_name
                else None,
                "reasons": sorted(r.name for r in point.reasons)
                if point.reasons
                else None,
                "crl_issuer": san_strings(point.crl_issuer)
                if point.crl_issuer
                else None,
            }
        )
    return {"distribution_points": points}


def _policy_qualifier(qualifier: str | x509.UserNotice) -> Any:
    if isinstance(qualifier, str):
        return {"cps": qualifier}
    ref = qualifier.notice_reference
    return {
        "explicit_text": qualifier.explicit_text,
        "organization": ref.organization if ref else None,
        "notice_numbers": list(ref.notice_numbers) if ref else None,
    }


def _certificate_policies(value: x509.CertificatePolicies) -> dict[str, Any]:
    return {
        "policies": [
            {
                "policy": p.policy_identifier.dotted_string,
                "qualifiers": [_policy_qualifier(q) for q in p.policy_qualifiers or []],
            }
            for p in value
        ]
    }


def _name_constraints(value: x509.NameConstraints) -> dict[str, Any]:
    permitted = value.permitted_subtrees
    excluded = value.excluded_subtrees
    return {
        "permitted": san_strings(permitted) if permitted is not None else None,
        "excluded": san_strings(excluded) if excluded is not None else None,
    }


def _policy_constraints(value: x509.PolicyConstraints) -> dict[str, Any]:
    return {
        "require_explicit_policy": value.require_explicit_policy,
        "inhibit_policy_mapping": value.inhibit_policy_mapping,
    }


def _inhibit_any_policy(value: x509.InhibitAnyPolicy) -> dict[str, Any]:
    return {"skip_certs": value.skip_certs}


def _tls_feature(value: x509.TLSFeature) -> dict[str, Any]:
    return {"features": [f.name for f in value]}


def _scts(value: x509.PrecertificateSignedCertificateTimestamps) -> dict[str, Any]:
    return {
        "timestamps": [
            {
                "version": sct.version.name,
                "log_id": colon_hex(sct.log_id),
                "timestamp": _utc(sct.timestamp).isoformat(),
            }
            for sct in value
        ]
    }


def _empty(value: x509.ExtensionType) -> dict[str, Any]:
    return {}


def _crl_number(value: x509.CRLNumber | x509.DeltaCRLIndicator) -> dict[str, Any]:
    number = value.crl_number
    return {"crl_number": number}


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def serial_hex(serial: int) -> str:
    """A serial number as upper-case hex with an even number of digits."""
    sign = "-" if serial < 0 else ""
    digits = f"{abs(serial):X}"
    if len(digits) % 2:
        digits = "0" + digits
    return sign + digits


_DECODERS: dict[type, Any] = {
    x509.BasicConstraints: _basic_constraints,
    x509.KeyUsage: _key_usage,
    x509.ExtendedKeyUsage: _extended_key_usage,
    x509.SubjectAlternativeName: _alt_name,
    x509.IssuerAlternativeName: _alt_name,
    x509.SubjectKeyIdentifier: _subject_key_identifier,
    x509.AuthorityKeyIdentifier: _authority_key_identifier,
    x509.AuthorityInformationAccess: _access_descriptions,
    x509.SubjectInformationAccess: _access_descriptions,
    x509.CRLDistributionPoints: _distribution_points,
    x509.FreshestCRL: _distribution_points,
    x509.CertificatePolicies: _certificate_policies,
    x509.NameConstraints: _name_constraints,
    x509.PolicyConstraints: _policy_constraints,
    x509.InhibitAnyPolicy: _inhibit_any_policy,
    x509.TLSFeature: _tls_feature,
    x509.PrecertificateSignedCertificateTimestamps: _scts,
    x509.OCSPNoCheck: _empty,
    x509.PrecertPoison: _empty,
    x509.CRLNumber: _crl_number,
    x509.DeltaCRLIndicator: _crl_number,
}
