"""certificateauthority: roots, intermediates, imports, update, revoke, delete."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from cryptography import x509

from certd.client import Client
from tests.pki.conftest import OpenSSL
from tests.pki_api.conftest import (
    expect_error,
    fields,
    issue,
    leaf_of,
    make_intermediate,
    make_root,
    snapshot,
)

CA_KEY_USAGE = {
    "critical": True,
    "oid": "2.5.29.15",
    "digital_signature": True,
    "content_commitment": False,
    "key_encipherment": False,
    "data_encipherment": False,
    "key_agreement": False,
    "key_cert_sign": True,
    "crl_sign": True,
    "encipher_only": False,
    "decipher_only": False,
}


def ca_extensions(**basic: Any) -> dict[str, Any]:
    return {
        "BasicConstraints": {
            "enabled": True,
            "ca": True,
            "extension_critical": True,
            **basic,
        },
        "KeyUsage": {
            "enabled": True,
            "key_cert_sign": True,
            "crl_sign": True,
            "extension_critical": True,
        },
    }


async def test_root_ca_from_the_default_profile(client: Client) -> None:
    before = dt.datetime.now(dt.UTC)

    root = await make_root(client, "root")

    assert root["create_type"] == "CA_CREATE_INTERNAL"
    assert root["cert_type"] == "CA"
    assert root["parsed"] is True and root["parse_error"] is None
    assert root["DN"] == "CN=root,O=certd,ST=Berlin,C=DE"
    assert root["issuer_dn"] == root["DN"]
    assert (root["issuer"], root["self_signed"], root["signedby"]) == (
        "self-signed",
        True,
        None,
    )
    assert (root["country"], root["state"], root["organization"]) == (
        "DE",
        "Berlin",
        "certd",
    )
    assert (root["key_type"], root["ec_curve"], root["key_length"]) == (
        "EC",
        "SECP384R1",
        384,
    )
    assert root["digest_algorithm"] == "SHA384"
    assert (root["lifetime"], root["days_left"]) == (3650, 3649)
    assert root["is_ca"] is True
    assert root["extensions"]["BasicConstraints"] == {
        "critical": True,
        "oid": "2.5.29.19",
        "ca": True,
        "path_length": None,
    }
    assert root["extensions"]["KeyUsage"] == CA_KEY_USAGE
    assert "ExtendedKeyUsage" not in root["extensions"]
    ski = root["extensions"]["SubjectKeyIdentifier"]["key_identifier"]
    assert root["extensions"]["AuthorityKeyIdentifier"]["key_identifier"] == ski
    assert root["has_privatekey"] is True
    assert "privatekey" not in root
    assert (root["signed_certificates"], root["signed_authorities"]) == (0, 0)
    assert root["revoked"] is False and root["revoked_certificates"] == []
    assert (root["crl_number"], root["crl_url"], root["crl_pem_url"]) == (
        1,
        f"/crl/by-id/{root['id']}.crl",
        f"/crl/by-id/{root['id']}.pem",
    )
    assert root["crl"].startswith("-----BEGIN X509 CRL-----")
    cert = leaf_of(root)
    assert cert.serial_number >= 2**63
    assert root["serial"] == f"{cert.serial_number:X}"
    skew = before - cert.not_valid_before_utc
    assert dt.timedelta(minutes=4) < skew <= dt.timedelta(minutes=5, seconds=1)
    assert len(root["chain_list"]) == 1 and root["chain"] is False
    assert await client.call("certificateauthority.get_instance", root["id"]) == root


async def test_root_ca_with_every_option_given(client: Client) -> None:
    root = await make_root(
        client,
        "rsa-root",
        profile=None,
        key_type="RSA",
        key_length=3072,
        digest_algorithm="SHA512",
        lifetime=1000,
        country="FR",
        state="Ile-de-France",
        city="Paris",
        organization="Example SA",
        organizational_unit="PKI",
        email="pki@example.com",
        common="Example Root",
        san=["email:pki@example.com"],
        cert_extensions=ca_extensions(path_length=2),
    )

    assert (root["key_type"], root["key_length"], root["ec_curve"]) == (
        "RSA",
        3072,
        None,
    )
    assert root["digest_algorithm"] == "SHA512"
    assert root["lifetime"] == 1000
    assert root["DN"] == (
        "1.2.840.113549.1.9.1=pki@example.com,CN=Example Root,OU=PKI,"
        "O=Example SA,L=Paris,ST=Ile-de-France,C=FR"
    )
    assert (root["city"], root["organizational_unit"], root["email"]) == (
        "Paris",
        "PKI",
        "pki@example.com",
    )
    assert root["san"] == ["email:pki@example.com"]
    assert root["extensions"]["BasicConstraints"]["path_length"] == 2
    # No profile: no authority key identifier was asked for on a root.
    assert "AuthorityKeyIdentifier" not in root["extensions"]
    assert root["extensions"]["KeyUsage"]["digital_signature"] is False


async def test_explicit_fields_win_over_the_profile(client: Client) -> None:
    root = await make_root(
        client,
        profile="Root CA",
        key_type="RSA",
        lifetime=500,
        cert_extensions={"KeyUsage": {"digital_signature": False}},
    )

    # RSA was asked for: the profile's curve does not follow it.
    assert (root["key_type"], root["key_length"], root["ec_curve"]) == (
        "RSA",
        2048,
        None,
    )
    assert root["lifetime"] == 500
    assert root["extensions"]["KeyUsage"] == {
        **CA_KEY_USAGE,
        "digital_signature": False,
    }


async def test_ed25519_root_has_no_digest(client: Client) -> None:
    root = await make_root(client, key_type="ED25519")

    assert (root["key_type"], root["key_length"], root["ec_curve"]) == (
        "ED25519",
        None,
        None,
    )
    assert root["digest_algorithm"] is None
    assert leaf_of(root).signature_algorithm_oid == x509.SignatureAlgorithmOID.ED25519


async def test_intermediate_inherits_the_path_length(client: Client) -> None:
    root = await make_root(client, cert_extensions=ca_extensions(path_length=2))

    inter = await make_intermediate(
        client, root["id"], profile=None, lifetime=365, cert_extensions=ca_extensions()
    )

    assert inter["extensions"]["BasicConstraints"]["path_length"] == 1
    assert (inter["signedby"], inter["issuer"], inter["self_signed"]) == (
        root["id"],
        "root",
        False,
    )
    assert inter["issuer_dn"] == root["DN"]
    assert inter["chain_list"] == [inter["chain_list"][0], *root["chain_list"]]
    aki = inter["extensions"]["AuthorityKeyIdentifier"]["key_identifier"]
    assert aki == root["extensions"]["SubjectKeyIdentifier"]["key_identifier"]
    listed = await client.call("certificateauthority.get_instance", root["id"])
    assert (listed["signed_authorities"], listed["signed_certificates"]) == (1, 0)


async def test_intermediate_profile_and_parent_limits(client: Client) -> None:
    root = await make_root(client, cert_extensions=ca_extensions(path_length=1))
    inter = await make_intermediate(client, root["id"])
    assert inter["extensions"]["BasicConstraints"]["path_length"] == 0
    assert inter["extensions"]["ExtendedKeyUsage"]["usages"] == [
        "SERVER_AUTH",
        "CLIENT_AUTH",
    ]
    before = await snapshot(client)

    too_deep = await expect_error(
        client,
        "certificateauthority.create",
        {
            "name": "deeper",
            "create_type": "CA_CREATE_INTERMEDIATE",
            "signedby": inter["id"],
            "common": "deeper",
        },
    )
    too_long_path = await expect_error(
        client,
        "certificateauthority.create",
        {
            "name": "wide",
            "create_type": "CA_CREATE_INTERMEDIATE",
            "signedby": root["id"],
            "common": "wide",
            "cert_extensions": {"BasicConstraints": {"path_length": 1}},
        },
    )
    outlives = await expect_error(
        client,
        "certificateauthority.create",
        {
            "name": "long",
            "create_type": "CA_CREATE_INTERMEDIATE",
            "signedby": root["id"],
            "common": "long",
            "lifetime": 4000,
        },
    )
    no_parent = await expect_error(
        client,
        "certificateauthority.create",
        {"name": "orphan", "create_type": "CA_CREATE_INTERMEDIATE", "common": "x"},
    )

    assert too_deep.code == -32602
    assert fields(too_deep) == ["data.signedby"]
    assert "path length is 0: it may not issue CA certificates" in too_deep.message
    assert fields(too_long_path) == [
        "data.cert_extensions.BasicConstraints.path_length"
    ]
    assert "path_length 1 is too long" in too_long_path.message
    assert fields(outlives) == ["data.lifetime"]
    assert "after its issuer" in outlives.message
    # 3650 when the root was made in the same second.
    assert re.search(r"the issuer allows at most 36(49|50) days$", outlives.message)
    assert fields(no_parent) == ["data.signedby"]
    assert await snapshot(client) == before


async def test_inconsistent_ca_requests_are_refused(client: Client) -> None:
    before = await snapshot(client)
    cases: list[tuple[dict[str, Any], str, str]] = [
        (
            {
                "profile": None,
                "lifetime": 100,
                "cert_extensions": {
                    "KeyUsage": {"enabled": True, "digital_signature": True}
                },
            },
            "data.cert_extensions.BasicConstraints",
            "a CA needs BasicConstraints enabled with ca true",
        ),
        (
            {
                "cert_extensions": {
                    "KeyUsage": {"key_cert_sign": False, "crl_sign": True}
                }
            },
            "data.cert_extensions.KeyUsage.key_cert_sign",
            "a CA certificate must enable KeyUsage with key_cert_sign",
        ),
        (
            {"cert_extensions": {"BasicConstraints": {"extension_critical": False}}},
            "data.cert_extensions.BasicConstraints.extension_critical",
            "must be critical in a CA certificate",
        ),
        ({"profile": "Nope"}, "data.profile", "no profile named 'Nope'"),
        ({"lifetime": 0}, "data.lifetime", "at least 1"),
        ({"key_type": "DSA"}, "data.key_type", "Input should be"),
        ({"country": "XX"}, "data.country", "not an ISO 3166-1 alpha-2"),
        ({"name": "bad name"}, "data.name", "letters, digits"),
    ]
    for extra, field, message in cases:
        error = await expect_error(
            client,
            "certificateauthority.create",
            {
                "name": "ca",
                "create_type": "CA_CREATE_INTERNAL",
                "common": "CA",
                **extra,
            },
        )
        assert fields(error) == [field], extra
        assert message in error.message, (extra, error.message)
    assert await snapshot(client) == before


async def test_duplicate_ca_name(client: Client) -> None:
    await make_root(client, "root")
    before = await snapshot(client)

    error = await expect_error(
        client,
        "certificateauthority.create",
        {"name": "root", "create_type": "CA_CREATE_INTERNAL", "common": "again"},
    )

    assert fields(error) == ["data.name"]
    assert "a certificate authority named 'root' already exists" in error.message
    assert await snapshot(client) == before


def openssl_ca(openssl: OpenSSL, name: str, passphrase: str | None) -> tuple[str, str]:
    """A self-signed CA and its key made by openssl, not by certd."""
    key = openssl.workdir / f"{name}.key"
    cert = openssl.workdir / f"{name}.pem"
    args = ["-passout", f"pass:{passphrase}"] if passphrase else ["-noenc"]
    openssl.run(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-subj", f"/CN={name}/O=Elsewhere", "-days", "30",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", key, "-out", cert, *args,
    )  # fmt: skip
    return cert.read_text(), key.read_text()


async def test_imported_ca_with_and_without_key(
    client: Client, openssl: OpenSSL
) -> None:
    cert, key = openssl_ca(openssl, "outside", "s3cret")

    bare = await client.call(
        "certificateauthority.create",
        {"name": "bare", "create_type": "CA_CREATE_IMPORTED", "certificate": cert},
    )
    keyed = await client.call(
        "certificateauthority.create",
        {
            "name": "keyed",
            "create_type": "CA_CREATE_IMPORTED",
            "certificate": cert,
            "privatekey": key,
            "passphrase": "s3cret",
        },
    )

    assert bare["create_type"] == "CA_CREATE_IMPORTED"
    assert (bare["has_privatekey"], bare["crl"], bare["crl_number"]) == (
        False,
        None,
        0,
    )
    assert bare["DN"] == "O=Elsewhere,CN=outside"
    assert bare["issuer"] == "self-signed"
    assert keyed["has_privatekey"] is True
    assert keyed["crl_number"] == 1
    leaf = await issue(client, keyed["id"], lifetime=10)
    assert leaf["issuer"] == "keyed"
    unsigned = await expect_error(
        client,
        "certificate.create",
        {
            "name": "x",
            "create_type": "CERTIFICATE_CREATE_INTERNAL",
            "signedby": bare["id"],
            "common": "x",
            "lifetime": 10,
        },
    )
    assert fields(unsigned) == ["data.signedby"]
    assert "has no private key to sign with" in unsigned.message


async def test_imported_ca_refusals_store_nothing(
    client: Client, openssl: OpenSSL
) -> None:
    cert, key = openssl_ca(openssl, "outside", "s3cret")
    other_cert, other_key = openssl_ca(openssl, "other", None)
    root = await make_root(client)
    leaf = await issue(client, root["id"])
    before = await snapshot(client)
    base = {"name": "imp", "create_type": "CA_CREATE_IMPORTED"}
    cases = [
        ({}, "data.certificate", "required for CA_CREATE_IMPORTED"),
        (
            {
                "certificate": leaf["certificate"].split("-----END CERTIFICATE-----")[0]
                + "-----END CERTIFICATE-----\n"
            },
            "data.certificate",
            "not a CA certificate",
        ),
        (
            {"certificate": cert, "privatekey": key, "passphrase": "wrong"},
            "data.passphrase",
            "the passphrase does not decrypt the private key",
        ),
        (
            {"certificate": cert, "privatekey": key},
            "data.passphrase",
            "a passphrase is required",
        ),
        (
            {"certificate": cert, "privatekey": other_key},
            "data.privatekey",
            "the private key does not match the certificate (O=Elsewhere,CN=outside)",
        ),
        ({"certificate": "garbage"}, "data.certificate", "no PEM certificate found"),
        (
            {"certificate": cert + other_cert},
            "data.certificate",
            "separate chains instead of one",
        ),
    ]
    for extra, field, message in cases:
        error = await expect_error(
            client, "certificateauthority.create", {**base, **extra}
        )
        assert fields(error) == [field], extra
        assert message in error.message, (extra, error.message)
    assert await snapshot(client) == before


async def test_imported_copy_of_our_intermediate_is_linked_to_its_parent(
    client: Client,
) -> None:
    root = await make_root(client)
    inter = await make_intermediate(client, root["id"])

    copy = await client.call(
        "certificateauthority.create",
        {
            "name": "copy",
            "create_type": "CA_CREATE_IMPORTED",
            "certificate": "".join(reversed(inter["chain_list"])),
        },
    )

    assert (copy["signedby"], copy["issuer"]) == (root["id"], "root")
    assert copy["chain_list"] == inter["chain_list"]
    assert copy["fingerprint_sha256"] == inter["fingerprint_sha256"]


async def test_rename_and_revoke_an_intermediate(client: Client) -> None:
    root = await make_root(client)
    inter = await make_intermediate(client, root["id"])
    assert (await client.call("certificateauthority.get_instance", root["id"]))[
        "crl_number"
    ] == 1

    renamed = await client.call(
        "certificateauthority.update", inter["id"], {"name": "issuing"}
    )
    revoked = await client.call(
        "certificateauthority.update",
        inter["id"],
        {"revoked": True, "revoked_reason": "cACompromise"},
    )
    parent = await client.call("certificateauthority.get_instance", root["id"])

    assert (renamed["name"], renamed["crl_url"]) == (
        "issuing",
        f"/crl/by-id/{renamed['id']}.crl",
    )
    assert (revoked["revoked"], revoked["revoked_reason"]) == (True, "cACompromise")
    revoked_at = dt.datetime.fromisoformat(revoked["revoked_at"])
    assert abs(dt.datetime.now(dt.UTC) - revoked_at) < dt.timedelta(minutes=1)
    assert parent["crl_number"] == 2
    assert parent["revoked_certificates"] == [
        {
            "serial": inter["serial"],
            "name": "issuing",
            "kind": "authority",
            "revoked_at": revoked["revoked_at"],
            "reason": "cACompromise",
        }
    ]
    crl = x509.load_pem_x509_crl(parent["crl"].encode())
    entry = crl.get_revoked_certificate_by_serial_number(int(inter["serial"], 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.ca_compromise
    )

    signs_no_more = await expect_error(
        client,
        "certificate.create",
        {
            "name": "late",
            "create_type": "CERTIFICATE_CREATE_INTERNAL",
            "signedby": inter["id"],
            "common": "late",
            "lifetime": 10,
        },
    )
    assert fields(signs_no_more) == ["data.signedby"]
    assert "is revoked and signs no more" in signs_no_more.message
    permanent = await expect_error(
        client, "certificateauthority.update", inter["id"], {"revoked": False}
    )
    assert fields(permanent) == ["data.revoked"]
    assert "only a certificateHold can be lifted" in permanent.message


async def test_a_held_ca_can_be_released(client: Client) -> None:
    root = await make_root(client)
    inter = await make_intermediate(client, root["id"])

    await client.call(
        "certificateauthority.update",
        inter["id"],
        {"revoked": True, "revoked_reason": "certificateHold"},
    )
    held = await client.call("certificateauthority.get_instance", root["id"])
    released = await client.call(
        "certificateauthority.update", inter["id"], {"revoked": False}
    )
    parent = await client.call("certificateauthority.get_instance", root["id"])

    assert [r["reason"] for r in held["revoked_certificates"]] == ["certificateHold"]
    assert (released["revoked"], released["revoked_at"]) == (False, None)
    assert parent["revoked_certificates"] == []
    assert parent["crl_number"] == 3
    crl = x509.load_pem_x509_crl(parent["crl"].encode())
    assert len(list(crl)) == 0


async def test_delete_is_refused_while_the_ca_signed_something(client: Client) -> None:
    root = await make_root(client)
    inter = await make_intermediate(client, root["id"])
    leaf = await issue(client, inter["id"])
    before = await snapshot(client)

    refused = await expect_error(client, "certificateauthority.delete", inter["id"])
    refused_root = await expect_error(client, "certificateauthority.delete", root["id"])
    assert await snapshot(client) == before
    forced = await client.call("certificateauthority.delete", inter["id"], True)
    orphan = await client.call("certificate.get_instance", leaf["id"])
    missing = await expect_error(
        client, "certificateauthority.get_instance", inter["id"]
    )

    assert refused.code == -32004
    assert refused.message == (
        "certificate authority 'inter' signed certificate 'leaf'; "
        "delete those first or pass force=true"
    )
    assert "certificate authority 'inter'" in refused_root.message
    assert forced is True
    assert (orphan["signedby"], orphan["issuer"], orphan["can_be_revoked"]) == (
        None,
        "external",
        False,
    )
    assert missing.code == -32003
    assert await client.call("certificateauthority.delete", root["id"]) is True
    assert await client.call("certificateauthority.query") == []
