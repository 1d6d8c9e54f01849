"""Parameter models of the PKI: key options, subject, SAN list and extensions.

The API layer validates requests with these models, so their field names are
part of the public JSON schema; they follow the NAS middleware's names. Every
cross-field rule reports the field at fault, with the RFC clause behind it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NoReturn, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from certd.pki.countries import COUNTRIES
from certd.pki.syntax import canonical_san, check_san_count, normalize_email

KeyType = Literal["RSA", "EC", "ED25519"]
EcCurve = Literal["SECP256R1", "SECP384R1", "SECP521R1"]
Digest = Literal["SHA256", "SHA384", "SHA512"]
RsaKeyLength = Literal[2048, 3072, 4096]
ExtendedKeyUsageName = Literal[
    "SERVER_AUTH",
    "CLIENT_AUTH",
    "CODE_SIGNING",
    "EMAIL_PROTECTION",
    "TIME_STAMPING",
    "OCSP_SIGNING",
    "ANY_EXTENDED_KEY_USAGE",
    "SMARTCARD_LOGON",
    "KERBEROS_PKINIT_KDC",
    "IPSEC_IKE",
    "CERTIFICATE_TRANSPARENCY",
    "BUNDLE_SECURITY",
]

# Dotted OIDs rather than cryptography's ExtendedKeyUsageOID attributes, so the
# set of names (and the JSON schema) does not move with the library version.
EXTENDED_KEY_USAGE_OIDS: dict[str, str] = {
    "SERVER_AUTH": "1.3.6.1.5.5.7.3.1",
    "CLIENT_AUTH": "1.3.6.1.5.5.7.3.2",
    "CODE_SIGNING": "1.3.6.1.5.5.7.3.3",
    "EMAIL_PROTECTION": "1.3.6.1.5.5.7.3.4",
    "TIME_STAMPING": "1.3.6.1.5.5.7.3.8",
    "OCSP_SIGNING": "1.3.6.1.5.5.7.3.9",
    "ANY_EXTENDED_KEY_USAGE": "2.5.29.37.0",
    "SMARTCARD_LOGON": "1.3.6.1.4.1.311.20.2.2",
    "KERBEROS_PKINIT_KDC": "1.3.6.1.5.2.3.5",
    "IPSEC_IKE": "1.3.6.1.5.5.7.3.17",
    "CERTIFICATE_TRANSPARENCY": "1.3.6.1.4.1.11129.2.4.4",
    "BUNDLE_SECURITY": "1.3.6.1.5.5.7.3.35",
}

DEFAULT_RSA_KEY_LENGTH: RsaKeyLength = 2048
DEFAULT_EC_CURVE: EcCurve = "SECP384R1"
DEFAULT_DIGEST: Digest = "SHA256"

_CURVE_ALIASES = {
    "P-256": "SECP256R1",
    "P256": "SECP256R1",
    "PRIME256V1": "SECP256R1",
    "P-384": "SECP384R1",
    "P384": "SECP384R1",
    "P-521": "SECP521R1",
    "P521": "SECP521R1",
}


def field_errors(
    title: str, errors: list[tuple[tuple[str | int, ...], str]]
) -> NoReturn:
    """Raise a pydantic ValidationError whose entries point at the given fields.

    Raised inside a validator, pydantic keeps each location and prefixes it
    with the location of the model being validated.
    """
    details = [
        InitErrorDetails(
            type=PydanticCustomError("value_error", "{reason}", {"reason": reason}),
            loc=loc,
            input=None,
        )
        for loc, reason in errors
    ]
    raise ValidationError.from_exception_data(title, details)


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _normalize_curve(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    name = value.strip().upper()
    if name == "ED25519":
        raise ValueError(
            "Ed25519 is a key type, not a curve: set key_type to ED25519 "
            "and leave ec_curve empty"
        )
    return _CURVE_ALIASES.get(name, name)


def _normalize_digest(value: Any) -> Any:
    return value.strip().upper().replace("-", "") if isinstance(value, str) else value


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _no_control_chars(value: str | None) -> str | None:
    if value is not None and any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("must not contain control characters")
    return value


def _check_country(value: str | None) -> str | None:
    if value is not None and value not in COUNTRIES:
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code")
    return value


def _check_email(value: str | None) -> str | None:
    return None if value is None else normalize_email(value)


def _check_san_list(entries: list[str]) -> list[str]:
    try:
        check_san_count(len(entries))
    except ValueError as exc:
        # One error for the whole list, before thousands of entries are read.
        field_errors("san", [((), str(exc))])
    canonical: list[str] = []
    errors: list[tuple[tuple[str | int, ...], str]] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if len(entry) > 1024:
            errors.append(((index,), "longer than 1024 characters"))
            continue
        try:
            value = canonical_san(entry)
        except ValueError as exc:
            errors.append(((index,), str(exc)))
            continue
        if value in seen:
            errors.append(((index,), f"{value} repeats entry {seen[value]}"))
            continue
        seen[value] = index
        canonical.append(value)
    if errors:
        field_errors("san", errors)
    return canonical


EcCurveField = Annotated[EcCurve, BeforeValidator(_normalize_curve)]
DigestField = Annotated[Digest, BeforeValidator(_normalize_digest)]
KeyTypeField = Annotated[KeyType, BeforeValidator(_upper)]
CountryField = Annotated[
    str | None,
    BeforeValidator(_upper),
    BeforeValidator(_blank_to_none),
    AfterValidator(_check_country),
]
EmailField = Annotated[
    Annotated[str, StringConstraints(max_length=255)] | None,
    BeforeValidator(_blank_to_none),
    AfterValidator(_check_email),
]
# Upper bounds are the ub-* values of RFC 5280 appendix A.1.
_SubjectText64 = Annotated[
    Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)
    ]
    | None,
    BeforeValidator(_blank_to_none),
    AfterValidator(_no_control_chars),
]
_SubjectText128 = Annotated[
    Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)
    ]
    | None,
    BeforeValidator(_blank_to_none),
    AfterValidator(_no_control_chars),
]
SanList = Annotated[
    list[str],
    AfterValidator(_check_san_list),
]
"""Subject alternative names; each entry comes back in typed form (``DNS:...``)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyOptions(_Model):
    """Which key to generate and which digest signs with it."""

    key_type: KeyTypeField = "RSA"
    key_length: RsaKeyLength | None = Field(
        default=None, description="RSA modulus bits; 2048 when omitted for RSA."
    )
    ec_curve: EcCurveField | None = Field(
        default=None, description="EC curve; SECP384R1 when omitted for EC."
    )
    digest_algorithm: DigestField | None = Field(
        default=DEFAULT_DIGEST, description="Null for Ed25519, which has no digest."
    )

    @model_validator(mode="after")
    def _check_key_options(self) -> Self:
        errors: list[tuple[tuple[str | int, ...], str]] = []
        if self.key_type == "RSA":
            self.key_length = self.key_length or DEFAULT_RSA_KEY_LENGTH
        elif self.key_length is not None:
            errors.append(
                (("key_length",), f"applies to RSA keys only, not {self.key_type}")
            )

        if self.key_type == "EC":
            self.ec_curve = self.ec_curve or DEFAULT_EC_CURVE
        elif self.ec_curve is not None:
            errors.append(
                (("ec_curve",), f"applies to EC keys only, not {self.key_type}")
            )

        if self.key_type == "ED25519":
            if "digest_algorithm" in self.model_fields_set and self.digest_algorithm:
                errors.append(
                    (
                        ("digest_algorithm",),
                        "Ed25519 signs without a separate digest (RFC 8410); "
                        "leave it null",
                    )
                )
            self.digest_algorithm = None
        else:
            self.digest_algorithm = self.digest_algorithm or DEFAULT_DIGEST

        if errors:
            field_errors(type(self).__name__, errors)
        return self


class Subject(_Model):
    """The subject distinguished name; every attribute is optional."""

    country: CountryField = None
    state: _SubjectText128 = None
    city: _SubjectText128 = None
    organization: _SubjectText64 = None
    organizational_unit: _SubjectText64 = None
    email: EmailField = None
    common: _SubjectText64 = None


class BasicConstraintsExtension(_Model):
    """basicConstraints (RFC 5280 4.2.1.9)."""

    enabled: bool = False
    ca: bool = False
    path_length: int | None = Field(default=None, ge=0)
    extension_critical: bool = False

    @model_validator(mode="after")
    def _check_basic_constraints(self) -> Self:
        if not self.enabled:
            return self
        errors: list[tuple[tuple[str | int, ...], str]] = []
        if self.path_length is not None and not self.ca:
            errors.append(
                (("path_length",), "a path length is only allowed when ca is true")
            )
        if self.ca and not self.extension_critical:
            errors.append(
                (
                    ("extension_critical",),
                    "must be critical in a CA certificate (RFC 5280 4.2.1.9)",
                )
            )
        if errors:
            field_errors(type(self).__name__, errors)
        return self


class AuthorityKeyIdentifierExtension(_Model):
    """authorityKeyIdentifier (RFC 5280 4.2.1.1); only used when signing."""

    enabled: bool = False
    authority_cert_issuer: bool = Field(
        default=False, description="Also name the issuer's issuer and serial."
    )
    extension_critical: bool = False

    @model_validator(mode="after")
    def _check_authority_key_identifier(self) -> Self:
        if self.enabled and self.extension_critical:
            field_errors(
                type(self).__name__,
                [(("extension_critical",), "must be non-critical (RFC 5280 4.2.1.1)")],
            )
        return self


class KeyUsageExtension(_Model):
    """keyUsage (RFC 5280 4.2.1.3)."""

    enabled: bool = False
    digital_signature: bool = False
    content_commitment: bool = False
    key_encipherment: bool = False
    data_encipherment: bool = False
    key_agreement: bool = False
    key_cert_sign: bool = False
    crl_sign: bool = False
    encipher_only: bool = False
    decipher_only: bool = False
    extension_critical: bool = False

    @model_validator(mode="after")
    def _check_key_usage(self) -> Self:
        if not self.enabled:
            return self
        errors: list[tuple[tuple[str | int, ...], str]] = []
        if not any(getattr(self, flag) for flag in KEY_USAGE_FLAGS):
            errors.append((("enabled",), "KeyUsage is enabled but sets no usage flag"))
        for flag in ("encipher_only", "decipher_only"):
            if getattr(self, flag) and not self.key_agreement:
                errors.append(
                    ((flag,), "only meaningful with key_agreement (RFC 5280 4.2.1.3)")
                )
        if errors:
            field_errors(type(self).__name__, errors)
        return self


KEY_USAGE_FLAGS: tuple[str, ...] = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


class ExtendedKeyUsageExtension(_Model):
    """extKeyUsage (RFC 5280 4.2.1.12)."""

    enabled: bool = False
    usages: list[ExtendedKeyUsageName] = Field(default_factory=list)
    extension_critical: bool = False

    @model_validator(mode="after")
    def _check_extended_key_usage(self) -> Self:
        if not self.enabled:
            return self
        errors: list[tuple[tuple[str | int, ...], str]] = []
        if not self.usages:
            errors.append(
                (("usages",), "ExtendedKeyUsage is enabled but lists no usage")
            )
        for index, usage in enumerate(self.usages):
            if usage in self.usages[:index]:
                errors.append((("usages", index), f"{usage} is listed twice"))
        if "ANY_EXTENDED_KEY_USAGE" in self.usages and self.extension_critical:
            errors.append(
                (
                    ("extension_critical",),
                    "must not be critical with ANY_EXTENDED_KEY_USAGE "
                    "(RFC 5280 4.2.1.12)",
                )
            )
        if errors:
            field_errors(type(self).__name__, errors)
        return self


class CertExtensions(_Model):
    """The extensions a caller can choose; all are disabled by default."""

    BasicConstraints: BasicConstraintsExtension = Field(
        default_factory=BasicConstraintsExtension
    )
    AuthorityKeyIdentifier: AuthorityKeyIdentifierExtension = Field(
        default_factory=AuthorityKeyIdentifierExtension
    )
    KeyUsage: KeyUsageExtension = Field(default_factory=KeyUsageExtension)
    ExtendedKeyUsage: ExtendedKeyUsageExtension = Field(
        default_factory=ExtendedKeyUsageExtension
    )

    @model_validator(mode="after")
    def _check_extension_set(self) -> Self:
        is_ca = self.BasicConstraints.enabled and self.BasicConstraints.ca
        signs_certs = self.KeyUsage.enabled and self.KeyUsage.key_cert_sign
        if signs_certs and not is_ca:
            field_errors(
                type(self).__name__,
                [
                    (
                        ("KeyUsage", "key_cert_sign"),
                        "only a CA may sign certificates: enable BasicConstraints "
                        "with ca true (RFC 5280 4.2.1.3)",
                    )
                ],
            )
        if is_ca and not signs_certs:
            field_errors(
                type(self).__name__,
                [
                    (
                        ("KeyUsage", "key_cert_sign"),
                        "a CA certificate must enable KeyUsage with key_cert_sign "
                        "(RFC 5280 4.2.1.9)",
                    )
                ],
            )
        return self

    @property
    def is_ca(self) -> bool:
        """Whether these extensions describe a CA certificate."""
        return self.BasicConstraints.enabled and self.BasicConstraints.ca

    @property
    def may_serve_tls(self) -> bool:
        """Whether a certificate with these extensions may name a TLS server."""
        usage = self.ExtendedKeyUsage
        return not usage.enabled or bool(
            {"SERVER_AUTH", "ANY_EXTENDED_KEY_USAGE"} & set(usage.usages)
        )
