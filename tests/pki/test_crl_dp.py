"""cRLDistributionPoints: named by what a CA of ours signs, and put in on renewal."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certd.errors import PkiError
from certd.pki.extensions import (
    crl_distribution_points,
    crl_paths,
    crl_url,
    extensions_dict,
)
from certd.pki.keys import private_key_to_pem
from certd.pki.sign import build_certificate, create_intermediate_ca, sign_csr
from certd.renewal.resign import resign
from tests.pki.conftest import (
    CA_EXTENSIONS,
    LEAF_EXTENSIONS,
    NOW,
    Issued,
    MakeCa,
    MakeCert,
    MakeKey,
    cn,
)

URL = "http://pki.example.lan/crl/issuing.crl"


def crl_uris(cert: x509.Certificate) -> list[str] | None:
    """The URIs of the one distribution point, None without the extension."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    except x509.ExtensionNotFound:
        return None
    assert ext.critical is False
    assert len(ext.value) == 1
    point = ext.value[0]
    assert (point.relative_name, point.reasons, point.crl_issuer) == (None, None, None)
    assert point.full_name is not None
    return [name.value for name in point.full_name]


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def csr_for(make_key: MakeKey, *extensions: x509.ExtensionType) -> str:
    key = make_key("EC", fresh=True)
    builder = x509.CertificateSigningRequestBuilder().subject_name(cn("a.example"))
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.DNSName("a.example")]), critical=False
    )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_crl_url_is_the_served_der_path_under_the_base() -> None:
    assert crl_paths(7) == ("/crl/by-id/7.crl", "/crl/by-id/7.pem")
    assert (
        crl_url("http://pki.example.lan", 7) == "http://pki.example.lan/crl/by-id/7.crl"
    )
    # A reverse proxy may publish the daemon under a prefix.
    assert crl_url("https://proxy.example.lan:8443/pki/", 12) == (
        "https://proxy.example.lan:8443/pki/crl/by-id/12.crl"
    )


def test_the_extension_has_one_uri_and_is_not_critical() -> None:
    ext, critical = crl_distribution_points(URL)

    assert critical is False
    assert isinstance(ext, x509.CRLDistributionPoints)
    assert [p.full_name for p in ext] == [[x509.UniformResourceIdentifier(URL)]]


def test_a_signed_certificate_names_the_crl(make_ca: MakeCa, make_key: MakeKey) -> None:
    root = make_ca()
    key = make_key("EC")

    def leaf(**crl: str) -> x509.Certificate:
        return build_certificate(
            subject_key_public=key.public_key(),
            subject=cn("a.example"),
            san=["DNS:a.example"],
            extensions=LEAF_EXTENSIONS,
            issuer_cert=root.cert,
            issuer_key=root.key,
            digest="SHA256",
            lifetime_days=30,
            now=NOW,
            **crl,
        )

    named, unnamed = leaf(crl_url=URL), leaf()

    assert crl_uris(named) == [URL]
    assert extensions_dict(named.extensions)["CRLDistributionPoints"][
        "distribution_points"
    ] == [
        {
            "full_name": [f"URI:{URL}"],
            "relative_name": None,
            "reasons": None,
            "crl_issuer": None,
        }
    ]
    assert crl_uris(unnamed) is None
    assert crl_uris(root.cert) is None


def test_a_self_signed_certificate_names_no_crl(make_key: MakeKey) -> None:
    key = make_key("EC")

    with pytest.raises(PkiError) as caught:
        build_certificate(
            subject_key_public=key.public_key(),
            subject=cn("root"),
            san=[],
            extensions=CA_EXTENSIONS,
            issuer_cert=None,
            issuer_key=key,
            digest="SHA256",
            lifetime_days=365,
            now=NOW,
            crl_url=URL,
        )

    assert "self-signed" in caught.value.message


def test_an_intermediate_names_its_parents_crl(
    make_ca: MakeCa, make_key: MakeKey
) -> None:
    root = make_ca()

    inter = create_intermediate_ca(
        key=make_key("EC", fresh=True),
        subject=cn("issuing"),
        extensions=CA_EXTENSIONS,
        parent_cert=root.cert,
        parent_key=root.key,
        digest="SHA256",
        lifetime_days=365,
        now=NOW,
        crl_url="http://pki.example.lan/crl/root.crl",
    )

    assert crl_uris(inter) == ["http://pki.example.lan/crl/root.crl"]


def test_a_csr_cannot_choose_the_crl(make_ca: MakeCa, make_key: MakeKey) -> None:
    root = make_ca()
    asked = x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                [x509.UniformResourceIdentifier("http://evil.example/x.crl")],
                None,
                None,
                None,
            )
        ]
    )
    csr = x509.load_pem_x509_csr(csr_for(make_key, asked).encode())

    named = sign_csr(
        csr, root.cert, root.key, LEAF_EXTENSIONS, 30, "SHA256", NOW, crl_url=URL
    )
    unnamed = sign_csr(csr, root.cert, root.key, LEAF_EXTENSIONS, 30, "SHA256", NOW)

    assert crl_uris(named) == [URL]
    assert crl_uris(unnamed) is None


def _renew(old: Issued, ca: Issued, csr_pem: str, url: str | None) -> x509.Certificate:
    chain = resign(
        pem(old.cert) + pem(ca.cert),
        csr_pem,
        pem(ca.cert),
        private_key_to_pem(ca.key),
        now=NOW + dt.timedelta(days=10),
        crl_url=url,
    )
    return x509.load_pem_x509_certificates(chain.encode())[0]


def test_a_renewal_puts_in_the_current_crl(
    make_ca: MakeCa, make_cert: MakeCert, make_key: MakeKey
) -> None:
    ca = make_ca()
    old_url = "http://old.example.lan/crl/issuing.crl"
    without = make_cert(issuer=ca)
    key = make_key("EC")
    with_old = Issued(
        build_certificate(
            subject_key_public=key.public_key(),
            subject=cn("a.example"),
            san=["DNS:a.example"],
            extensions=LEAF_EXTENSIONS,
            issuer_cert=ca.cert,
            issuer_key=ca.key,
            digest="SHA256",
            lifetime_days=90,
            now=NOW,
            crl_url=old_url,
        ),
        key,
    )
    csr_pem = csr_for(make_key)

    added = _renew(without, ca, csr_pem, URL)
    replaced = _renew(with_old, ca, csr_pem, URL)
    kept = _renew(with_old, ca, csr_pem, None)
    still_none = _renew(without, ca, csr_pem, None)

    assert crl_uris(added) == [URL]
    assert crl_uris(replaced) == [URL]
    assert crl_uris(kept) == [old_url]
    assert crl_uris(still_none) is None
    # Every other extension of the old leaf is there once, as before.
    for renewed, old in ((added, without), (replaced, with_old)):
        assert sorted(e.oid.dotted_string for e in renewed.extensions) == sorted(
            {e.oid.dotted_string for e in old.cert.extensions}
            | {x509.CRLDistributionPoints.oid.dotted_string}
        )
        assert renewed.extensions.get_extension_for_class(
            x509.ExtendedKeyUsage
        ) == old.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
