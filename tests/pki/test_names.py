"""Subject names and SAN parsing: every accepted shape and every refusal."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from certd.errors import ValidationError
from certd.pki.models import Subject
from certd.pki.names import build_name, name_fields, parse_san, san_strings


def test_build_name_orders_attributes_and_skips_empty() -> None:
    subject = Subject(
        country="DE",
        state="Bavaria",
        organization="Ex GmbH",
        common="host.example",
        email="ops@example.com",
    )

    name = build_name(subject)

    assert [(a.oid, a.value) for a in name] == [
        (NameOID.COUNTRY_NAME, "DE"),
        (NameOID.STATE_OR_PROVINCE_NAME, "Bavaria"),
        (NameOID.ORGANIZATION_NAME, "Ex GmbH"),
        (NameOID.COMMON_NAME, "host.example"),
        (NameOID.EMAIL_ADDRESS, "ops@example.com"),
    ]
    assert name.rfc4514_string() == (
        "1.2.840.113549.1.9.1=ops@example.com,CN=host.example,O=Ex GmbH,ST=Bavaria,C=DE"
    )


def test_build_name_of_empty_subject_is_empty() -> None:
    assert len(build_name(Subject())) == 0


def test_name_fields_reads_first_values() -> None:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "first"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "second"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Town"),
        ]
    )

    assert name_fields(name) == {
        "country": None,
        "state": None,
        "city": "Town",
        "organization": None,
        "organizational_unit": "first",
        "common": None,
        "email": None,
    }


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("a.example", x509.DNSName("a.example")),
        ("DNS:a.example", x509.DNSName("a.example")),
        ("dns:A.Example.", x509.DNSName("a.example")),
        ("*.example.com", x509.DNSName("*.example.com")),
        ("localhost", x509.DNSName("localhost")),
        ("bücher.example", x509.DNSName("xn--bcher-kva.example")),
        ("DNS:\uff21\uff22\uff23.example", x509.DNSName("abc.example")),
        ("*.münchen.de", x509.DNSName("*.xn--mnchen-3ya.de")),
        ("10.1.2.3", x509.IPAddress(ipaddress.ip_address("10.1.2.3"))),
        ("IP:10.1.2.3", x509.IPAddress(ipaddress.ip_address("10.1.2.3"))),
        ("IP Address:192.0.2.1", x509.IPAddress(ipaddress.ip_address("192.0.2.1"))),
        ("2001:db8::1", x509.IPAddress(ipaddress.ip_address("2001:db8::1"))),
        ("[::1]", x509.IPAddress(ipaddress.ip_address("::1"))),
        ("ip:2001:DB8:0:0::7", x509.IPAddress(ipaddress.ip_address("2001:db8::7"))),
        ("ops@example.com", x509.RFC822Name("ops@example.com")),
        ("email:ops@Bücher.example", x509.RFC822Name("ops@xn--bcher-kva.example")),
        (
            "EMAIL:first.last+tag@example.com",
            x509.RFC822Name("first.last+tag@example.com"),
        ),
        (
            "https://a.example/x?y=1",
            x509.UniformResourceIdentifier("https://a.example/x?y=1"),
        ),
        ("URI:spiffe://td/ns/a", x509.UniformResourceIdentifier("spiffe://td/ns/a")),
        (
            "uri:urn:uuid:f81d4fae-7dec",
            x509.UniformResourceIdentifier("urn:uuid:f81d4fae-7dec"),
        ),
    ],
)
def test_parse_san_accepts_each_shape(entry: str, expected: x509.GeneralName) -> None:
    assert parse_san([entry]) == [expected]


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("", "empty entry"),
        ("   ", "empty entry"),
        ("DNS:", "empty DNS name"),
        ("bad_name.example", "is not a valid DNS name"),
        ("-lead.example", "is not a valid DNS name"),
        ("a..example", "is not a valid DNS name"),
        ("x" * 64 + ".example", "is not a valid DNS name"),
        (".".join(["abcdefghi"] * 26), "Domain too long"),
        ("f*.example", "a wildcard must be the whole leftmost label"),
        ("a.*.example", "a wildcard must be the whole leftmost label"),
        ("*.*.example", "a wildcard must be the whole leftmost label"),
        ("*", "a wildcard must be the whole leftmost label"),
        ("1.2.3", "is neither a valid DNS name nor an IP address"),
        ("999.1.1.1", "is neither a valid DNS name nor an IP address"),
        ("IP:a.example", "is not an IPv4 or IPv6 address"),
        ("IP:10.0.0.0/8", "is not an IPv4 or IPv6 address"),
        ("fe80::1%eth0", "an IPv6 zone index cannot go in a certificate"),
        ("email:nobody", "is not an e-mail address"),
        ("email:a b@example.com", "must be plain ASCII without spaces"),
        ("email:jörg@example.com", "must be plain ASCII without spaces"),
        ("email:a@*.example", "a wildcard is not allowed here"),
        ("URI:relative/path", "is not an absolute URI"),
        ("URI:https://a.example/ä", "a URI must be ASCII without spaces"),
        ("URI:https://a.example/a b", "a URI must be ASCII without spaces"),
        ("RID:1.2.3", "unknown type 'RID'"),
        ("otherName:1.2;UTF8:x", "unknown type 'otherName'"),
        ("host:8443", "unknown type 'host'"),
    ],
)
def test_parse_san_refuses_with_field_path(entry: str, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_san(["ok.example", entry])

    [error] = info.value.errors
    assert error.field == "san.1"
    assert reason in error.message


def test_parse_san_reports_every_bad_entry_and_duplicates() -> None:
    with pytest.raises(ValidationError) as info:
        parse_san(["a.example", "bad_one", "A.EXAMPLE", "IP:10.0.0.1", "10.0.0.1"])

    assert [(e.field, e.message) for e in info.value.errors] == [
        (
            "san.1",
            "'bad_one' is not a valid DNS name: Codepoint U+005F not allowed "
            "at position 4 in 'bad_one'",
        ),
        ("san.2", "DNS:a.example repeats san.0"),
        ("san.4", "IP:10.0.0.1 repeats san.3"),
    ]


def test_parse_san_never_turns_a_typed_entry_into_a_dns_name() -> None:
    names = parse_san(["email:a@b.example", "URI:https://c.example", "IP:::1"])

    assert [type(n) for n in names] == [
        x509.RFC822Name,
        x509.UniformResourceIdentifier,
        x509.IPAddress,
    ]


def test_san_strings_types_every_general_name() -> None:
    names = [
        x509.DNSName("a.example"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
        x509.RFC822Name("x@a.example"),
        x509.UniformResourceIdentifier("https://a.example/"),
        x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "d")])),
        x509.RegisteredID(ObjectIdentifier("1.2.3.4")),
        x509.OtherName(ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x01x"),
    ]

    assert san_strings(names) == [
        "DNS:a.example",
        "IP:10.0.0.1",
        "IP:2001:db8::1",
        "email:x@a.example",
        "URI:https://a.example/",
        "DirName:CN=d",
        "RID:1.2.3.4",
        "otherName:1.3.6.1.4.1.311.20.2.3;0C0178",
    ]


def test_san_strings_round_trip_through_parse_san() -> None:
    entries = ["DNS:a.example", "IP:10.0.0.1", "email:x@a.example", "URI:urn:x:y"]

    assert san_strings(parse_san(entries)) == entries
