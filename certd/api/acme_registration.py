"""``acme.registration``: ACME accounts, one per directory URL; ACME revocation.

Accounts are also created on first use by an ACME certificate; this namespace
lets a user create one up front (with a contact e-mail or an external account
binding), change its contact, roll its key over and deactivate it.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Annotated, Any, Literal

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
)
from sqlalchemy import select

from certd.api.crud import CRUDService
from certd.api.jobs import Job
from certd.api.registry import Service, api_method
from certd.errors import ConflictError, NotFoundError, ValidationError
from certd.renewal.issuance import load_account_key, normalize_directory
from certd.store.models import AcmeAccount, Certificate, utcnow

if TYPE_CHECKING:
    from certd.acme.client import AcmeClient

log = structlog.get_logger(__name__)

ACME_SERVERS = {
    "https://acme-v02.api.letsencrypt.org/directory": "Let's Encrypt",
    "https://acme-staging-v02.api.letsencrypt.org/directory": "Let's Encrypt (staging)",
    "https://acme.zerossl.com/v2/DV90": "ZeroSSL (needs external account binding)",
    "https://api.buypass.com/acme/directory": "Buypass Go SSL",
    "https://api.test4.buypass.no/acme/directory": "Buypass Go SSL (test)",
    "https://dv.acme-v02.api.pki.goog/directory": "Google Trust Services (needs external account binding)",
    "https://dv.acme-v02.test-api.pki.goog/directory": "Google Trust Services (staging)",
}

# RFC 5280 §5.3.1 reasons (by their RFC names, as CRLs use them) that ACME
# servers accept (RFC 8555 §7.6), with their codes.
REVOCATION_REASONS = {
    "unspecified": 0,
    "keyCompromise": 1,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
}


def _reason_name(value: Any) -> Any:
    # Also take the UPPER_SNAKE spelling of the same names (KEY_COMPROMISE).
    if isinstance(value, str) and value.isupper():
        head, *rest = value.lower().split("_")
        return head + "".join(part.capitalize() for part in rest)
    return value


RevocationReason = Annotated[
    Literal[
        "unspecified",
        "keyCompromise",
        "affiliationChanged",
        "superseded",
        "cessationOfOperation",
    ],
    BeforeValidator(_reason_name),
]


class RegistrationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    acme_directory_uri: str = Field(min_length=8, max_length=500)
    tos: bool = Field(description="agreement to the CA's terms of service")
    contact_email: str | None = Field(default=None, max_length=320)
    eab_kid: str | None = Field(default=None, min_length=1, max_length=255)
    eab_hmac_key: SecretStr | None = Field(
        default=None, description="base64url HMAC key from the CA (write-only)"
    )

    @field_validator("acme_directory_uri")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("must be an https:// URL (RFC 8555 requires HTTPS)")
        return value

    @field_validator("contact_email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and ("@" not in value or value.startswith("mailto:")):
            raise ValueError("give a plain e-mail address, like admin@example.com")
        return value


class RegistrationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_email: str | None = Field(default=None, max_length=320)


class RegistrationEntry(BaseModel):
    id: int
    directory: str
    account_url: str | None
    contact_email: str | None
    tos_agreed: bool
    terms_of_service: str | None
    status: str
    eab_kid: str | None
    key_type: str
    created_at: str


def decode_hmac_key(value: str) -> bytes:
    """The EAB HMAC key as the CA gives it: base64url, padding optional.

    Raises:
        ValidationError: not base64url, or too short to be a real key.
    """
    text = value.strip()
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValidationError.single(
            "data.eab_hmac_key", "must be base64url, as the CA shows it"
        ) from None
    if len(key) < 16:
        raise ValidationError.single(
            "data.eab_hmac_key", "is too short for an HMAC key (at least 16 bytes)"
        )
    return key


def _entry(row: AcmeAccount) -> dict[str, Any]:
    key = serialization.load_pem_private_key(row.key_pem.encode(), None)
    return {
        "id": row.id,
        "directory": row.directory,
        "account_url": row.account_url,
        "contact_email": row.contact_email,
        "tos_agreed": row.tos_agreed,
        "terms_of_service": row.terms_of_service,
        "status": row.status,
        "eab_kid": row.eab_kid,
        "key_type": "EC" if isinstance(key, ec.EllipticCurvePrivateKey) else "RSA",
        "created_at": row.created_at.isoformat(),
    }


class AcmeRegistrationService(CRUDService):
    namespace = "acme.registration"
    kind = "ACME account"
    Entry = RegistrationEntry

    async def entries(self) -> list[dict[str, Any]]:
        async with self.app.db.session() as session:
            rows = (
                await session.scalars(select(AcmeAccount).order_by(AcmeAccount.id))
            ).all()
        return [_entry(row) for row in rows]

    async def _row(self, id: int) -> AcmeAccount:
        async with self.app.db.session() as session:
            row = await session.get(AcmeAccount, id)
        if row is None:
            raise NotFoundError(self.kind, id)
        return row

    async def _client(self, row: AcmeAccount) -> AcmeClient:
        if row.status != "valid":
            raise ConflictError(f"ACME account {row.id} is {row.status}")
        from certd.acme.client import AcmeClient

        return await AcmeClient.open(
            row.directory,
            load_account_key(row.key_pem),
            session=self.app.http,
            account_url=row.account_url,
            poll=self.app.issuer.poll_policy(),
        )

    async def check_create(self, data: RegistrationCreate) -> None:
        if (data.eab_kid is None) != (data.eab_hmac_key is None):
            missing = (
                "data.eab_hmac_key" if data.eab_hmac_key is None else "data.eab_kid"
            )
            raise ValidationError.single(
                missing,
                "an external account binding needs both eab_kid and eab_hmac_key",
            )
        if data.eab_hmac_key is not None:
            decode_hmac_key(data.eab_hmac_key.get_secret_value())
        if not data.tos:
            raise ValidationError.single(
                "data.tos", "the CA's terms of service must be agreed to"
            )
        directory = normalize_directory(data.acme_directory_uri)
        async with self.app.db.session() as session:
            # A deactivated account gives way to a new one (see Issuer.register).
            if await session.scalar(
                select(AcmeAccount.id).where(
                    AcmeAccount.directory == directory,
                    AcmeAccount.status != "deactivated",
                )
            ):
                raise ValidationError.single(
                    "data.acme_directory_uri",
                    f"an account for {directory} already exists",
                )

    @api_method(job=True, secret_params=("data.eab_hmac_key",), check="check_create")
    async def create(self, job: Job, data: RegistrationCreate) -> RegistrationEntry:
        """Register an account at an ACME directory now."""
        await self.check_create(data)
        eab = None
        if data.eab_kid and data.eab_hmac_key:
            eab = (data.eab_kid, decode_hmac_key(data.eab_hmac_key.get_secret_value()))
        await job.set_progress(20, f"registering at {data.acme_directory_uri}")
        _, account_id = await self.app.issuer.register(
            data.acme_directory_uri,
            tos=data.tos,
            contact_email=data.contact_email,
            eab=eab,
        )
        return _entry(await self._row(account_id))  # type: ignore[return-value]

    @api_method(job=True)
    async def update(
        self, job: Job, id: int, data: RegistrationUpdate
    ) -> RegistrationEntry:
        """Change the account's contact e-mail at the CA."""
        row = await self._row(id)
        client = await self._client(row)
        await client.update_contact(data.contact_email)
        async with self.app.db.session() as session:
            stored = await session.get(AcmeAccount, id)
            assert stored is not None
            stored.contact_email = data.contact_email
        return _entry(await self._row(id))  # type: ignore[return-value]

    @api_method(job=True)
    async def key_rollover(self, job: Job, id: int) -> RegistrationEntry:
        """Move the account to a new key (RFC 8555 §7.3.5)."""
        row = await self._row(id)
        client = await self._client(row)
        import josepy

        private = ec.generate_private_key(ec.SECP256R1())
        await client.key_rollover(josepy.JWKEC(key=private))
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        async with self.app.db.session() as session:
            stored = await session.get(AcmeAccount, id)
            assert stored is not None
            stored.key_pem = pem
        log.info("acme_account_key_rolled_over", account_id=id)
        return _entry(await self._row(id))  # type: ignore[return-value]

    @api_method(job=True)
    async def deactivate(self, job: Job, id: int) -> RegistrationEntry:
        """Deactivate the account at the CA for good.

        The next ``certificate.create`` with ``tos`` true, or
        ``acme.registration.create``, registers a new one; renewals wait for it.
        """
        row = await self._row(id)
        client = await self._client(row)
        await client.deactivate_account()
        async with self.app.db.session() as session:
            stored = await session.get(AcmeAccount, id)
            assert stored is not None
            stored.status = "deactivated"
        return _entry(await self._row(id))  # type: ignore[return-value]

    @api_method()
    async def delete(self, id: int) -> bool:
        """Forget a stored account; refused while certificates were issued with it."""
        async with self.app.db.session() as session:
            row = await session.get(AcmeAccount, id)
            if row is None:
                raise NotFoundError(self.kind, id)
            users = (
                await session.scalars(
                    select(Certificate.name).where(Certificate.acme_account_id == id)
                )
            ).all()
            if users:
                raise ConflictError(
                    f"ACME account {id} issued {', '.join(users)}; "
                    "delete or re-issue those first"
                )
            await session.delete(row)
        return True


class AcmeCertificateService(Service):
    """The ACME methods of the certificate namespace."""

    namespace = "certificate.acme"

    @api_method(readonly=True, name="certificate.acme_server_choices")
    async def acme_server_choices(self) -> dict[str, str]:
        """Well-known ACME directories; any other URL may be used as well."""
        return dict(ACME_SERVERS)

    @api_method(readonly=True, name="certificate.revocation_reason_choices")
    async def revocation_reason_choices(self) -> dict[str, int]:
        """RFC 5280 reasons an ACME CA accepts, with their codes."""
        return dict(REVOCATION_REASONS)

    @api_method(job=True, name="certificate.revoke")
    async def revoke(
        self, job: Job, id: int, reason: RevocationReason = "unspecified"
    ) -> dict[str, Any]:
        """Revoke an ACME certificate at its CA, signed with the account key."""
        async with self.app.db.session() as session:
            row = await session.get(Certificate, id)
            if row is None:
                raise NotFoundError("certificate", id)
            account = (
                await session.get(AcmeAccount, row.acme_account_id)
                if row.acme_account_id
                else None
            )
        if account is None or not row.certificate:
            raise ValidationError.single("id", "not an ACME certificate")
        if row.revoked:
            raise ConflictError(f"certificate {row.name!r} is already revoked")
        await job.set_progress(30, f"revoking at {account.directory}")
        from certd.acme.client import AcmeClient

        client = await AcmeClient.open(
            account.directory,
            load_account_key(account.key_pem),
            session=self.app.http,
            account_url=account.account_url,
        )
        leaf = x509.load_pem_x509_certificate(row.certificate.encode())
        await client.revoke(
            leaf.public_bytes(serialization.Encoding.DER), REVOCATION_REASONS[reason]
        )
        async with self.app.db.session() as session:
            stored = await session.get(Certificate, id)
            assert stored is not None
            stored.revoked = True
            stored.revoked_at = utcnow()
            stored.revoked_reason = reason
            # A revoked certificate is not renewed: its names may no longer be ours.
            event = self.app.renewal.stage_change(session, stored)
        if event is not None:
            self.app.events.deliver(event)
        log.info("certificate_revoked", certificate=row.name, reason=reason)
        return {"id": id, "revoked": True, "reason": reason}
