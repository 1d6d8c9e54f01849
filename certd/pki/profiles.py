"""Ready-made presets and the choices that feed the API's drop-downs.

Every preset is a plain dict that validates as key options plus
``cert_extensions`` (and ``lifetime`` in days, except for CSRs, which have
none). EKU is never critical (CA/B Baseline Requirements 7.1.2.7.10), key
usage always is.
"""

from __future__ import annotations

import copy
from typing import Any

from certd.pki.countries import COUNTRIES
from certd.pki.models import EXTENDED_KEY_USAGE_OIDS, KEY_USAGE_FLAGS

# CA/B BR 6.3.2 caps TLS server certificates issued from 2026-03-15 at 200
# days; 199 leaves room for the five minutes of backdating.
TLS_LIFETIME_DAYS = 199
OPENVPN_LIFETIME_DAYS = 825
ROOT_CA_LIFETIME_DAYS = 3650
INTERMEDIATE_CA_LIFETIME_DAYS = 1825

_EKU_LABELS = {
    "SERVER_AUTH": "TLS Web Server Authentication",
    "CLIENT_AUTH": "TLS Web Client Authentication",
    "CODE_SIGNING": "Code Signing",
    "EMAIL_PROTECTION": "E-mail Protection (S/MIME)",
    "TIME_STAMPING": "Time Stamping",
    "OCSP_SIGNING": "OCSP Signing",
    "ANY_EXTENDED_KEY_USAGE": "Any Extended Key Usage",
    "SMARTCARD_LOGON": "Microsoft Smartcard Logon",
    "KERBEROS_PKINIT_KDC": "Kerberos PKINIT KDC",
    "IPSEC_IKE": "IPsec IKE",
    "CERTIFICATE_TRANSPARENCY": "Certificate Transparency Precertificate Signing",
    "BUNDLE_SECURITY": "Bundle Protocol Security",
}


def _key_usage(*flags: str, critical: bool = True) -> dict[str, Any]:
    usage: dict[str, Any] = {"enabled": True, "extension_critical": critical}
    usage.update({flag: flag in flags for flag in KEY_USAGE_FLAGS})
    return usage


def _extensions(
    *,
    ca: bool,
    usages: tuple[str, ...],
    eku: tuple[str, ...] = (),
    path_length: int | None = None,
) -> dict[str, Any]:
    return {
        "BasicConstraints": {
            "enabled": True,
            "ca": ca,
            "path_length": path_length,
            "extension_critical": True,
        },
        "AuthorityKeyIdentifier": {
            "enabled": True,
            "authority_cert_issuer": False,
            "extension_critical": False,
        },
        "KeyUsage": _key_usage(*usages),
        "ExtendedKeyUsage": {
            "enabled": bool(eku),
            "usages": list(eku),
            "extension_critical": False,
        },
    }


def _rsa(bits: int = 2048) -> dict[str, Any]:
    return {
        "key_type": "RSA",
        "key_length": bits,
        "ec_curve": None,
        "digest_algorithm": "SHA256",
    }


def _ec(curve: str = "SECP384R1", digest: str = "SHA384") -> dict[str, Any]:
    return {
        "key_type": "EC",
        "key_length": None,
        "ec_curve": curve,
        "digest_algorithm": digest,
    }


# TLS 1.3 and ECDHE only sign with the key, so HTTPS keys get
# digitalSignature alone; keyEncipherment (RSA key transport) is kept for
# OpenVPN servers, whose older clients expect it (CA/B BR 7.1.2.7.11).
_LEAF_PROFILES: dict[str, dict[str, Any]] = {
    "HTTPS RSA Certificate": {
        **_rsa(),
        "lifetime": TLS_LIFETIME_DAYS,
        "cert_extensions": _extensions(
            ca=False, usages=("digital_signature",), eku=("SERVER_AUTH",)
        ),
    },
    "HTTPS ECC Certificate": {
        **_ec(),
        "lifetime": TLS_LIFETIME_DAYS,
        "cert_extensions": _extensions(
            ca=False, usages=("digital_signature",), eku=("SERVER_AUTH",)
        ),
    },
    "TLS Client Certificate": {
        **_ec("SECP256R1", "SHA256"),
        "lifetime": TLS_LIFETIME_DAYS,
        "cert_extensions": _extensions(
            ca=False, usages=("digital_signature",), eku=("CLIENT_AUTH",)
        ),
    },
    # OpenVPN's remote-cert-tls checks exactly these key usages and EKUs.
    "OpenVPN Server Certificate": {
        **_rsa(),
        "lifetime": OPENVPN_LIFETIME_DAYS,
        "cert_extensions": _extensions(
            ca=False,
            usages=("digital_signature", "key_encipherment"),
            eku=("SERVER_AUTH",),
        ),
    },
    "OpenVPN Client Certificate": {
        **_rsa(),
        "lifetime": OPENVPN_LIFETIME_DAYS,
        "cert_extensions": _extensions(
            ca=False, usages=("digital_signature",), eku=("CLIENT_AUTH",)
        ),
    },
}

_CA_PROFILES: dict[str, dict[str, Any]] = {
    # No EKU in a root: it would restrict every chain below (CA/B BR 7.1.2.1.2).
    "Root CA": {
        **_ec(),
        "lifetime": ROOT_CA_LIFETIME_DAYS,
        "cert_extensions": _extensions(
            ca=True, usages=("digital_signature", "key_cert_sign", "crl_sign")
        ),
    },
    # An issuing CA for TLS: path length 0 and the TLS EKUs (BR 7.1.2.2).
    "Intermediate CA": {
        **_ec(),
        "lifetime": INTERMEDIATE_CA_LIFETIME_DAYS,
        "cert_extensions": _extensions(
            ca=True,
            usages=("digital_signature", "key_cert_sign", "crl_sign"),
            eku=("SERVER_AUTH", "CLIENT_AUTH"),
            path_length=0,
        ),
    },
}


def certificate_profiles() -> dict[str, dict[str, Any]]:
    """Presets for certificates signed by a local CA."""
    return copy.deepcopy(_LEAF_PROFILES)


def csr_profiles() -> dict[str, dict[str, Any]]:
    """Presets for CSRs: the certificate presets without a lifetime."""
    profiles = copy.deepcopy(_LEAF_PROFILES)
    for profile in profiles.values():
        del profile["lifetime"]
    return profiles


def ca_profiles() -> dict[str, dict[str, Any]]:
    """Presets for a root CA and an intermediate CA."""
    return copy.deepcopy(_CA_PROFILES)


def extended_key_usage_choices() -> dict[str, str]:
    """EKU names accepted in ``ExtendedKeyUsage.usages``, with a label."""
    return {
        name: f"{_EKU_LABELS[name]} ({oid})"
        for name, oid in EXTENDED_KEY_USAGE_OIDS.items()
    }


def ec_curve_choices() -> dict[str, str]:
    """Curves for EC keys."""
    return {
        "SECP256R1": "NIST P-256",
        "SECP384R1": "NIST P-384",
        "SECP521R1": "NIST P-521",
    }


def key_type_choices() -> dict[str, str]:
    """Key types."""
    return {"RSA": "RSA", "EC": "ECDSA", "ED25519": "Ed25519"}


def key_length_choices() -> dict[int, str]:
    """RSA modulus sizes."""
    return {2048: "2048 bits", 3072: "3072 bits", 4096: "4096 bits"}


def digest_choices() -> dict[str, str]:
    """Signature digests (not used with Ed25519)."""
    return {"SHA256": "SHA-256", "SHA384": "SHA-384", "SHA512": "SHA-512"}


def country_choices() -> dict[str, str]:
    """ISO 3166-1 alpha-2 codes and country names."""
    return dict(COUNTRIES)
