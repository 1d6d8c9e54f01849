"""CERTIFICATE_CREATE_INTERNAL: every wizard field, decoded back from the result."""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from certd.client import Client
from certd.pki.models import EXTENDED_KEY_USAGE_OIDS, KEY_USAGE_FLAGS
from tests.daemon import call_job
from tests.pki_api.conftest import (
    expect_error,
    fields,
    issue,
    leaf_of,
    make_intermediate,
    make_root,
    snapshot,
)


def internal(ca: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": "leaf",
        "create_type": "CERTIFICATE_CREATE_INTERNAL",
        "signedby": ca,
        "common": "www.example.com",
        "lifetime": 30,
        **extra,
    }


async def test_subject_fields_and_every_san_kind(client: Client) -> None:
    root = await make_root(client)

    leaf = await issue(
        client,
        root["id"],
        country="fr",
        state="Bretagne",
        city="Rennes",
        organization="Example SA",
        organizational_unit="Web",
        email="Web@Example.COM",
        common="www.example.com",
        san=[
            "DNS:www.example.com",
            "bücher.example",
            "*.example.com",
            "192.0.2.1",
            "IP:2001:DB8::1",
            "[2001:db8::2]",
            "email:ops@example.com",
            "admin@bücher.example",
            "URI:https://example.com/id",
            "URI:urn:example:device:7",
            "Host.Example.Net.",
        ],
    )

    assert leaf["san"] == [
        "DNS:www.example.com",
        "DNS:xn--bcher-kva.example",
        "DNS:*.example.com",
        "IP:192.0.2.1",
        "IP:2001:db8::1",
        "IP:2001:db8::2",
        "email:ops@example.com",
        "email:admin@xn--bcher-kva.example",
        "URI:https://example.com/id",
        "URI:urn:example:device:7",
        "DNS:host.example.net",
    ]
    assert (leaf["country"], leaf["state"], leaf["city"]) == (
        "FR",
        "Bretagne",
        "Rennes",
    )
    assert (leaf["organization"], leaf["organizational_unit"]) == ("Example SA", "Web")
    assert (leaf["email"], leaf["common"]) == ("Web@example.com", "www.example.com")
    assert leaf["DN"] == (
        "1.2.840.113549.1.9.1=Web@example.com,CN=www.example.com,OU=Web,"
        "O=Example SA,L=Rennes,ST=Bretagne,C=FR"
    )
    san = leaf_of(leaf).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical is False
    assert san.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("192.0.2.1"),
        ipaddress.ip_address("2001:db8::1"),
        ipaddress.ip_address("2001:db8::2"),
    ]
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "https://example.com/id",
        "urn:example:device:7",
    ]


async def test_san_only_certificate_has_critical_san(client: Client) -> None:
    root = await make_root(client)

    leaf = await issue(client, root["id"], common=None, san=["only.example"])

    assert leaf["DN"] == "" and leaf["common"] is None
    assert leaf["extensions"]["SubjectAlternativeName"] == {
        "critical": True,
        "oid": "2.5.29.17",
        "names": ["DNS:only.example"],
    }


async def test_bad_subject_and_san_entries_are_refused(client: Client) -> None:
    root = await make_root(client)
    before = await snapshot(client)

    error = await expect_error(
        client,
        "certificate.create",
        internal(
            root["id"],
            country="Germany",
            email="not-an-email",
            organization="x" * 65,
            san=[
                "ok.example",
                "foo:bar",
                "-bad-.example",
                "*.*.example.com",
                "IP:999.1.1.1",
                "URI:not a uri",
                "OK.example",
                "1.2.3",
            ],
        ),
    )
    empty = await expect_error(
        client, "certificate.create", internal(root["id"], common=None, san=[])
    )

    assert error.code == -32602
    messages = {e["field"]: e["message"] for e in error.data["errors"]}
    assert sorted(messages) == [
        "data.country",
        "data.email",
        "data.organization",
        "data.san.1",
        "data.san.2",
        "data.san.3",
        "data.san.4",
        "data.san.5",
        "data.san.6",
        "data.san.7",
    ]
    assert "not an ISO 3166-1 alpha-2 country code" in messages["data.country"]
    assert "is not an e-mail address" in messages["data.email"]
    assert "at most 64 characters" in messages["data.organization"]
    assert "unknown type 'foo'; use DNS:, IP:, email: or URI:" in messages["data.san.1"]
    assert "'-bad-.example' is not a valid DNS name" in messages["data.san.2"]
    assert "a wildcard must be the whole leftmost label" in messages["data.san.3"]
    assert "is not an IPv4 or IPv6 address" in messages["data.san.4"]
    assert "a URI must be ASCII without spaces" in messages["data.san.5"]
    assert messages["data.san.6"] == "DNS:ok.example repeats entry 0"
    assert "neither a valid DNS name nor an IP address" in messages["data.san.7"]
    assert fields(empty) == ["data.san"]
    assert "give a common name or at least one subject alternative name" in (
        empty.message
    )
    assert await snapshot(client) == before


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"key_type": "RSA"}, ("RSA", 2048, None, "SHA256")),
        (
            {"key_type": "RSA", "key_length": 3072, "digest_algorithm": "SHA384"},
            ("RSA", 3072, None, "SHA384"),
        ),
        (
            {"key_type": "RSA", "key_length": 4096, "digest_algorithm": "sha-512"},
            ("RSA", 4096, None, "SHA512"),
        ),
        ({"key_type": "EC", "ec_curve": "P-256"}, ("EC", 256, "SECP256R1", "SHA256")),
        ({"key_type": "ec"}, ("EC", 384, "SECP384R1", "SHA256")),
        (
            {"key_type": "EC", "ec_curve": "SECP521R1", "digest_algorithm": "SHA512"},
            ("EC", 521, "SECP521R1", "SHA512"),
        ),
        # Ed25519 has no digest of its own; the P-384 CA signs with SHA-384.
        ({"key_type": "ED25519"}, ("ED25519", None, None, "SHA384")),
    ],
)
async def test_key_options(
    client: Client, options: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    root = await make_root(client)

    leaf = await call_job(client, "certificate.create", internal(root["id"], **options))

    assert (
        leaf["key_type"],
        leaf["key_length"],
        leaf["ec_curve"],
        leaf["digest_algorithm"],
    ) == expected


async def test_bad_key_options_are_refused(client: Client) -> None:
    root = await make_root(client)
    before = await snapshot(client)
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"key_type": "RSA", "key_length": 1024}, "data.key_length", "Input should be"),
        ({"key_type": "RSA", "ec_curve": "P-256"}, "data.ec_curve", "EC keys only"),
        ({"key_type": "EC", "key_length": 2048}, "data.key_length", "RSA keys only"),
        (
            {"key_type": "ED25519", "digest_algorithm": "SHA256"},
            "data.digest_algorithm",
            "Ed25519 signs without a separate digest",
        ),
        ({"key_type": "EC", "ec_curve": "ed25519"}, "data.ec_curve", "not a curve"),
        ({"digest_algorithm": "SHA1"}, "data.digest_algorithm", "Input should be"),
        ({"lifetime": 0}, "data.lifetime", "at least 1"),
    ]
    for options, field, message in cases:
        error = await expect_error(
            client, "certificate.create", internal(root["id"], **options)
        )
        assert fields(error) == [field], options
        assert message in error.message, (options, error.message)
    assert await snapshot(client) == before


async def test_each_key_usage_flag_and_its_critical_bit(client: Client) -> None:
    root = await make_root(client)
    flags = [f for f in KEY_USAGE_FLAGS if f != "key_cert_sign"]

    for index, flag in enumerate(flags):
        for critical in (True, False):
            chosen = {flag: True}
            if flag in ("encipher_only", "decipher_only"):
                chosen["key_agreement"] = True
            usage = {"enabled": True, "extension_critical": critical, **chosen}
            leaf = await call_job(
                client,
                "certificate.create",
                internal(
                    root["id"],
                    name=f"ku-{index}-{critical}",
                    key_type="EC",
                    cert_extensions={"KeyUsage": usage},
                ),
            )
            decoded = leaf["extensions"]["KeyUsage"]
            assert decoded["critical"] is critical
            assert {f for f in KEY_USAGE_FLAGS if decoded[f]} == set(chosen), flag
            parsed = leaf_of(leaf).extensions.get_extension_for_class(x509.KeyUsage)
            assert parsed.critical is critical
            assert getattr(parsed.value, flag) is True


async def test_each_extended_key_usage_and_its_critical_bit(client: Client) -> None:
    root = await make_root(client)

    for index, (usage, oid) in enumerate(EXTENDED_KEY_USAGE_OIDS.items()):
        critical = index % 2 == 1 and usage != "ANY_EXTENDED_KEY_USAGE"
        leaf = await call_job(
            client,
            "certificate.create",
            internal(
                root["id"],
                name=f"eku-{index}",
                key_type="EC",
                cert_extensions={
                    "ExtendedKeyUsage": {
                        "enabled": True,
                        "usages": [usage],
                        "extension_critical": critical,
                    }
                },
            ),
        )
        assert leaf["extensions"]["ExtendedKeyUsage"] == {
            "critical": critical,
            "oid": "2.5.29.37",
            "usages": [usage],
        }
        parsed = leaf_of(leaf).extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        assert [o.dotted_string for o in parsed.value] == [oid]


async def test_basic_constraints_and_authority_key_identifier(client: Client) -> None:
    root = await make_root(client)
    inter = await make_intermediate(client, root["id"])

    plain = await call_job(
        client,
        "certificate.create",
        internal(
            inter["id"],
            name="plain",
            key_type="EC",
            cert_extensions={
                "BasicConstraints": {"enabled": True, "extension_critical": False}
            },
        ),
    )
    full_aki = await call_job(
        client,
        "certificate.create",
        internal(
            inter["id"],
            name="aki",
            key_type="EC",
            cert_extensions={
                "AuthorityKeyIdentifier": {
                    "enabled": True,
                    "authority_cert_issuer": True,
                }
            },
        ),
    )

    assert plain["extensions"]["BasicConstraints"] == {
        "critical": False,
        "oid": "2.5.29.19",
        "ca": False,
        "path_length": None,
    }
    assert plain["is_ca"] is False
    # A host name as common name and no SAN asked for: the CN becomes the SAN.
    assert set(plain["extensions"]) == {
        "BasicConstraints",
        "SubjectAlternativeName",
        "SubjectKeyIdentifier",
        "AuthorityKeyIdentifier",
    }
    assert plain["san"] == ["DNS:www.example.com"]
    inter_ski = inter["extensions"]["SubjectKeyIdentifier"]["key_identifier"]
    assert plain["extensions"]["AuthorityKeyIdentifier"] == {
        "critical": False,
        "oid": "2.5.29.35",
        "key_identifier": inter_ski,
        "authority_cert_issuer": None,
        "authority_cert_serial_number": None,
    }
    assert "BasicConstraints" not in full_aki["extensions"]
    assert full_aki["extensions"]["AuthorityKeyIdentifier"] == {
        "critical": False,
        "oid": "2.5.29.35",
        "key_identifier": inter_ski,
        "authority_cert_issuer": [f"DirName:{root['DN']}"],
        "authority_cert_serial_number": inter["serial"],
    }


async def test_inconsistent_extension_sets_are_refused(client: Client) -> None:
    root = await make_root(client)
    before = await snapshot(client)
    cases = [
        (
            {"BasicConstraints": {"enabled": True, "path_length": 0}},
            "data.cert_extensions.BasicConstraints.path_length",
            "a path length is only allowed when ca is true",
        ),
        (
            {"KeyUsage": {"enabled": True, "key_cert_sign": True}},
            "data.cert_extensions.KeyUsage.key_cert_sign",
            "only a CA may sign certificates",
        ),
        (
            {
                "BasicConstraints": {
                    "enabled": True,
                    "ca": True,
                    "extension_critical": True,
                },
                "KeyUsage": {"enabled": True, "key_cert_sign": True},
            },
            "data.cert_extensions.BasicConstraints.ca",
            "a CA certificate is made with certificateauthority.create",
        ),
        (
            {"KeyUsage": {"enabled": True, "encipher_only": True}},
            "data.cert_extensions.KeyUsage.encipher_only",
            "only meaningful with key_agreement",
        ),
        (
            {"KeyUsage": {"enabled": True, "decipher_only": True}},
            "data.cert_extensions.KeyUsage.decipher_only",
            "only meaningful with key_agreement",
        ),
        (
            {"KeyUsage": {"enabled": True}},
            "data.cert_extensions.KeyUsage.enabled",
            "KeyUsage is enabled but sets no usage flag",
        ),
        (
            {"ExtendedKeyUsage": {"enabled": True, "usages": []}},
            "data.cert_extensions.ExtendedKeyUsage.usages",
            "ExtendedKeyUsage is enabled but lists no usage",
        ),
        (
            {"ExtendedKeyUsage": {"enabled": True, "usages": ["NOPE"]}},
            "data.cert_extensions.ExtendedKeyUsage.usages.0",
            "Input should be",
        ),
        (
            {
                "ExtendedKeyUsage": {
                    "enabled": True,
                    "usages": ["ANY_EXTENDED_KEY_USAGE"],
                    "extension_critical": True,
                }
            },
            "data.cert_extensions.ExtendedKeyUsage.extension_critical",
            "must not be critical with ANY_EXTENDED_KEY_USAGE",
        ),
        (
            {"AuthorityKeyIdentifier": {"enabled": True, "extension_critical": True}},
            "data.cert_extensions.AuthorityKeyIdentifier.extension_critical",
            "must be non-critical",
        ),
        (
            {"SubjectKeyIdentifier": {"enabled": True}},
            "data.cert_extensions.SubjectKeyIdentifier",
            "unknown field",
        ),
    ]
    for extensions, field, message in cases:
        error = await expect_error(
            client,
            "certificate.create",
            internal(root["id"], key_type="EC", cert_extensions=extensions),
        )
        assert fields(error) == [field], extensions
        assert message in error.message, (extensions, error.message)
    assert await snapshot(client) == before


async def test_serial_validity_and_lifetime_limits(client: Client) -> None:
    root = await make_root(client, lifetime=100)
    before_issue = dt.datetime.now(dt.UTC)
    first = await issue(client, root["id"], "first", lifetime=60)
    second = await issue(client, root["id"], "second", lifetime=60)
    before = await snapshot(client)

    too_long = await expect_error(
        client, "certificate.create", internal(root["id"], lifetime=120)
    )
    no_lifetime = await expect_error(
        client, "certificate.create", internal(root["id"], lifetime=None)
    )
    no_ca = await expect_error(
        client,
        "certificate.create",
        internal(None),  # type: ignore[arg-type]
    )
    unknown_ca = await expect_error(client, "certificate.create", internal(99))

    cert = leaf_of(first)
    assert cert.serial_number >= 2**63 and cert.serial_number < 2**159
    assert first["serial"] != second["serial"]
    backdated = before_issue - cert.not_valid_before_utc
    assert dt.timedelta(minutes=4) < backdated <= dt.timedelta(minutes=5, seconds=1)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(
        days=60, minutes=5
    )
    assert (first["lifetime"], first["days_left"], first["expired"]) == (60, 59, False)
    assert fields(too_long) == ["data.lifetime"]
    assert "after its issuer" in too_long.message
    assert fields(no_lifetime) == ["data.lifetime"]
    assert "this field is required (days)" in no_lifetime.message
    assert fields(no_ca) == ["data.signedby"]
    assert fields(unknown_ca) == ["data.signedby"]
    assert "no certificate authority with id 99" in unknown_ca.message
    assert await snapshot(client) == before


async def test_profile_fills_in_and_explicit_fields_win(client: Client) -> None:
    root = await make_root(client)

    vpn = await call_job(
        client,
        "certificate.create",
        {
            "name": "vpn",
            "create_type": "CERTIFICATE_CREATE_INTERNAL",
            "signedby": root["id"],
            "profile": "OpenVPN Server Certificate",
            "common": "vpn.example.com",
            "key_type": "EC",
        },
    )
    client_cert = await call_job(
        client,
        "certificate.create",
        {
            "name": "client",
            "create_type": "CERTIFICATE_CREATE_INTERNAL",
            "signedby": root["id"],
            "profile": "TLS Client Certificate",
            "common": "alice",
            "lifetime": 30,
            "cert_extensions": {
                "ExtendedKeyUsage": {"usages": ["CLIENT_AUTH", "EMAIL_PROTECTION"]}
            },
        },
    )

    # EC was asked for: the RSA profile's key size does not apply, its digest does.
    assert (vpn["key_type"], vpn["ec_curve"], vpn["digest_algorithm"]) == (
        "EC",
        "SECP384R1",
        "SHA256",
    )
    assert vpn["lifetime"] == 825
    assert {f for f in KEY_USAGE_FLAGS if vpn["extensions"]["KeyUsage"][f]} == {
        "digital_signature",
        "key_encipherment",
    }
    assert vpn["extensions"]["ExtendedKeyUsage"]["usages"] == ["SERVER_AUTH"]
    assert (client_cert["key_type"], client_cert["ec_curve"]) == ("EC", "SECP256R1")
    assert client_cert["lifetime"] == 30
    assert client_cert["extensions"]["ExtendedKeyUsage"]["usages"] == [
        "CLIENT_AUTH",
        "EMAIL_PROTECTION",
    ]


async def test_query_fields_of_an_internal_certificate(client: Client) -> None:
    root = await make_root(client)
    inter = await make_intermediate(client, root["id"])
    created = await issue(client, inter["id"])

    listed = await client.call(
        "certificate.query", [["name", "=", "leaf"]], {"get": True}
    )

    assert listed == await client.call("certificate.get_instance", created["id"])
    assert listed["create_type"] == "CERTIFICATE_CREATE_INTERNAL"
    assert (listed["cert_type"], listed["cert_type_CSR"]) == ("CERTIFICATE", False)
    assert (listed["signedby"], listed["issuer"]) == (inter["id"], "inter")
    assert listed["issuer_dn"] == inter["DN"]
    assert listed["chain_list"][1:] == inter["chain_list"]
    assert listed["chain"] is True
    assert (listed["has_privatekey"], listed["can_be_revoked"]) == (True, True)
    assert (listed["revoked"], listed["revoked_at"], listed["revoked_reason"]) == (
        False,
        None,
        None,
    )
    assert "privatekey" not in listed
    assert "PRIVATE KEY" not in str(await client.call("certificate.query"))
    assert "PRIVATE KEY" not in str(await client.call("certificateauthority.query"))
    cert = leaf_of(listed)
    assert (
        listed["fingerprint_sha256"]
        == cert.fingerprint(hashes.SHA256()).hex(":").upper()
    )
    assert (
        listed["fingerprint_sha1"] == cert.fingerprint(hashes.SHA1()).hex(":").upper()
    )
    assert listed["not_valid_before"] == cert.not_valid_before_utc.isoformat()
    assert listed["not_valid_after"] == cert.not_valid_after_utc.isoformat()
    assert listed["not_valid_after"].endswith("+00:00")
    after_issue = await client.call("certificateauthority.get_instance", inter["id"])
    assert after_issue["signed_certificates"] == 1
