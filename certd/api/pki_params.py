"""Create requests of the PKI screens, checked into the PKI library's models.

Shared by ``certificate`` and ``certificateauthority``: a profile is applied
as defaults under the fields a caller gave, key options, subject, SANs and
extensions are validated once at the edge, and the library's errors are
re-addressed to the request's field paths (``data.lifetime``, ``data.san.0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from certd.api.registry import validation_error_from_pydantic
from certd.errors import FieldError, PkiError, ValidationCollector, ValidationError
from certd.pki.models import CertExtensions, KeyOptions, SanList, Subject

KEY_FIELDS = ("key_type", "key_length", "ec_curve", "digest_algorithm")
SUBJECT_FIELDS = (
    "country",
    "state",
    "city",
    "organization",
    "organizational_unit",
    "email",
    "common",
)
EXTENSION_GROUPS = (
    "BasicConstraints",
    "AuthorityKeyIdentifier",
    "KeyUsage",
    "ExtendedKeyUsage",
)

_SAN_LIST: TypeAdapter[list[str]] = TypeAdapter(SanList)


@dataclass(frozen=True)
class Parsed:
    """The checked parts of a create request."""

    key: KeyOptions
    subject: Subject
    san: list[str]
    extensions: CertExtensions
    lifetime: int | None


def given(values: dict[str, Any]) -> dict[str, Any]:
    """The fields a caller filled in; an empty string or null means "not given"."""
    return {k: v for k, v in values.items() if v is not None and v != "" and v != {}}


def pick_profile(
    name: str | None, profiles: dict[str, dict[str, Any]], field: str
) -> dict[str, Any]:
    """The named profile, or an empty one when no name is given.

    Raises:
        ValidationError: at ``field`` when no profile has that name.
    """
    if name is None:
        return {}
    if name not in profiles:
        raise ValidationError.single(
            field, f"no profile named {name!r}; choose one of: {', '.join(profiles)}"
        )
    return profiles[name]


def apply_profile(values: dict[str, Any], profile: dict[str, Any]) -> dict[str, Any]:
    """The request's fields laid over a profile's; fields the caller gave win.

    Key size and curve belong to a key type, so they are taken from the
    profile only when the caller kept its key type; extensions are merged
    field by field within each extension.
    """
    merged = dict(profile)
    merged.update(values)
    key_type = values.get("key_type")
    if key_type is not None and str(key_type).strip().upper() != profile.get(
        "key_type"
    ):
        for field in ("key_length", "ec_curve"):
            if field not in values:
                merged.pop(field, None)
        # Ed25519 signs without a separate digest (RFC 8410).
        if (
            str(key_type).strip().upper() == "ED25519"
            and "digest_algorithm" not in values
        ):
            merged.pop("digest_algorithm", None)
    merged["cert_extensions"] = merge_extensions(
        profile.get("cert_extensions") or {}, values.get("cert_extensions") or {}
    )
    return merged


def merge_extensions(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Extension settings of ``override`` over ``base``, one field at a time."""
    merged: dict[str, Any] = {}
    for group in dict.fromkeys([*base, *override]):
        upper = override.get(group)
        lower = base.get(group)
        if isinstance(upper, dict) and isinstance(lower, dict):
            merged[group] = {**lower, **upper}
        else:
            merged[group] = upper if group in override else lower
    return merged


def parse_request(
    values: dict[str, Any],
    prefix: str = "data",
    *,
    lifetime: bool = True,
    require_name: bool = True,
) -> Parsed:
    """Check key options, subject, SANs, extensions and lifetime in one pass.

    Raises:
        ValidationError: every bad field, each at ``<prefix>.<field>``.
    """
    errors = ValidationCollector()
    key = _model(
        KeyOptions, {k: values[k] for k in KEY_FIELDS if k in values}, prefix, errors
    )
    subject = _model(
        Subject, {k: values[k] for k in SUBJECT_FIELDS if k in values}, prefix, errors
    )
    extensions = _model(
        CertExtensions,
        values.get("cert_extensions") or {},
        f"{prefix}.cert_extensions",
        errors,
    )
    san: list[str] = []
    try:
        san = _SAN_LIST.validate_python(values.get("san") or [])
    except PydanticValidationError as exc:
        errors.errors.extend(
            validation_error_from_pydantic(exc, f"{prefix}.san").errors
        )

    days = values.get("lifetime")
    if lifetime:
        if days is None:
            errors.add(f"{prefix}.lifetime", "this field is required (days)")
        elif not isinstance(days, int) or isinstance(days, bool) or days < 1:
            errors.add(
                f"{prefix}.lifetime", "must be a whole number of days, at least 1"
            )
    errors.check()

    if require_name and not san and not (subject and subject.common):
        raise ValidationError.single(
            f"{prefix}.san",
            "give a common name or at least one subject alternative name",
        )
    assert key is not None and subject is not None and extensions is not None
    return Parsed(key, subject, san, extensions, days if lifetime else None)


def _model(
    model: type[Any], values: dict[str, Any], prefix: str, errors: ValidationCollector
) -> Any:
    try:
        return model.model_validate(values)
    except PydanticValidationError as exc:
        errors.errors.extend(validation_error_from_pydantic(exc, prefix).errors)
        return None


def readdress(exc: ValidationError, prefix: str) -> ValidationError:
    """The library's field errors (``lifetime``, ``san.0``) under ``prefix``."""
    return ValidationError(
        [FieldError(f"{prefix}.{e.field}", e.message, e.errno) for e in exc.errors]
    )


def pki_field_error(exc: PkiError, field: str) -> ValidationError:
    """A PKI refusal reported as a validation error at ``field``."""
    return ValidationError.single(field, exc.message)
