"""Running pkilint in-process on certificates and CRLs."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pkilint import finding_filter, loader, pkix, validation
from pkilint.cabf import cabf_crl, serverauth
from pkilint.cabf.serverauth.serverauth_constants import CertificateType
from pkilint.pkix import certificate, crl, extension, name

Severity = validation.ValidationFindingSeverity


def _findings(results: list[validation.ValidationResult]) -> list[str]:
    return sorted(
        f"{fd.finding.severity.name} {fd.finding.code}"
        for result in results
        for fd in result.finding_descriptions
        if fd.finding.severity <= Severity.ERROR
    )


def _pem(obj: x509.Certificate | x509.CertificateRevocationList) -> str:
    return obj.public_bytes(serialization.Encoding.PEM).decode("ascii")


def pkix_errors(cert: x509.Certificate) -> list[str]:
    """ERROR and FATAL findings of pkilint's RFC 5280 certificate linter."""
    validator = certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(
            name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS
        ),
        [
            certificate.create_issuer_validator_container([]),
            certificate.create_validity_validator_container(),
            certificate.create_subject_validator_container([]),
            certificate.create_extensions_validator_container([]),
            certificate.create_spki_validator_container([]),
        ],
    )
    doc = loader.RFC5280CertificateDocumentLoader().load_pem_document(
        _pem(cert), "cert"
    )
    return _findings(validator.validate(doc.root))


def cabf_serverauth_errors(
    cert: x509.Certificate, cert_type: CertificateType | None = None
) -> tuple[CertificateType, list[str]]:
    """The detected type and ERROR/FATAL findings of the CA/B TLS BR linter."""
    doc = loader.RFC5280CertificateDocumentLoader().load_pem_document(
        _pem(cert), "cert"
    )
    cert_type = cert_type or serverauth.determine_certificate_type(doc)
    validator = certificate.create_pkix_certificate_validator_container(
        serverauth.create_decoding_validators(),
        serverauth.create_validators(cert_type),
    )
    results, _ = finding_filter.filter_results(
        serverauth.create_serverauth_finding_filters(cert_type),
        validator.validate(doc.root),
    )
    return cert_type, _findings(results)


def crl_errors(crl_obj: x509.CertificateRevocationList) -> list[str]:
    """ERROR/FATAL findings of pkilint's CRL linter, RFC 5280 plus CA/B rules."""
    crl_type = crl.CertificateRevocationListType.CRL
    validator = crl.create_pkix_crl_validator_container(
        [
            pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
            pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS),
        ],
        [
            crl.create_issuer_validator_container([]),
            crl.create_validity_validator_container(
                [cabf_crl.create_validity_period_validator(crl_type)]
            ),
            crl.create_extensions_validator_container([]),
            cabf_crl.CabfCrlReasonCodeAllowlistValidator(crl_type),
        ],
    )
    doc = loader.RFC5280CertificateListDocumentLoader().load_pem_document(
        _pem(crl_obj), "crl"
    )
    return _findings(validator.validate(doc.root))
