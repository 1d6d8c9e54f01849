"""Parameter models: defaults, normalization and every refused combination."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import BaseModel, ValidationError

from certd.pki.countries import COUNTRIES
from certd.pki.models import (
    EXTENDED_KEY_USAGE_OIDS,
    CertExtensions,
    ExtendedKeyUsageName,
    KeyOptions,
    SanList,
    Subject,
)


class Request(KeyOptions, Subject):
    """How the API layer composes the models into one flat request."""

    san: SanList = []
    cert_extensions: CertExtensions = CertExtensions()


def errors_of(
    model: type[BaseModel], data: dict[str, Any]
) -> dict[tuple[Any, ...], str]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return {tuple(e["loc"]): e["msg"] for e in info.value.errors()}


def test_key_options_default_to_rsa_2048_sha256() -> None:
    options = KeyOptions()

    assert options.model_dump() == {
        "key_type": "RSA",
        "key_length": 2048,
        "ec_curve": None,
        "digest_algorithm": "SHA256",
    }


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "SECP384R1"),
        ("P-256", "SECP256R1"),
        ("prime256v1", "SECP256R1"),
        ("p-384", "SECP384R1"),
        ("secp521r1", "SECP521R1"),
        ("P-521", "SECP521R1"),
    ],
)
def test_key_options_ec_curve_normalized(given: str | None, expected: str) -> None:
    options = KeyOptions(key_type="EC", ec_curve=given)  # type: ignore[arg-type]

    assert (options.key_length, options.ec_curve) == (None, expected)


def test_key_options_ed25519_has_no_digest() -> None:
    options = KeyOptions.model_validate({"key_type": "ed25519"})

    assert options.model_dump() == {
        "key_type": "ED25519",
        "key_length": None,
        "ec_curve": None,
        "digest_algorithm": None,
    }


def test_key_options_ed25519_refuses_digest_key_length_and_curve() -> None:
    errors = errors_of(
        KeyOptions,
        {"key_type": "ED25519", "digest_algorithm": "SHA256", "key_length": 2048},
    )

    assert set(errors) == {("digest_algorithm",), ("key_length",)}
    assert "RFC 8410" in errors[("digest_algorithm",)]
    assert "RSA keys only" in errors[("key_length",)]

    errors = errors_of(KeyOptions, {"key_type": "ED25519", "ec_curve": "SECP256R1"})
    assert errors == {("ec_curve",): "applies to EC keys only, not ED25519"}


def test_key_options_ed25519_as_curve_explains_key_type() -> None:
    errors = errors_of(KeyOptions, {"key_type": "EC", "ec_curve": "ed25519"})

    assert "set key_type to ED25519" in errors[("ec_curve",)]


def test_key_options_rsa_refuses_curve_and_ec_refuses_length() -> None:
    assert set(errors_of(KeyOptions, {"ec_curve": "SECP256R1"})) == {("ec_curve",)}
    assert set(errors_of(KeyOptions, {"key_type": "EC", "key_length": 4096})) == {
        ("key_length",)
    }


@pytest.mark.parametrize("bits", [1024, 2047, 8192])
def test_key_options_refuse_odd_rsa_lengths(bits: int) -> None:
    assert set(errors_of(KeyOptions, {"key_length": bits})) == {("key_length",)}


def test_key_options_accept_3072_and_digest_spellings() -> None:
    options = KeyOptions.model_validate(
        {"key_length": 3072, "digest_algorithm": "sha-384"}
    )

    assert (options.key_length, options.digest_algorithm) == (3072, "SHA384")


@pytest.mark.parametrize("digest", ["SHA1", "SHA224", "MD5"])
def test_key_options_refuse_weak_or_unlisted_digests(digest: str) -> None:
    assert set(errors_of(KeyOptions, {"digest_algorithm": digest})) == {
        ("digest_algorithm",)
    }


def test_key_options_null_digest_means_default_for_rsa() -> None:
    assert KeyOptions(digest_algorithm=None).digest_algorithm == "SHA256"


def test_models_refuse_unknown_fields() -> None:
    assert errors_of(Request, {"colour": "red"}) == {
        ("colour",): "Extra inputs are not permitted"
    }
    assert set(errors_of(CertExtensions, {"KeyUsage": {"sign": True}})) == {
        ("KeyUsage", "sign")
    }


def test_subject_normalizes_values() -> None:
    subject = Subject.model_validate(
        {
            "country": " de ",
            "state": "  Bavaria ",
            "city": "",
            "organization": "Ex GmbH",
            "organizational_unit": "   ",
            "email": "Admin@Bücher.Example",
            "common": "host.example",
        }
    )

    assert subject.model_dump() == {
        "country": "DE",
        "state": "Bavaria",
        "city": None,
        "organization": "Ex GmbH",
        "organizational_unit": None,
        "email": "Admin@xn--bcher-kva.example",
        "common": "host.example",
    }


def test_subject_errors_name_the_field() -> None:
    errors = errors_of(
        Subject,
        {
            "country": "XX",
            "common": "c" * 65,
            "city": "x" * 129,
            "organization": "bad\nname",
            "email": "not-an-address",
        },
    )

    assert errors == {
        ("country",): "Value error, 'XX' is not an ISO 3166-1 alpha-2 country code",
        ("common",): "String should have at most 64 characters",
        ("city",): "String should have at most 128 characters",
        ("organization",): "Value error, must not contain control characters",
        ("email",): "Value error, 'not-an-address' is not an e-mail address "
        "(local@domain)",
    }


def test_subject_accepts_upper_bounds() -> None:
    subject = Subject(common="c" * 64, state="s" * 128)

    assert (len(subject.common or ""), len(subject.state or "")) == (64, 128)


def test_countries_table_is_iso_3166_alpha_2() -> None:
    assert len(COUNTRIES) == 249
    assert all(len(code) == 2 and code.isupper() for code in COUNTRIES)
    assert (COUNTRIES["DE"], COUNTRIES["US"], COUNTRIES["AX"]) == (
        "Germany",
        "United States of America",
        "Åland Islands",
    )
    assert "UK" not in COUNTRIES and "EU" not in COUNTRIES


def test_san_list_returns_typed_entries() -> None:
    request = Request.model_validate(
        {"san": ["a.example", "Bücher.Example.", "10.0.0.1", "IP:[::1]", "x@a.example"]}
    )

    assert request.san == [
        "DNS:a.example",
        "DNS:xn--bcher-kva.example",
        "IP:10.0.0.1",
        "IP:::1",
        "email:x@a.example",
    ]


def test_san_list_errors_carry_the_index() -> None:
    errors = errors_of(Request, {"san": ["ok.example", "bad_name", "OK.example", ""]})

    assert set(errors) == {("san", 1), ("san", 2), ("san", 3)}
    assert "not a valid DNS name" in errors[("san", 1)]
    assert errors[("san", 2)] == "DNS:ok.example repeats entry 0"
    assert errors[("san", 3)] == "empty entry"


def ext(**parts: dict[str, Any]) -> dict[str, Any]:
    return {"cert_extensions": parts}


CA_BC = {"enabled": True, "ca": True, "extension_critical": True}
CA_KU = {"enabled": True, "key_cert_sign": True, "crl_sign": True}


def test_extensions_default_disabled() -> None:
    extensions = CertExtensions()

    assert not extensions.BasicConstraints.enabled
    assert not extensions.AuthorityKeyIdentifier.enabled
    assert not extensions.KeyUsage.enabled
    assert not extensions.ExtendedKeyUsage.enabled
    assert not extensions.is_ca


def test_extensions_accept_a_ca_set() -> None:
    extensions = CertExtensions.model_validate(
        {
            "BasicConstraints": {**CA_BC, "path_length": 0},
            "KeyUsage": CA_KU,
            "AuthorityKeyIdentifier": {"enabled": True, "authority_cert_issuer": True},
        }
    )

    assert extensions.is_ca
    assert extensions.BasicConstraints.path_length == 0


@pytest.mark.parametrize(
    ("data", "loc", "reason"),
    [
        (
            ext(BasicConstraints={"enabled": True, "path_length": 1}),
            ("cert_extensions", "BasicConstraints", "path_length"),
            "a path length is only allowed when ca is true",
        ),
        (
            ext(BasicConstraints={"enabled": True, "ca": True}, KeyUsage=CA_KU),
            ("cert_extensions", "BasicConstraints", "extension_critical"),
            "must be critical in a CA certificate (RFC 5280 4.2.1.9)",
        ),
        (
            ext(BasicConstraints={**CA_BC, "path_length": -1}),
            ("cert_extensions", "BasicConstraints", "path_length"),
            "Input should be greater than or equal to 0",
        ),
        (
            ext(BasicConstraints=CA_BC),
            ("cert_extensions", "KeyUsage", "key_cert_sign"),
            "a CA certificate must enable KeyUsage with key_cert_sign "
            "(RFC 5280 4.2.1.9)",
        ),
        (
            ext(BasicConstraints=CA_BC, KeyUsage={"enabled": True, "crl_sign": True}),
            ("cert_extensions", "KeyUsage", "key_cert_sign"),
            "a CA certificate must enable KeyUsage with key_cert_sign "
            "(RFC 5280 4.2.1.9)",
        ),
        (
            ext(KeyUsage={"enabled": True, "key_cert_sign": True}),
            ("cert_extensions", "KeyUsage", "key_cert_sign"),
            "only a CA may sign certificates: enable BasicConstraints with ca true "
            "(RFC 5280 4.2.1.3)",
        ),
        (
            ext(
                KeyUsage={
                    "enabled": True,
                    "digital_signature": True,
                    "encipher_only": True,
                }
            ),
            ("cert_extensions", "KeyUsage", "encipher_only"),
            "only meaningful with key_agreement (RFC 5280 4.2.1.3)",
        ),
        (
            ext(
                KeyUsage={
                    "enabled": True,
                    "digital_signature": True,
                    "decipher_only": True,
                }
            ),
            ("cert_extensions", "KeyUsage", "decipher_only"),
            "only meaningful with key_agreement (RFC 5280 4.2.1.3)",
        ),
        (
            ext(KeyUsage={"enabled": True}),
            ("cert_extensions", "KeyUsage", "enabled"),
            "KeyUsage is enabled but sets no usage flag",
        ),
        (
            ext(ExtendedKeyUsage={"enabled": True}),
            ("cert_extensions", "ExtendedKeyUsage", "usages"),
            "ExtendedKeyUsage is enabled but lists no usage",
        ),
        (
            ext(
                ExtendedKeyUsage={
                    "enabled": True,
                    "usages": ["SERVER_AUTH", "SERVER_AUTH"],
                }
            ),
            ("cert_extensions", "ExtendedKeyUsage", "usages", 1),
            "SERVER_AUTH is listed twice",
        ),
        (
            ext(
                ExtendedKeyUsage={
                    "enabled": True,
                    "usages": ["ANY_EXTENDED_KEY_USAGE"],
                    "extension_critical": True,
                }
            ),
            ("cert_extensions", "ExtendedKeyUsage", "extension_critical"),
            "must not be critical with ANY_EXTENDED_KEY_USAGE (RFC 5280 4.2.1.12)",
        ),
        (
            ext(AuthorityKeyIdentifier={"enabled": True, "extension_critical": True}),
            ("cert_extensions", "AuthorityKeyIdentifier", "extension_critical"),
            "must be non-critical (RFC 5280 4.2.1.1)",
        ),
    ],
)
def test_extensions_refuse_inconsistent_sets(
    data: dict[str, Any], loc: tuple[Any, ...], reason: str
) -> None:
    assert errors_of(Request, data) == {loc: reason}


def test_extensions_refuse_unknown_usage_name() -> None:
    errors = errors_of(
        CertExtensions, {"ExtendedKeyUsage": {"enabled": True, "usages": ["WEB"]}}
    )

    assert set(errors) == {("ExtendedKeyUsage", "usages", 0)}


def test_disabled_extensions_ignore_their_fields() -> None:
    extensions = CertExtensions.model_validate(
        {
            "BasicConstraints": {"enabled": False, "path_length": 3},
            "KeyUsage": {"enabled": False, "encipher_only": True},
            "ExtendedKeyUsage": {"enabled": False, "usages": []},
        }
    )

    assert not extensions.is_ca


def test_extended_key_usage_names_match_cryptography() -> None:
    assert list(get_args(ExtendedKeyUsageName)) == list(EXTENDED_KEY_USAGE_OIDS)
    for name, dotted in EXTENDED_KEY_USAGE_OIDS.items():
        if hasattr(ExtendedKeyUsageOID, name):
            assert getattr(ExtendedKeyUsageOID, name).dotted_string == dotted


def test_json_schema_lists_choices() -> None:
    schema = Request.model_json_schema()
    props = schema["properties"]

    assert props["key_type"]["enum"] == ["RSA", "EC", "ED25519"]
    assert props["key_type"]["default"] == "RSA"
    assert {"enum": ["SECP256R1", "SECP384R1", "SECP521R1"], "type": "string"} in props[
        "ec_curve"
    ]["anyOf"]
    assert "BasicConstraints" in schema["$defs"]["CertExtensions"]["properties"]
