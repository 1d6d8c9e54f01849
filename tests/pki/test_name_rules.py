"""A CSR's names, a CA's name constraints, path lengths and start: what signing refuses."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from certd.errors import PkiError, ValidationError
from certd.pki.constraints import (
    check_issuers_valid,
    check_name_constraints,
    check_path_lengths,
)
from certd.pki.keys import PrivateKey
from certd.pki.names import check_general_name, check_requested_names, parse_san
from certd.pki.sign import build_certificate, check_csr_names, sign_csr
from tests.pki.conftest import (
    CA_EXTENSIONS,
    LEAF_EXTENSIONS,
    NOW,
    Issued,
    MakeCa,
    MakeKey,
    OpenSSL,
    cn,
)

BAD_NAMES: list[tuple[x509.GeneralName, str]] = [
    (x509.DNSName("*"), "wildcard must be the whole leftmost label"),
    (x509.DNSName("*.*.example.com"), "wildcard must be the whole leftmost label"),
    (x509.DNSName("a..b"), "not a valid DNS name"),
    (x509.DNSName("has space.example.com"), "not a valid DNS name"),
    (x509.DNSName("a" * 300 + ".example.com"), "(312 characters)"),
    (x509.DNSName(" a.example"), "surrounding spaces"),
    (x509.IPAddress(ipaddress.ip_network("10.0.0.0/8")), "IP:10.0.0.0/8 is a network"),
    (x509.RFC822Name("not-an-address"), "is not an e-mail address"),
    (x509.UniformResourceIdentifier("file:///etc/passwd"), "a file: URI"),
    (x509.UniformResourceIdentifier("https:///no-host"), "must name a host"),
    (x509.UniformResourceIdentifier("https://bad host/"), "without spaces"),
    (x509.UniformResourceIdentifier("https://-bad-/"), "neither a DNS name"),
    (x509.UniformResourceIdentifier("relative/path"), "not an absolute URI"),
    (x509.DirectoryName(cn("x")), "DirectoryName entry is not accepted"),
    (
        x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x01a"),
        "OtherName entry is not accepted",
    ),
    (
        x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4")),
        "RegisteredID entry is not accepted",
    ),
]


def csr_with(key: PrivateKey, names: list[x509.GeneralName], common: str = "x") -> Any:
    builder = x509.CertificateSigningRequestBuilder().subject_name(cn(common))
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=False
        )
    return builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]


def constrained_ca(
    make_key: MakeKey,
    *,
    permitted: list[x509.GeneralName] | None = None,
    excluded: list[x509.GeneralName] | None = None,
    parent: Issued | None = None,
    name: str = "Constrained CA",
    not_before: dt.datetime = NOW - dt.timedelta(days=30),
    path_length: int | None = None,
) -> Issued:
    """A CA carrying NameConstraints, built directly with cryptography."""
    key = make_key("EC", fresh=True)
    builder = (
        x509.CertificateBuilder()
        .subject_name(cn(name))
        .issuer_name(parent.cert.subject if parent else cn(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(True, path_length), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
            critical=False,
        )
    )
    if permitted is not None or excluded is not None:
        builder = builder.add_extension(
            x509.NameConstraints(permitted, excluded), critical=True
        )
    if parent is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                parent.key.public_key()  # type: ignore[arg-type]
            ),
            critical=False,
        )
    signer = parent.key if parent else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)  # type: ignore[arg-type]


def sign(
    ca: Issued, names: list[str], *, chain: Sequence[x509.Certificate] = ()
) -> x509.Certificate:
    return build_certificate(
        subject_key_public=ca.key.public_key(),
        subject=cn("leaf"),
        san=names,
        extensions=LEAF_EXTENSIONS,
        issuer_cert=ca.cert,
        issuer_key=ca.key,
        digest="SHA256",
        lifetime_days=30,
        now=NOW,
        issuer_chain=chain,
    )


# --- a CSR's names --------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), BAD_NAMES)
def test_a_name_create_would_refuse_is_refused(
    name: x509.GeneralName, expected: str
) -> None:
    with pytest.raises(ValueError) as caught:
        check_general_name(name)

    assert expected in str(caught.value)
    assert len(str(caught.value)) < 400


def test_good_names_come_back_in_issued_form() -> None:
    names = [
        x509.DNSName("WWW.Example.com."),
        x509.DNSName("*.example.com"),
        x509.DNSName("xn--bcher-kva.example"),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
        x509.RFC822Name("Ops@Example.COM"),
        x509.UniformResourceIdentifier("spiffe://example.org/ns/a"),
        x509.UniformResourceIdentifier("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"),
    ]

    assert [n.value for n in check_requested_names(names)] == [
        "www.example.com",
        "*.example.com",
        "xn--bcher-kva.example",
        ipaddress.ip_address("2001:db8::1"),
        "Ops@example.com",
        "spiffe://example.org/ns/a",
        "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
    ]


def test_every_bad_entry_is_reported_with_its_position() -> None:
    names = [x509.DNSName("ok.example"), *(name for name, _ in BAD_NAMES)]
    names.append(x509.DNSName("OK.example"))

    with pytest.raises(ValidationError) as caught:
        check_requested_names(names, "csr")

    messages = [e.message for e in caught.value.errors]
    assert {e.field for e in caught.value.errors} == {"csr"}
    assert len(messages) == len(BAD_NAMES) + 1
    assert messages[0].startswith("subjectAltName entry 1: ")
    assert messages[-1] == (
        f"subjectAltName entry {len(names) - 1}: 'DNS:ok.example' repeats entry 0"
    )


def test_create_refuses_the_same_uris() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_san(
            ["URI:file:///etc/passwd", "URI:https:///x", "URI:https://a.example/"]
        )

    assert [e.field for e in caught.value.errors] == ["san.0", "san.1"]


def test_sign_csr_refuses_what_create_refuses(
    make_ca: MakeCa, make_key: MakeKey
) -> None:
    ca = make_ca()
    csr = csr_with(make_key("EC"), [x509.DNSName("a.example"), x509.DNSName("*")])

    with pytest.raises(ValidationError) as caught:
        sign_csr(csr, ca.cert, ca.key, LEAF_EXTENSIONS, 30, "SHA256", NOW)
    with pytest.raises(ValidationError) as checked:
        check_csr_names(csr, "data.CSR")

    assert [(e.field, e.message) for e in caught.value.errors] == [
        (
            "san",
            "subjectAltName entry 1: DNS: '*': a wildcard must be the whole "
            "leftmost label, as in *.example.com",
        ),
    ]
    assert [e.field for e in checked.value.errors] == ["data.CSR"]


def test_sign_csr_issues_names_in_their_checked_form(
    make_ca: MakeCa, make_key: MakeKey
) -> None:
    ca = make_ca()
    csr = csr_with(make_key("EC"), [x509.DNSName("App.Example.COM.")])

    cert = sign_csr(csr, ca.cert, ca.key, LEAF_EXTENSIONS, 30, "SHA256", NOW)

    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["app.example.com"]


# --- name constraints --------------------------------------------------------------


def test_names_outside_the_permitted_subtree_are_refused(make_key: MakeKey) -> None:
    ca = constrained_ca(make_key, permitted=[x509.DNSName("good.test")])

    inside = sign(ca, ["good.test", "a.b.good.test", "*.good.test"])
    with pytest.raises(ValidationError) as caught:
        sign(ca, ["a.good.test", "evil.example.com", "notgood.test"])

    assert inside.subject == cn("leaf")
    assert [e.field for e in caught.value.errors] == ["san", "san"]
    assert caught.value.errors[0].message == (
        "'DNS:evil.example.com' is outside the permitted subtrees (DNS:good.test) "
        "of certificate authority 'CN=Constrained CA' (RFC 5280 4.2.1.10)"
    )
    assert "'DNS:notgood.test'" in caught.value.errors[1].message


def test_a_wildcard_reaching_an_excluded_name_is_refused(make_key: MakeKey) -> None:
    ca = constrained_ca(make_key, excluded=[x509.DNSName("bad.example.com")])

    sign(ca, ["*.other.example.com", "example.com"])
    for name in ("*.example.com", "bad.example.com", "x.bad.example.com"):
        with pytest.raises(ValidationError, match="excluded subtree"):
            sign(ca, [name])


def test_ip_email_and_uri_constraints(make_key: MakeKey) -> None:
    ca = constrained_ca(
        make_key,
        permitted=[
            x509.IPAddress(ipaddress.ip_network("10.0.0.0/8")),
            x509.RFC822Name(".good.test"),
            x509.UniformResourceIdentifier("api.good.test"),
        ],
        excluded=[x509.IPAddress(ipaddress.ip_network("10.9.0.0/16"))],
    )

    sign(ca, ["IP:10.1.2.3", "ops@mail.good.test", "URI:https://api.good.test/x"])
    refused = [
        "IP:10.9.0.1",
        "IP:192.0.2.1",
        "IP:::ffff:10.1.2.3",
        "ops@good.test",
        "URI:https://www.good.test/",
        "URI:urn:example:a",
    ]
    for name in refused:
        with pytest.raises(ValidationError) as caught:
            sign(ca, [name])
        assert caught.value.errors[0].field == "san", name


def test_a_host_name_common_name_and_the_subject_are_checked(
    make_key: MakeKey,
) -> None:
    org = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Good")])
    ca = constrained_ca(
        make_key, permitted=[x509.DNSName("good.test"), x509.DirectoryName(org)]
    )
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Good"),
            x509.NameAttribute(NameOID.COMMON_NAME, "evil.example.com"),
        ]
    )

    check_name_constraints(
        x509.Name([*org, x509.NameAttribute(NameOID.COMMON_NAME, "My Server")]),
        [x509.DNSName("a.good.test")],
        [ca.cert],
    )
    with pytest.raises(ValidationError) as caught:
        check_name_constraints(subject, [x509.DNSName("a.good.test")], [ca.cert])
    with pytest.raises(ValidationError) as outside:
        check_name_constraints(cn("my server"), [], [ca.cert])
    # A common name without a dot is not read as a host name.
    check_name_constraints(
        x509.Name([*org, x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]),
        [],
        [ca.cert],
    )

    assert [e.field for e in caught.value.errors] == ["common"]
    assert "DNS:evil.example.com" in caught.value.errors[0].message
    assert "DirName:CN=my server" in outside.value.errors[0].message


def test_constraints_of_a_ca_above_the_issuer_bind_too(make_key: MakeKey) -> None:
    root = constrained_ca(make_key, permitted=[x509.DNSName("good.test")], name="Root")
    inter = constrained_ca(make_key, parent=root, name="Inter")

    sign(inter, ["evil.example.com"])  # without the chain only the issuer is known
    with pytest.raises(ValidationError, match="'CN=Root'"):
        sign(inter, ["evil.example.com"], chain=[inter.cert, root.cert])


def test_openssl_agrees_with_the_constraint_check(
    make_key: MakeKey, openssl: OpenSSL
) -> None:
    ca = constrained_ca(make_key, permitted=[x509.DNSName("good.test")])
    good = sign(ca, ["www.good.test"])
    # Built around the check, to see that a relying party refuses it too.
    evil = (
        x509.CertificateBuilder(
            issuer_name=ca.cert.subject,
            subject_name=cn("leaf"),
            public_key=ca.key.public_key(),  # type: ignore[arg-type]
            serial_number=2,
            not_valid_before=NOW,
            not_valid_after=NOW + dt.timedelta(days=1),
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("evil.example.com")]),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    ca_pem = openssl.write("ca.pem", ca.cert.public_bytes(Encoding.PEM))
    good_pem = openssl.write("good.pem", good.public_bytes(Encoding.PEM))
    evil_pem = openssl.write("evil.pem", evil.public_bytes(Encoding.PEM))
    at = str(int(NOW.timestamp()) + 3600)

    assert ": OK" in openssl.run("verify", "-attime", at, "-CAfile", ca_pem, good_pem)
    with pytest.raises(AssertionError, match="permitted subtree violation"):
        openssl.run("verify", "-attime", at, "-CAfile", ca_pem, evil_pem)


# --- directoryName constraints ----------------------------------------------------

EXAMPLE_ORG = x509.DirectoryName(
    x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Org")])
)


def org_name(*values: str | x509.NameAttribute, common: str = "leaf") -> x509.Name:
    """A subject of organizationName RDNs (or other attributes) then a common name."""
    attributes = [
        v if isinstance(v, x509.NameAttribute) else org_attribute(v) for v in values
    ]
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, common)])


def org_attribute(value: str) -> x509.NameAttribute:
    return x509.NameAttribute(NameOID.ORGANIZATION_NAME, value)


def raw_cert(
    subject: x509.Name, issuer: Issued, key: PrivateKey, *, ca: bool = False
) -> x509.Certificate:
    """A certificate built around certd's checks, for a relying party to judge."""
    return (
        x509.CertificateBuilder(
            issuer_name=issuer.cert.subject,
            subject_name=subject,
            public_key=key.public_key(),  # type: ignore[arg-type]
            serial_number=x509.random_serial_number(),
            not_valid_before=NOW,
            not_valid_after=NOW + dt.timedelta(days=1),
        )
        .add_extension(x509.BasicConstraints(ca, None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer.key.public_key()  # type: ignore[arg-type]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(issuer.key, hashes.SHA256())  # type: ignore[arg-type]
    )


def openssl_accepts(
    openssl: OpenSSL, root: Issued, chain: Sequence[x509.Certificate]
) -> bool:
    """Whether ``openssl verify`` accepts ``chain`` (leaf first) under ``root``."""
    root_pem = openssl.write("root.pem", root.cert.public_bytes(Encoding.PEM))
    args = ["-attime", str(int(NOW.timestamp()) + 3600), "-CAfile", str(root_pem)]
    if len(chain) > 1:
        untrusted = b"".join(c.public_bytes(Encoding.PEM) for c in chain[1:])
        args += ["-untrusted", str(openssl.write("untrusted.pem", untrusted))]
    leaf = openssl.write("leaf.pem", chain[0].public_bytes(Encoding.PEM))
    try:
        openssl.run("verify", *args, leaf)
    except AssertionError as exc:
        assert "subtree violation" in str(exc), exc
        return False
    return True


def certd_accepts(subject: x509.Name, issuers: Sequence[x509.Certificate]) -> bool:
    try:
        check_name_constraints(subject, [], issuers)
    except ValidationError as exc:
        assert [e.field for e in exc.errors] == ["common"] * len(exc.errors)
        return False
    return True


# The subject's attributes before its common name; whether it lies within the
# subtree O=Example Org.
DIRECTORY_CASES: list[tuple[tuple[str | x509.NameAttribute, ...], bool]] = [
    (("Example Org",), True),
    (("example  org",), True),
    (("  EXAMPLE\tORG ",), True),
    (
        (
            x509.NameAttribute(
                NameOID.ORGANIZATION_NAME, "EXAMPLE ORG", _ASN1Type.PrintableString
            ),
        ),
        True,
    ),
    (("example org", "Unit"), True),
    (("Other",), False),
    (("ExampleOrg",), False),
    (("Example Organisation",), False),
    ((x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Example Org"),), False),
    ((x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"), "Example Org"), False),
]


@pytest.mark.parametrize(("values", "within"), DIRECTORY_CASES)
def test_a_directory_subtree_matches_as_rfc_5280_and_openssl_do(
    make_key: MakeKey,
    openssl: OpenSSL,
    values: tuple[str | x509.NameAttribute, ...],
    within: bool,
) -> None:
    permitting = constrained_ca(make_key, permitted=[EXAMPLE_ORG])
    excluding = constrained_ca(make_key, excluded=[EXAMPLE_ORG], name="Excluding")
    subject = org_name(*values)
    key = make_key("EC")

    verdicts = {
        "permitted": (
            certd_accepts(subject, [permitting.cert]),
            openssl_accepts(openssl, permitting, [raw_cert(subject, permitting, key)]),
        ),
        "excluded": (
            certd_accepts(subject, [excluding.cert]),
            openssl_accepts(openssl, excluding, [raw_cert(subject, excluding, key)]),
        ),
    }

    assert verdicts == {
        "permitted": (within, within),
        "excluded": (not within, not within),
    }


def intermediate_named(make_key: MakeKey, root: Issued, organization: str) -> Issued:
    """A CA certificate ``CN=Inter,O=<organization>`` signed under ``root``."""
    key = make_key("EC", fresh=True)
    subject = org_name(organization, common="Inter")
    return Issued(ca_cert_under(root, subject, key.public_key()), key)


def ca_cert_under(
    root: Issued, subject: x509.Name, public_key: CertificatePublicKeyTypes
) -> x509.Certificate:
    """A 30-day CA certificate for ``subject`` signed by ``root``."""
    return build_certificate(
        subject_key_public=public_key,
        subject=subject,
        san=[],
        extensions=CA_EXTENSIONS,
        issuer_cert=root.cert,
        issuer_key=root.key,
        digest="SHA256",
        lifetime_days=30,
        now=NOW,
    )


def test_a_leaf_and_an_intermediate_sign_within_a_subtree_in_another_case(
    make_key: MakeKey, openssl: OpenSSL
) -> None:
    root = constrained_ca(make_key, permitted=[EXAMPLE_ORG], name="Root")

    def new_ca(organization: str) -> Issued:
        return intermediate_named(make_key, root, organization)

    inter = new_ca("example  org")
    leaf = build_certificate(
        subject_key_public=make_key("EC").public_key(),
        subject=org_name("EXAMPLE ORG"),
        san=["a.example"],
        extensions=LEAF_EXTENSIONS,
        issuer_cert=inter.cert,
        issuer_key=inter.key,
        digest="SHA256",
        lifetime_days=1,
        now=NOW,
        issuer_chain=[inter.cert, root.cert],
    )
    with pytest.raises(ValidationError) as caught:
        new_ca("Other")

    assert [(e.field, e.message) for e in caught.value.errors] == [
        (
            "common",
            "'DirName:CN=Inter,O=Other' is outside the permitted subtrees "
            "(DirName:O=Example Org) of certificate authority 'CN=Root' "
            "(RFC 5280 4.2.1.10)",
        )
    ]
    assert openssl_accepts(openssl, root, [leaf, inter.cert])
    # The intermediate certd refused, built anyway, is refused by openssl too.
    other = raw_cert(org_name("Other", common="Inter"), root, inter.key, ca=True)
    below_other = raw_cert(org_name("Example Org"), Issued(other, inter.key), inter.key)
    assert not openssl_accepts(openssl, root, [below_other, other])


def test_an_excluded_directory_subtree_binds_an_intermediate_too(
    make_key: MakeKey,
) -> None:
    root = constrained_ca(make_key, excluded=[EXAMPLE_ORG], name="Root")

    def new_ca(organization: str) -> x509.Certificate:
        return intermediate_named(make_key, root, organization).cert

    allowed = new_ca("Other")
    with pytest.raises(ValidationError) as caught:
        new_ca(" example   ORG")

    assert allowed.subject == org_name("Other", common="Inter")
    assert caught.value.errors[0].message == (
        "'DirName:CN=Inter,O=\\\\ example   ORG' falls within the excluded subtree "
        "DirName:O=Example Org of certificate authority 'CN=Root' (RFC 5280 4.2.1.10)"
    )


def test_letters_beyond_ascii_are_permitted_as_openssl_reads_them_and_excluded_as_rfc_4518_does(
    make_key: MakeKey, openssl: OpenSSL
) -> None:
    cafe = x509.DirectoryName(x509.Name([org_attribute("Café Org")]))
    permitting = constrained_ca(make_key, permitted=[cafe])
    excluding = constrained_ca(make_key, excluded=[cafe])
    upper = org_name("CAFÉ ORG")
    ascii_only = org_name("CAFé ORG")
    key = make_key("EC")

    # OpenSSL 3.0 lowers ASCII letters only, so it refuses CAFÉ under a
    # permitted Café; certd refuses it too rather than sign what it refuses.
    assert not openssl_accepts(openssl, permitting, [raw_cert(upper, permitting, key)])
    assert not certd_accepts(upper, [permitting.cert])
    assert openssl_accepts(openssl, permitting, [raw_cert(ascii_only, permitting, key)])
    assert certd_accepts(ascii_only, [permitting.cert])
    # caseIgnoreMatch folds É to é (RFC 4518 2.2): a verifier that prepares
    # names fully sees CAFÉ within an excluded Café, so certd refuses it.
    assert not certd_accepts(upper, [excluding.cert])
    assert not certd_accepts(ascii_only, [excluding.cert])
    assert certd_accepts(org_name("Other"), [excluding.cert])


# Spaces OpenSSL keeps significant in a name: it collapses ASCII white space
# only. U+001C is ASCII yet white space to str.split, not to OpenSSL.
WIDE_SPACES = ["\u00a0", "\u3000", "\u2003", "\u202f", "\u0085", "\u001c"]


@pytest.mark.parametrize("space", WIDE_SPACES)
def test_space_beyond_ascii_is_permitted_as_openssl_reads_it_and_excluded_widely(
    make_key: MakeKey, openssl: OpenSSL, space: str
) -> None:
    permitting = constrained_ca(make_key, permitted=[EXAMPLE_ORG])
    excluding = constrained_ca(make_key, excluded=[EXAMPLE_ORG], name="Excluding")
    subject = org_name(f"Example{space}Org")
    key = make_key("EC")

    assert not openssl_accepts(
        openssl, permitting, [raw_cert(subject, permitting, key)]
    )
    assert not certd_accepts(subject, [permitting.cert])
    # A verifier preparing names as RFC 4518 2.6 does maps this space to an
    # ordinary one and sees the name within the excluded subtree.
    assert not certd_accepts(subject, [excluding.cert])
    assert certd_accepts(org_name("Other"), [excluding.cert])


@pytest.mark.parametrize(
    "value", ["Example\tOrg", "Example  Org", "\vexample\f\r\nORG ", " Example Org"]
)
def test_ascii_space_is_collapsed_as_openssl_collapses_it(
    make_key: MakeKey, openssl: OpenSSL, value: str
) -> None:
    permitting = constrained_ca(make_key, permitted=[EXAMPLE_ORG])
    excluding = constrained_ca(make_key, excluded=[EXAMPLE_ORG], name="Excluding")
    subject = org_name(value)
    key = make_key("EC")

    assert openssl_accepts(openssl, permitting, [raw_cert(subject, permitting, key)])
    assert certd_accepts(subject, [permitting.cert])
    assert not certd_accepts(subject, [excluding.cert])


def test_a_bit_string_attribute_and_a_multi_valued_rdn_compare_exactly(
    make_key: MakeKey,
) -> None:
    unique = x509.NameAttribute(
        NameOID.X500_UNIQUE_IDENTIFIER, b"\x00\xab", _ASN1Type.BitString
    )
    ca = constrained_ca(
        make_key,
        permitted=[
            x509.DirectoryName(
                x509.Name(
                    [
                        x509.RelativeDistinguishedName(
                            [org_attribute("Example Org"), unique]
                        )
                    ]
                )
            )
        ],
    )

    def subject(*rdn: x509.NameAttribute) -> x509.Name:
        return x509.Name(
            [
                x509.RelativeDistinguishedName(rdn),
                x509.RelativeDistinguishedName([org_attribute("Unit")]),
            ]
        )

    swapped = subject(unique, org_attribute("EXAMPLE ORG"))
    other_bits = subject(
        org_attribute("Example Org"),
        x509.NameAttribute(
            NameOID.X500_UNIQUE_IDENTIFIER, b"\x00\xac", _ASN1Type.BitString
        ),
    )
    fewer = subject(org_attribute("Example Org"))

    assert certd_accepts(swapped, [ca.cert])
    assert not certd_accepts(other_bits, [ca.cert])
    assert not certd_accepts(fewer, [ca.cert])


# --- validity and path length ---------------------------------------------------


def test_a_ca_not_valid_yet_signs_nothing(make_key: MakeKey) -> None:
    ca = constrained_ca(make_key, not_before=NOW + dt.timedelta(days=100))

    with pytest.raises(PkiError, match="is not valid before 2026-09-09"):
        sign(ca, ["a.example"])
    with pytest.raises(PkiError, match="'CN=Constrained CA' is not valid before"):
        check_issuers_valid([ca.cert], NOW)


def test_backdating_stops_at_the_issuers_start(make_key: MakeKey) -> None:
    ca = constrained_ca(make_key, not_before=NOW - dt.timedelta(minutes=1))

    cert = sign(ca, ["a.example"])

    assert cert.not_valid_before_utc == ca.cert.not_valid_before_utc


def test_path_length_zero_allows_no_ca_below(
    make_ca: MakeCa, make_key: MakeKey, openssl: OpenSSL
) -> None:
    root = constrained_ca(make_key, name="Root", path_length=0)
    inter = constrained_ca(make_key, parent=root, name="Inter")

    check_path_lengths([root.cert])
    with pytest.raises(PkiError) as caught:
        check_path_lengths([inter.cert, root.cert])

    assert caught.value.message == (
        "'CN=Root' has path length 0: at most 0 CA certificate(s) may follow it, "
        "but 1 would (RFC 5280 4.2.1.9)"
    )
    # openssl refuses a leaf below that intermediate for the same reason.
    leaf = sign(inter, ["a.example"])
    root_pem = openssl.write("root.pem", root.cert.public_bytes(Encoding.PEM))
    inter_pem = openssl.write("inter.pem", inter.cert.public_bytes(Encoding.PEM))
    leaf_pem = openssl.write("leaf.pem", leaf.public_bytes(Encoding.PEM))
    with pytest.raises(AssertionError, match="path length constraint exceeded"):
        openssl.run(
            "verify",
            "-attime",
            str(int(NOW.timestamp()) + 3600),
            "-CAfile",
            root_pem,
            "-untrusted",
            inter_pem,
            leaf_pem,
        )


def test_path_length_counts_every_ca_below(make_key: MakeKey) -> None:
    root = constrained_ca(make_key, name="Root", path_length=1)
    one = constrained_ca(make_key, parent=root, name="One")
    two = constrained_ca(make_key, parent=one, name="Two")

    check_path_lengths([one.cert, root.cert])
    with pytest.raises(PkiError, match="'CN=Root' has path length 1"):
        check_path_lengths([two.cert, one.cert, root.cert])


def test_a_new_ca_is_held_to_the_path_length_of_every_ca_above(
    make_key: MakeKey,
) -> None:
    root = constrained_ca(make_key, name="Root", path_length=1)
    one = constrained_ca(make_key, parent=root, name="One")  # names no limit

    def new_ca(extensions: Any) -> x509.Certificate:
        return build_certificate(
            subject_key_public=make_key("EC", fresh=True).public_key(),
            subject=cn("Two"),
            san=[],
            extensions=extensions,
            issuer_cert=one.cert,
            issuer_key=one.key,
            digest="SHA256",
            lifetime_days=30,
            now=NOW,
            issuer_chain=[one.cert, root.cert],
        )

    with pytest.raises(PkiError, match="'CN=Root' has path length 1"):
        new_ca(CA_EXTENSIONS)
    # a leaf below One is fine: path lengths count CAs only
    leaf = new_ca(LEAF_EXTENSIONS)
    assert leaf.issuer == one.cert.subject


def test_an_issuer_that_is_no_ca_breaks_the_chain(make_ca: MakeCa) -> None:
    root = make_ca("Root")
    leaf = build_certificate(
        subject_key_public=root.key.public_key(),
        subject=cn("not a ca"),
        san=["a.example"],
        extensions=LEAF_EXTENSIONS,
        issuer_cert=root.cert,
        issuer_key=root.key,
        digest="SHA256",
        lifetime_days=30,
        now=NOW,
    )

    with pytest.raises(PkiError, match="'CN=not a ca' issued 'CN=x' but is not a CA"):
        check_path_lengths([cn_cert(root, "x"), leaf])
    assert CA_EXTENSIONS.is_ca


def cn_cert(root: Issued, common: str) -> x509.Certificate:
    """Any certificate named ``common``; its issuer does not matter here."""
    return ca_cert_under(root, cn(common), root.key.public_key())


def test_common_names_that_would_be_more_than_100_sans_are_refused(
    make_key: MakeKey,
) -> None:
    ca = constrained_ca(make_key)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"h{i}.example.com")
            for i in range(101)
        ]
    )

    with pytest.raises(ValidationError) as caught:
        build_certificate(
            subject_key_public=make_key("EC").public_key(),
            subject=subject,
            san=[],
            extensions=LEAF_EXTENSIONS,
            issuer_cert=ca.cert,
            issuer_key=ca.key,
            digest="SHA256",
            lifetime_days=1,
            now=NOW,
        )

    assert [(e.field, e.message) for e in caught.value.errors] == [
        (
            "common",
            "the common names would be the SAN, but 101 subject alternative names "
            "given; a certificate may carry at most 100, as at public CAs such as "
            "Let's Encrypt",
        )
    ]
