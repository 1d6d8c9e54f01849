"""Every namespace the daemon serves, in start-up order."""

from certd.api.acme_registration import AcmeCertificateService, AcmeRegistrationService
from certd.api.certificate import CertificateService
from certd.api.core import CoreService, RpcService
from certd.api.dns_authenticator import DNSAuthenticatorService
from certd.api.events import EventService
from certd.api.registry import Service
from certd.api.renewal import RenewalService

SERVICES: list[type[Service]] = [
    CoreService,
    RpcService,
    DNSAuthenticatorService,
    CertificateService,
    AcmeRegistrationService,
    AcmeCertificateService,
    RenewalService,
    EventService,
]
