"""Every namespace the daemon serves, in start-up order."""

from certd.api.acme_registration import AcmeCertificateService, AcmeRegistrationService
from certd.api.certificate import CertificateService
from certd.api.certificate_authority import CertificateAuthorityService
from certd.api.core import CoreService, RpcService
from certd.api.dns_authenticator import DNSAuthenticatorService
from certd.api.events import EventService
from certd.api.pki_choices import CertificateChoicesService
from certd.api.registry import Service
from certd.api.renewal import RenewalService

SERVICES: list[type[Service]] = [
    CoreService,
    RpcService,
    DNSAuthenticatorService,
    CertificateAuthorityService,
    CertificateService,
    CertificateChoicesService,
    AcmeRegistrationService,
    AcmeCertificateService,
    RenewalService,
    EventService,
]
