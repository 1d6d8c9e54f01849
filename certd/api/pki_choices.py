"""The drop-downs of the certificate screens: profiles and choice lists."""

from __future__ import annotations

from typing import Any

from certd.api.pki_models import CREATE_TYPE_LABELS
from certd.api.registry import Service, api_method
from certd.pki import profiles


class CertificateChoicesService(Service):
    """Choice methods of the certificate namespace; none changes anything."""

    namespace = "certificate.choices"

    @api_method(readonly=True, name="certificate.profiles")
    async def profiles(self) -> dict[str, dict[str, Any]]:
        """Presets for certificates signed by a local CA (key, digest, lifetime, extensions)."""
        return profiles.certificate_profiles()

    @api_method(readonly=True, name="certificate.csr_profiles")
    async def csr_profiles(self) -> dict[str, dict[str, Any]]:
        """Presets for CSRs: the certificate presets without a lifetime."""
        return profiles.csr_profiles()

    @api_method(readonly=True, name="certificate.country_choices")
    async def country_choices(self) -> dict[str, str]:
        """ISO 3166-1 alpha-2 country codes with their names."""
        return profiles.country_choices()

    @api_method(readonly=True, name="certificate.key_type_choices")
    async def key_type_choices(self) -> dict[str, str]:
        """Key types: RSA, EC (ECDSA) and Ed25519."""
        return profiles.key_type_choices()

    @api_method(readonly=True, name="certificate.key_length_choices")
    async def key_length_choices(self) -> dict[str, str]:
        """RSA modulus sizes in bits; JSON object keys are strings."""
        return {
            str(bits): label for bits, label in profiles.key_length_choices().items()
        }

    @api_method(readonly=True, name="certificate.ec_curve_choices")
    async def ec_curve_choices(self) -> dict[str, str]:
        """Curves for EC keys."""
        return profiles.ec_curve_choices()

    @api_method(readonly=True, name="certificate.digest_algorithm_choices")
    async def digest_algorithm_choices(self) -> dict[str, str]:
        """Signature digests; Ed25519 keys take none."""
        return profiles.digest_choices()

    @api_method(readonly=True, name="certificate.extended_key_usage_choices")
    async def extended_key_usage_choices(self) -> dict[str, str]:
        """Names accepted in ExtendedKeyUsage.usages, with label and OID."""
        return profiles.extended_key_usage_choices()

    @api_method(readonly=True, name="certificate.create_type_choices")
    async def create_type_choices(self) -> dict[str, str]:
        """The ways to create a certificate or CSR, with a label."""
        return dict(CREATE_TYPE_LABELS)
