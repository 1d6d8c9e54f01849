"""Every drop-down of the three PKI screens has a choices method with exact values."""

from __future__ import annotations

from certd.client import Client
from certd.pki.profiles import ca_profiles, certificate_profiles, csr_profiles


async def test_profiles_are_the_shipped_presets(client: Client) -> None:
    profiles = await client.call("certificate.profiles")
    csr = await client.call("certificate.csr_profiles")
    ca = await client.call("certificateauthority.profiles")

    assert profiles == certificate_profiles()
    assert csr == csr_profiles()
    assert ca == ca_profiles()
    assert list(profiles) == [
        "HTTPS RSA Certificate",
        "HTTPS ECC Certificate",
        "TLS Client Certificate",
        "OpenVPN Server Certificate",
        "OpenVPN Client Certificate",
    ]
    assert list(ca) == ["Root CA", "Intermediate CA"]
    https = profiles["HTTPS RSA Certificate"]
    assert (https["key_type"], https["key_length"], https["digest_algorithm"]) == (
        "RSA",
        2048,
        "SHA256",
    )
    assert https["lifetime"] == 199
    assert https["cert_extensions"]["ExtendedKeyUsage"] == {
        "enabled": True,
        "usages": ["SERVER_AUTH"],
        "extension_critical": False,
    }
    assert "lifetime" not in csr["HTTPS RSA Certificate"]
    assert ca["Intermediate CA"]["cert_extensions"]["BasicConstraints"] == {
        "enabled": True,
        "ca": True,
        "path_length": 0,
        "extension_critical": True,
    }


async def test_key_and_digest_choices(client: Client) -> None:
    assert await client.call("certificate.key_type_choices") == {
        "RSA": "RSA",
        "EC": "ECDSA",
        "ED25519": "Ed25519",
    }
    assert await client.call("certificate.key_length_choices") == {
        "2048": "2048 bits",
        "3072": "3072 bits",
        "4096": "4096 bits",
    }
    assert await client.call("certificate.ec_curve_choices") == {
        "SECP256R1": "NIST P-256",
        "SECP384R1": "NIST P-384",
        "SECP521R1": "NIST P-521",
    }
    assert await client.call("certificate.digest_algorithm_choices") == {
        "SHA256": "SHA-256",
        "SHA384": "SHA-384",
        "SHA512": "SHA-512",
    }


async def test_country_and_extended_key_usage_choices(client: Client) -> None:
    countries = await client.call("certificate.country_choices")
    usages = await client.call("certificate.extended_key_usage_choices")

    assert len(countries) == 249
    assert countries["DE"] == "Germany"
    assert countries["US"] == "United States of America"
    assert all(len(code) == 2 and code.isupper() for code in countries)
    assert list(usages) == [
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
    assert usages["CLIENT_AUTH"] == "TLS Web Client Authentication (1.3.6.1.5.5.7.3.2)"


async def test_create_type_choices(client: Client) -> None:
    assert await client.call("certificate.create_type_choices") == {
        "CERTIFICATE_CREATE_INTERNAL": "Internal Certificate",
        "CERTIFICATE_CREATE_IMPORTED": "Import Certificate",
        "CERTIFICATE_CREATE_CSR": "Certificate Signing Request",
        "CERTIFICATE_CREATE_IMPORTED_CSR": "Import Certificate Signing Request",
        "CERTIFICATE_CREATE_ACME": "ACME Certificate",
    }
    assert await client.call("certificateauthority.create_type_choices") == {
        "CA_CREATE_INTERNAL": "Internal CA",
        "CA_CREATE_INTERMEDIATE": "Intermediate CA",
        "CA_CREATE_IMPORTED": "Import CA",
    }


async def test_crl_and_acme_reasons_share_the_rfc_5280_names(
    client: Client,
) -> None:
    crl = await client.call("certificateauthority.crl_reason_choices")
    acme = await client.call("certificate.revocation_reason_choices")

    assert list(crl) == [
        "unspecified",
        "keyCompromise",
        "cACompromise",
        "affiliationChanged",
        "superseded",
        "cessationOfOperation",
        "certificateHold",
        "privilegeWithdrawn",
        "aACompromise",
    ]
    assert crl["keyCompromise"] == "Key compromise"
    # ACME takes a subset of the same names, with their codes (RFC 8555 §7.6).
    assert acme == {
        "unspecified": 0,
        "keyCompromise": 1,
        "affiliationChanged": 3,
        "superseded": 4,
        "cessationOfOperation": 5,
    }
    assert set(acme) <= set(crl)


async def test_choice_methods_are_readonly_and_listed(client: Client) -> None:
    document = await client.call("rpc.discover")
    methods = {m["name"]: m for m in document["methods"]}
    names = [
        "certificate.profiles",
        "certificate.csr_profiles",
        "certificate.country_choices",
        "certificate.key_type_choices",
        "certificate.key_length_choices",
        "certificate.ec_curve_choices",
        "certificate.digest_algorithm_choices",
        "certificate.extended_key_usage_choices",
        "certificate.create_type_choices",
        "certificateauthority.profiles",
        "certificateauthority.create_type_choices",
        "certificateauthority.crl_reason_choices",
    ]

    assert all(methods[name]["x-readonly"] for name in names)
    assert not methods["certificate.export"]["x-readonly"]
    assert methods["certificate.create"]["x-job"]
    for name in (
        "certificateauthority.create",
        "certificateauthority.update",
        "certificateauthority.delete",
        "certificateauthority.ca_sign_csr",
        "certificateauthority.query",
        "certificateauthority.get_instance",
    ):
        assert name in methods
