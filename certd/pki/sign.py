"""Issuing certificates: self-signed roots, intermediates and signed CSRs."""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from collections.abc import Sequence

from cryptography import x509

from certd.errors import PkiError, ValidationError
from certd.pki.constraints import (
    check_issuers_valid,
    check_name_constraints,
    check_path_lengths,
)
from certd.pki.extensions import (
    build_extensions,
    crl_distribution_points,
    san_extension,
)
from certd.pki.keys import (
    PrivateKey,
    PublicKey,
    check_private_key,
    hash_algorithm,
    public_key_der,
)
from certd.pki.models import CertExtensions, Digest
from certd.pki.names import check_requested_names, common_name_san, parse_san
from certd.pki.syntax import check_host_address, check_san_count

# Backdating absorbs clock skew between the signer and relying parties.
CLOCK_SKEW = dt.timedelta(minutes=5)


def random_serial() -> int:
    """A positive serial with 64+ bits from a CSPRNG (CA/B BR 7.1).

    Bounded below 2**159 so the DER INTEGER fits the 20 octets of RFC 5280
    4.1.2.2 even with a sign byte; the top bit is forced so every serial has
    the same length and at least 64 bits of entropy survive.
    """
    return secrets.randbits(158) | (1 << 157)


def build_certificate(
    *,
    subject_key_public: PublicKey,
    subject: x509.Name,
    san: Sequence[str] | Sequence[x509.GeneralName],
    extensions: CertExtensions,
    issuer_cert: x509.Certificate | None,
    issuer_key: PrivateKey,
    digest: Digest | None,
    lifetime_days: int,
    now: dt.datetime,
    serial: int | None = None,
    crl_url: str | None = None,
    issuer_chain: Sequence[x509.Certificate] = (),
) -> x509.Certificate:
    """Issue a certificate; ``issuer_cert=None`` makes it self-signed.

    The certificate starts five minutes before ``now`` and must end no later
    than its issuer: a longer lifetime is refused rather than silently cut.
    A leaf that may serve TLS and has no SAN entries gets its common name as
    one when that is a host name or an IP address. With ``crl_url`` it names
    its issuer's CRL in a cRLDistributionPoints extension.

    SAN entries given as general names (a CSR's) are checked by the rules of
    string entries. The names must lie within the NameConstraints of the
    issuer and of the CAs above it in ``issuer_chain`` (issuer first, as a CA
    row stores it), none of which may start after ``now``.

    Raises:
        PkiError: the issuer cannot sign it (not a CA, not valid yet, path
            length exhausted, wrong key), or ``crl_url`` is given for a
            self-signed certificate.
        ValidationError: a bad SAN entry, a name the issuers' constraints
            forbid (at ``san``, ``common`` or ``email``), no subject and no
            SAN, or a ``lifetime`` below one day, past 9999 or past the
            issuer's end.
    """
    names = _general_names(san)
    requested = list(names)
    if not names and not extensions.is_ca and extensions.may_serve_tls:
        # RFC 9525 (as browsers already did) drops the CN fallback of RFC 6125
        # 6.4.4: a server named by its CN alone would match no host. A CA, or
        # a certificate limited to other uses (a client's), names no host.
        names = common_name_san(subject)
        _check_common_name_count(names, "common")
        _check_common_name_hosts(names)
    if not names and len(subject) == 0:
        raise ValidationError.single(
            "san", "give a common name or at least one subject alternative name"
        )
    check_private_key(issuer_key)
    not_before, not_after = _validity(lifetime_days, now)

    if issuer_cert is None:
        if public_key_der(issuer_key) != public_key_der(subject_key_public):
            raise PkiError("a self-signed certificate must be signed by its own key")
        if crl_url is not None:
            # A trust anchor is not checked against any CRL (RFC 5280 6.1).
            raise PkiError("a self-signed certificate has no issuer CRL to name")
        issuer_name = subject
        issuer_public = subject_key_public
    else:
        issuers = [issuer_cert, *(c for c in issuer_chain if c != issuer_cert)]
        check_issuers_valid(issuers, now)
        _check_issuer(issuer_cert, issuer_key, extensions, not_after, lifetime_days)
        check_name_constraints(subject, requested, issuers)
        # Backdating must not reach before the issuer's own start.
        not_before = max(not_before, issuer_cert.not_valid_before_utc)
        issuer_name = issuer_cert.subject
        issuer_public = issuer_cert.public_key()  # type: ignore[assignment]

    serial = serial if serial is not None else random_serial()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(subject_key_public)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for ext, critical in build_extensions(extensions):
        builder = builder.add_extension(ext, critical=critical)
    if names:
        ext, critical = san_extension(names, subject)
        builder = builder.add_extension(ext, critical=critical)
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(subject_key_public), critical=False
    )
    aki = _authority_key_identifier(
        extensions, issuer_cert, issuer_public, issuer_name, serial
    )
    if aki is not None:
        builder = builder.add_extension(aki, critical=False)
    if crl_url is not None:
        ext, critical = crl_distribution_points(crl_url)
        builder = builder.add_extension(ext, critical=critical)

    cert = builder.sign(issuer_key, hash_algorithm(digest, issuer_key))
    if issuer_cert is not None and extensions.is_ca:
        # A path length above the issuer (an imported intermediate's root,
        # say) limits a new CA as much as the issuer's own does.
        check_path_lengths([cert, *issuers])
    return cert


def sign_csr(
    csr: x509.CertificateSigningRequest,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    extensions: CertExtensions,
    lifetime_days: int,
    digest: Digest | None,
    now: dt.datetime,
    crl_url: str | None = None,
    ca_chain: Sequence[x509.Certificate] = (),
) -> x509.Certificate:
    """Issue a certificate for a CSR: its subject and SAN, the CA's extensions.

    Only the subject and subjectAltName are taken from the request; every
    other extension is chosen by the signer, so a CSR cannot ask for CA rights
    nor name a CRL. A request without SANs gets its common name as one, and
    ``crl_url`` names the CA's CRL, as in ``build_certificate``; the SANs are
    checked, and checked against ``ca_chain``'s name constraints, as there.

    Raises:
        PkiError: the CSR's signature is bad, or the CA cannot sign it.
        ValidationError: a SAN entry certd would not issue, at ``san``, or
            as ``build_certificate`` refuses.
    """
    if not csr.is_signature_valid:
        raise PkiError("the CSR's signature does not verify with its own public key")
    names = csr_names(csr)
    return build_certificate(
        subject_key_public=csr.public_key(),  # type: ignore[arg-type]
        subject=csr.subject,
        san=names,
        extensions=extensions,
        issuer_cert=ca_cert,
        issuer_key=ca_key,
        digest=digest,
        lifetime_days=lifetime_days,
        now=now,
        crl_url=crl_url,
        issuer_chain=ca_chain,
    )


def csr_names(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    """The SAN entries a CSR asks for, unchecked; none without the extension.

    Raises:
        PkiError: the CSR's extensions cannot be decoded.
    """
    try:
        requested = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    except ValueError as exc:
        raise PkiError(f"the CSR's extensions cannot be read: {exc}") from None
    return list(requested.value)


def check_csr_names(
    csr: x509.CertificateSigningRequest, field: str
) -> list[x509.GeneralName]:
    """The CSR's SAN entries, checked by the rules of a create request.

    Without SAN entries the host names among the subject's common names may
    become the SAN when it is signed, so they count against the same limit.

    Raises:
        ValidationError: at ``field``, one error per bad entry, or when the
            extensions cannot be read, or for more than ``MAX_SAN_ENTRIES``
            SAN entries or host name common names.
    """
    try:
        names = csr_names(csr)
    except PkiError as exc:
        raise ValidationError.single(field, exc.message) from None
    if not names:
        _check_common_name_count(common_name_san(csr.subject), field)
    return check_requested_names(names, field)


def create_intermediate_ca(
    *,
    key: PrivateKey,
    subject: x509.Name,
    extensions: CertExtensions,
    parent_cert: x509.Certificate,
    parent_key: PrivateKey,
    digest: Digest | None,
    lifetime_days: int,
    now: dt.datetime,
    crl_url: str | None = None,
) -> x509.Certificate:
    """Issue an intermediate CA under ``parent_cert``.

    Without an explicit path length the new CA inherits the parent's limit
    minus one, so the constraint is visible in the intermediate itself.
    ``crl_url`` names the parent's CRL, as in ``build_certificate``.

    Raises:
        PkiError: ``extensions`` is not a CA profile, or the parent's path
            length does not allow another CA below it.
    """
    if not extensions.is_ca:
        raise PkiError("an intermediate CA needs BasicConstraints enabled with ca true")
    parent_limit = _path_length(parent_cert)
    if extensions.BasicConstraints.path_length is None and parent_limit is not None:
        bc = extensions.BasicConstraints.model_copy(
            update={"path_length": max(parent_limit - 1, 0)}
        )
        extensions = extensions.model_copy(update={"BasicConstraints": bc})
    return build_certificate(
        subject_key_public=key.public_key(),
        subject=subject,
        san=[],
        extensions=extensions,
        issuer_cert=parent_cert,
        issuer_key=parent_key,
        digest=digest,
        lifetime_days=lifetime_days,
        now=now,
        crl_url=crl_url,
    )


def _check_common_name_count(names: Sequence[x509.GeneralName], field: str) -> None:
    # A subject may repeat commonName: each host among them would be a SAN.
    try:
        check_san_count(len(names))
    except ValueError as exc:
        raise ValidationError.single(
            field, f"the common names would be the SAN, but {exc}"
        ) from None


def _check_common_name_hosts(names: Sequence[x509.GeneralName]) -> None:
    for name in names:
        if isinstance(name, x509.IPAddress) and not isinstance(
            name.value, ipaddress.IPv4Network | ipaddress.IPv6Network
        ):
            try:
                check_host_address(name.value)
            except ValueError as exc:
                raise ValidationError.single(
                    "common", f"the common name would be the SAN, but {exc}"
                ) from None


def _general_names(
    san: Sequence[str] | Sequence[x509.GeneralName],
) -> list[x509.GeneralName]:
    if all(isinstance(entry, str) for entry in san):
        return parse_san([str(entry) for entry in san])
    if all(isinstance(entry, x509.GeneralName) for entry in san):
        return check_requested_names(san)  # type: ignore[arg-type]
    raise PkiError("san must be all strings or all general names")


def _validity(lifetime_days: int, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    if now.tzinfo is None:
        raise PkiError("now must be an aware datetime")
    if lifetime_days < 1:
        raise ValidationError.single("lifetime", "must be at least 1 day")
    now = now.astimezone(dt.UTC).replace(microsecond=0)
    try:
        not_after = now + dt.timedelta(days=lifetime_days)
    except OverflowError:
        raise ValidationError.single(
            "lifetime", "the certificate would end after the year 9999"
        ) from None
    if not_after.year > 9999:
        raise ValidationError.single(
            "lifetime", "the certificate would end after the year 9999"
        )
    return now - CLOCK_SKEW, not_after


def _path_length(cert: x509.Certificate) -> int | None:
    try:
        return cert.extensions.get_extension_for_class(
            x509.BasicConstraints
        ).value.path_length
    except x509.ExtensionNotFound:
        return None


def _check_issuer(
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    extensions: CertExtensions,
    not_after: dt.datetime,
    lifetime_days: int,
) -> None:
    if public_key_der(issuer.public_key()) != public_key_der(issuer_key):  # type: ignore[arg-type]
        raise PkiError("the issuer's private key does not match its certificate")
    try:
        bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise PkiError("the issuer is not a CA (BasicConstraints ca is not true)")
    try:
        ku = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if ku is not None and not ku.key_cert_sign:
        raise PkiError("the issuer's KeyUsage does not allow keyCertSign")

    if extensions.is_ca and bc.path_length is not None:
        # RFC 5280 4.2.1.9: pathLenConstraint counts the CAs that may follow.
        child = extensions.BasicConstraints.path_length
        if bc.path_length == 0:
            raise PkiError(
                "the issuer's path length is 0: it may not issue CA certificates"
            )
        if child is not None and child >= bc.path_length:
            raise PkiError(
                f"path_length {child} is too long under an issuer with path "
                f"length {bc.path_length}; at most {bc.path_length - 1}"
            )

    issuer_end = issuer.not_valid_after_utc
    if not_after > issuer_end:
        # Refused rather than clamped: a caller asking for N days should not
        # silently get fewer.
        days = (issuer_end - (not_after - dt.timedelta(days=lifetime_days))).days
        raise ValidationError.single(
            "lifetime",
            f"the certificate would end on {not_after.isoformat()}, after its "
            f"issuer ({issuer_end.isoformat()}); the issuer allows at most "
            f"{max(days, 0)} days",
        )


def _authority_key_identifier(
    extensions: CertExtensions,
    issuer_cert: x509.Certificate | None,
    issuer_public: PublicKey,
    issuer_name: x509.Name,
    serial: int,
) -> x509.AuthorityKeyIdentifier | None:
    options = extensions.AuthorityKeyIdentifier
    # RFC 5280 4.2.1.1: required in issued certificates, optional when
    # self-signed, where it is added only on request.
    if issuer_cert is None and not options.enabled:
        return None
    key_id: bytes | None = None
    if issuer_cert is not None:
        try:
            ski = issuer_cert.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier
            )
            key_id = ski.value.digest
        except x509.ExtensionNotFound:
            key_id = None
    if key_id is None:
        key_id = x509.SubjectKeyIdentifier.from_public_key(issuer_public).digest
    if options.enabled and options.authority_cert_issuer:
        # The issuer's own issuer and serial identify the issuer certificate.
        if issuer_cert is None:
            issuer_of_issuer, issuer_serial = issuer_name, serial
        else:
            issuer_of_issuer, issuer_serial = (
                issuer_cert.issuer,
                issuer_cert.serial_number,
            )
        return x509.AuthorityKeyIdentifier(
            key_identifier=key_id,
            authority_cert_issuer=[x509.DirectoryName(issuer_of_issuer)],
            authority_cert_serial_number=issuer_serial,
        )
    return x509.AuthorityKeyIdentifier(
        key_identifier=key_id,
        authority_cert_issuer=None,
        authority_cert_serial_number=None,
    )
