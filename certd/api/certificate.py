"""``certificate``: certificates and signing requests, created, listed and deleted.

Create types follow the NAS middleware: a new key and CSR
(``CERTIFICATE_CREATE_CSR``) and a certificate obtained over ACME DNS-01 from
such a CSR (``CERTIFICATE_CREATE_ACME``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import select

from certd.api.crud import CRUDService
from certd.api.jobs import Job
from certd.api.registry import api_method, validation_error_from_pydantic
from certd.errors import (
    ConflictError,
    NotFoundError,
    ValidationCollector,
    ValidationError,
)
from certd.pki.csr import create_csr, load_csr
from certd.pki.inspect import describe_certificate, describe_csr
from certd.pki.keys import load_private_key
from certd.pki.models import (
    CertExtensions,
    Digest,
    EcCurve,
    KeyOptions,
    KeyType,
    Subject,
)
from certd.store.models import Certificate, DNSAuthenticator, utcnow
from certd.workers import generate_key_pem

log = structlog.get_logger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")

CreateType = Literal[
    "CERTIFICATE_CREATE_CSR",
    "CERTIFICATE_CREATE_ACME",
]

KEY_FIELDS = ("key_type", "key_length", "ec_curve", "digest_algorithm")
SUBJECT_FIELDS = (
    "country",
    "state",
    "city",
    "organization",
    "organizational_unit",
    "email",
    "common",
)


class CertificateCreate(BaseModel):
    """Every field of the certificate screens; which apply depends on create_type."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=120)
    create_type: CreateType
    # key and digest (CSR)
    key_type: KeyType | None = None
    key_length: int | None = None
    ec_curve: EcCurve | str | None = None
    digest_algorithm: Digest | str | None = None
    # subject (CSR)
    country: str | None = None
    state: str | None = None
    city: str | None = None
    organization: str | None = None
    organizational_unit: str | None = None
    email: str | None = None
    common: str | None = None
    san: list[str] = Field(default_factory=list)
    cert_extensions: dict[str, Any] | None = None
    # ACME
    csr_id: int | None = None
    acme_directory_uri: str | None = None
    tos: bool = False
    dns_mapping: dict[str, int] = Field(default_factory=dict)
    renew_days: int | None = Field(default=None, ge=1, le=365)
    # imports
    passphrase: SecretStr | None = None


class CertificateUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=120)
    renew_days: int | None = Field(default=None, ge=1, le=365)
    dns_mapping: dict[str, int] | None = None
    # Renew with the same key and CSR instead of a new key each time.
    reuse_key: bool | None = None


class CertificateEntry(BaseModel):
    """A certificate or CSR as query returns it; private keys are never included."""

    model_config = ConfigDict(extra="allow")

    id: int
    name: str
    cert_type: Literal["CERTIFICATE", "CSR"]
    create_type: str
    parsed: bool
    certificate: str | None
    CSR: str | None
    has_privatekey: bool
    san: list[str] | None
    common: str | None
    not_valid_before: str | None
    not_valid_after: str | None
    days_left: int | None
    fingerprint_sha256: str | None
    chain_list: list[str] | None
    acme: dict[str, Any] | None
    dns_mapping: dict[str, int]
    renew_days: int | None


# describe_certificate parses a whole chain; entries are listed far more often
# than they change, so descriptions are kept by content and only the fields
# that move with the clock are recomputed.
_DESCRIPTIONS: dict[str, dict[str, Any]] = {}
_DESCRIPTIONS_MAX = 50_000


def _describe(pem: str, kind: str) -> dict[str, Any]:
    digest = hashlib.sha256(pem.encode()).hexdigest()
    cached = _DESCRIPTIONS.get(digest)
    if cached is None:
        cached = describe_certificate(pem) if kind == "cert" else describe_csr(pem)
        if len(_DESCRIPTIONS) >= _DESCRIPTIONS_MAX:
            _DESCRIPTIONS.clear()
        _DESCRIPTIONS[digest] = cached
    result = dict(cached)
    if kind == "cert" and result.get("not_valid_after"):
        now = datetime.now(UTC)
        not_after = datetime.fromisoformat(result["not_valid_after"])
        result["days_left"] = (not_after - now).days
        result["expired"] = now > not_after
    return result


def acme_domains(csr_pem: str) -> tuple[list[str], list[str]]:
    """(DNS names an ACME order for this CSR covers, entries dns-01 cannot prove)."""
    from cryptography import x509

    csr = load_csr(csr_pem)
    names: list[str] = []
    unprovable: list[str] = []
    for attribute in csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME):
        names.append(str(attribute.value).lower())
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        names.extend(n.lower() for n in san.get_values_for_type(x509.DNSName))
        unprovable.extend(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    return list(dict.fromkeys(names)), unprovable


class CertificateService(CRUDService):
    namespace = "certificate"
    kind = "certificate"
    Entry = CertificateEntry

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.create_handlers: dict[
            str, Callable[[Job, CertificateCreate], Awaitable[int]]
        ] = {
            "CERTIFICATE_CREATE_CSR": self._create_csr,
            "CERTIFICATE_CREATE_ACME": self._create_acme,
        }

    async def on_start(self) -> None:
        from certd.renewal.issuance import clean_leftover_records

        await clean_leftover_records(self.app)

    # --- results ----------------------------------------------------------

    def entry(self, row: Certificate) -> dict[str, Any]:
        if row.cert_type == "CSR":
            described = _describe(row.csr or "", "csr")
        else:
            described = _describe(row.certificate or "", "cert")
        acme = None
        if row.acme_account_id is not None:
            acme = {
                "account_id": row.acme_account_id,
                "directory": row.acme_directory_uri,
                "order_uri": row.acme_uri,
            }
        return {
            **described,
            "id": row.id,
            "name": row.name,
            "cert_type": row.cert_type,
            "cert_type_CSR": row.cert_type == "CSR",
            "create_type": row.create_type,
            "certificate": row.certificate,
            "CSR": row.csr,
            "has_privatekey": bool(row.privatekey),
            "csr_id": row.csr_id,
            "signedby": row.signedby_id,
            "acme": acme,
            "dns_mapping": row.dns_mapping or {},
            "renew_days": row.renew_days,
            "reuse_key": row.reuse_key,
            "revoked": row.revoked,
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
            "revoked_reason": row.revoked_reason,
            "renewal": {
                "next_attempt_at": _iso(row.next_attempt_at),
                "last_attempt_at": _iso(row.last_attempt_at),
                "last_error": row.last_error,
                "failure_count": row.failure_count,
            },
            "created_at": _iso(row.created_at),
        }

    async def entries(self) -> list[dict[str, Any]]:
        async with self.app.db.session() as session:
            rows = (
                await session.scalars(select(Certificate).order_by(Certificate.id))
            ).all()
        return [self.entry(row) for row in rows]

    async def get_entry(self, id: int) -> dict[str, Any]:
        async with self.app.db.session() as session:
            row = await session.get(Certificate, id)
        if row is None:
            raise NotFoundError(self.kind, id)
        return self.entry(row)

    # --- create -------------------------------------------------------------

    async def check_create(self, data: CertificateCreate) -> None:
        """Everything that can be checked before the job starts."""
        errors = ValidationCollector()
        if not NAME_PATTERN.match(data.name):
            errors.add("data.name", "use only letters, digits, '_' and '-'")
        async with self.app.db.session() as session:
            if await session.scalar(
                select(Certificate.id).where(Certificate.name == data.name)
            ):
                errors.add(
                    "data.name", f"a certificate named {data.name!r} already exists"
                )
        errors.check()
        if data.create_type == "CERTIFICATE_CREATE_CSR":
            self._csr_options(data)
        elif data.create_type == "CERTIFICATE_CREATE_ACME":
            await self._check_acme(data)

    def _csr_options(
        self, data: CertificateCreate
    ) -> tuple[KeyOptions, Subject, CertExtensions]:
        values = data.model_dump(exclude_unset=True)
        collector = ValidationCollector()
        parsed: list[Any] = []
        for model, fields in (
            (KeyOptions, KEY_FIELDS),
            (Subject, SUBJECT_FIELDS),
        ):
            try:
                parsed.append(
                    model.model_validate({k: values[k] for k in fields if k in values})
                )
            except PydanticValidationError as exc:
                collector.errors.extend(
                    validation_error_from_pydantic(exc, "data").errors
                )
        try:
            parsed.append(CertExtensions.model_validate(data.cert_extensions or {}))
        except PydanticValidationError as exc:
            collector.errors.extend(
                validation_error_from_pydantic(exc, "data.cert_extensions").errors
            )
        collector.check()
        if not data.san and not data.common:
            raise ValidationError.single(
                "data.san",
                "give a common name or at least one subject alternative name",
            )
        return parsed[0], parsed[1], parsed[2]

    async def _check_acme(self, data: CertificateCreate) -> Certificate:
        errors = ValidationCollector()
        if data.csr_id is None:
            errors.add("data.csr_id", "required for CERTIFICATE_CREATE_ACME")
        if not data.acme_directory_uri:
            errors.add(
                "data.acme_directory_uri", "required for CERTIFICATE_CREATE_ACME"
            )
        elif not data.acme_directory_uri.startswith(("https://", "http://")):
            errors.add("data.acme_directory_uri", "must be an http(s) URL")
        errors.check()
        async with self.app.db.session() as session:
            csr_row = await session.get(Certificate, data.csr_id)
            authenticators = {
                row.id
                for row in (await session.scalars(select(DNSAuthenticator))).all()
            }
        if csr_row is None or csr_row.cert_type != "CSR":
            raise ValidationError.single("data.csr_id", f"no CSR with id {data.csr_id}")
        if not csr_row.privatekey:
            raise ValidationError.single(
                "data.csr_id", "the CSR has no private key stored with it"
            )
        domains, unprovable = acme_domains(csr_row.csr or "")
        for entry in unprovable:
            errors.add(
                "data.csr_id",
                f"the CSR names IP address {entry}, which DNS-01 cannot validate",
            )
        mapping = {
            key.removeprefix("DNS:").lower(): value
            for key, value in data.dns_mapping.items()
        }
        for domain in domains:
            if domain not in mapping:
                errors.add(
                    f"data.dns_mapping.{domain}",
                    "every name in the CSR needs a DNS authenticator; this one has none",
                )
        for domain, authenticator_id in mapping.items():
            if domain not in domains:
                errors.add(f"data.dns_mapping.{domain}", "this name is not in the CSR")
            elif authenticator_id not in authenticators:
                errors.add(
                    f"data.dns_mapping.{domain}",
                    f"no DNS authenticator with id {authenticator_id}",
                )
        errors.check()
        data.dns_mapping = mapping
        return csr_row

    @api_method(job=True, secret_params=("data",), check="check_create")
    async def create(self, job: Job, data: CertificateCreate) -> CertificateEntry:
        """Create a certificate or CSR; the job's result is the new entry."""
        await self.check_create(data)
        await job.set_progress(2, "checked the request")
        new_id = await self.create_handlers[data.create_type](job, data)
        return await self.get_entry(new_id)  # type: ignore[return-value]

    async def _insert(self, row: Certificate) -> int:
        async with self.app.db.session() as session:
            if await session.scalar(
                select(Certificate.id).where(Certificate.name == row.name)
            ):
                raise ValidationError.single(
                    "data.name", f"a certificate named {row.name!r} already exists"
                )
            session.add(row)
            await session.flush()
            log.info(
                "certificate_stored", certificate=row.name, create_type=row.create_type
            )
            return row.id

    async def _create_csr(self, job: Job, data: CertificateCreate) -> int:
        options, subject, extensions = self._csr_options(data)
        await job.set_progress(10, f"generating a {options.key_type} key")
        key_pem = await self.app.workers.run(generate_key_pem, options.model_dump())
        key = load_private_key(key_pem)
        await job.set_progress(70, "signing the CSR")
        from cryptography.hazmat.primitives import serialization

        csr = create_csr(key, subject, data.san, extensions, options.digest_algorithm)
        csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode()
        return await self._insert(
            Certificate(
                name=data.name,
                cert_type="CSR",
                create_type=data.create_type,
                csr=csr_pem,
                privatekey=key_pem,
            )
        )

    async def _create_acme(self, job: Job, data: CertificateCreate) -> int:
        csr_row = await self._check_acme(data)
        issued = await self.app.issuer.issue(
            csr_pem=csr_row.csr or "",
            directory=data.acme_directory_uri or "",
            dns_mapping=data.dns_mapping,
            tos=data.tos,
            progress=job.set_progress,
            job_id=job.id,
        )
        await job.set_progress(95, "storing the certificate")
        return await self._insert(
            Certificate(
                name=data.name,
                cert_type="CERTIFICATE",
                create_type=data.create_type,
                certificate=issued.fullchain_pem,
                privatekey=csr_row.privatekey,
                csr=csr_row.csr,
                csr_id=csr_row.id,
                acme_account_id=issued.account_id,
                acme_directory_uri=data.acme_directory_uri,
                acme_uri=issued.order_url,
                dns_mapping=data.dns_mapping,
                renew_days=data.renew_days,
            )
        )

    # --- update and delete -------------------------------------------------

    @api_method()
    async def update(self, id: int, data: CertificateUpdate) -> CertificateEntry:
        """Rename, or change renewal settings of an ACME certificate."""
        async with self.app.db.session() as session:
            row = await session.get(Certificate, id)
            if row is None:
                raise NotFoundError(self.kind, id)
            errors = ValidationCollector()
            if data.name is not None and data.name != row.name:
                if not NAME_PATTERN.match(data.name):
                    errors.add("data.name", "use only letters, digits, '_' and '-'")
                elif await session.scalar(
                    select(Certificate.id).where(Certificate.name == data.name)
                ):
                    errors.add(
                        "data.name", f"a certificate named {data.name!r} already exists"
                    )
            is_acme = row.acme_account_id is not None
            if data.renew_days is not None and not is_acme:
                errors.add("data.renew_days", "applies to ACME certificates only")
            if data.dns_mapping is not None and not is_acme:
                errors.add("data.dns_mapping", "applies to ACME certificates only")
            errors.check()
            if data.dns_mapping is not None:
                probe = CertificateCreate(
                    name=row.name,
                    create_type="CERTIFICATE_CREATE_ACME",
                    csr_id=row.csr_id,
                    acme_directory_uri=row.acme_directory_uri,
                    dns_mapping=data.dns_mapping,
                )
                await self._check_acme(probe) if row.csr_id else None
                row.dns_mapping = probe.dns_mapping
            if data.name is not None:
                row.name = data.name
            if data.renew_days is not None:
                row.renew_days = data.renew_days
            if data.reuse_key is not None:
                row.reuse_key = data.reuse_key
            if data.renew_days is not None or data.dns_mapping is not None:
                # the renewal scheduler plans the certificate again on its next tick
                row.next_attempt_at = None
            row.updated_at = utcnow()
            await session.flush()
            return self.entry(row)  # type: ignore[return-value]

    @api_method()
    async def delete(self, id: int, force: bool = False) -> bool:
        """Delete a certificate or CSR; a CSR that certificates were made from needs force."""
        async with self.app.db.session() as session:
            row = await session.get(Certificate, id)
            if row is None:
                raise NotFoundError(self.kind, id)
            if row.cert_type == "CSR" and not force:
                users = (
                    await session.scalars(
                        select(Certificate.name).where(Certificate.csr_id == id)
                    )
                ).all()
                if users:
                    raise ConflictError(
                        f"CSR {row.name!r} is the source of {', '.join(users)}; "
                        "pass force=true to delete it anyway"
                    )
            await session.delete(row)
        log.info("certificate_deleted", certificate=row.name)
        return True


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
