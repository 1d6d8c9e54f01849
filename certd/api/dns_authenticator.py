"""``acme.dns.authenticator``: named DNS provider credentials for DNS-01."""

from __future__ import annotations

import re
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from sqlalchemy import select

from certd.api.crud import CRUDService
from certd.api.jobs import Job
from certd.api.registry import api_method
from certd.dns.base import (
    DNSProvider,
    ProviderAttributes,
    ProviderContext,
    attributes_schema,
    installed_providers,
    parse_attributes,
)
from certd.dns.probe import probe_provider
from certd.errors import (
    ConflictError,
    NotFoundError,
    ValidationCollector,
    ValidationError,
)
from certd.renewal.issuance import load_order_modules
from certd.store.models import Certificate, DNSAuthenticator

# \Z, not $: "$" also matches before a final newline.
log = structlog.get_logger(__name__)

NAME_PATTERN = re.compile(r"\A[A-Za-z0-9_-]+\Z")


class AuthenticatorCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=120)
    attributes: dict[str, Any] = Field(
        description="'authenticator' names the provider; the rest are its attributes"
    )
    follow_cnames: bool = Field(
        default=True,
        description="follow an _acme-challenge CNAME and write the value where it points",
    )


class AuthenticatorUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=120)
    attributes: dict[str, Any] | None = None
    follow_cnames: bool | None = None


class AuthenticatorEntry(BaseModel):
    id: int
    name: str
    attributes: dict[str, Any] = Field(
        description="secret attributes are never returned"
    )
    secrets_set: list[str]
    follow_cnames: bool


class ProbeResult(BaseModel):
    fqdn: str
    target: str = Field(description="where the value was written, after CNAMEs")
    zone: str
    timings: dict[str, float] = Field(description="seconds per step")
    total: float
    servers: Any


class ProviderSchema(BaseModel):
    key: str
    title: str
    schema_: dict[str, Any] = Field(alias="schema")


def _secret_fields(model: type[ProviderAttributes]) -> set[str]:
    return {
        name
        for name, field in model.model_fields.items()
        if field.annotation is SecretStr or field.annotation == SecretStr | None
    }


def plain_attributes(attributes: ProviderAttributes) -> dict[str, Any]:
    """Attributes as stored: secrets revealed, None values dropped."""
    out: dict[str, Any] = {}
    for name, value in attributes:
        if value is None:
            continue
        out[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
    return out


class DNSAuthenticatorService(CRUDService):
    namespace = "acme.dns.authenticator"
    kind = "DNS authenticator"
    Entry = AuthenticatorEntry
    _providers: dict[str, type[DNSProvider]] | None = None

    async def on_start(self) -> None:
        async with self.app.db.session() as session:
            if await session.scalar(select(DNSAuthenticator.id).limit(1)):
                load_order_modules()

    def providers(self) -> dict[str, type[DNSProvider]]:
        if self._providers is None:
            self._providers = installed_providers()
        return self._providers

    def _entry(self, row: DNSAuthenticator) -> dict[str, Any]:
        provider = self.providers().get(row.provider)
        secrets = _secret_fields(provider.Attributes) if provider else set()
        shown = {k: v for k, v in row.attributes.items() if k not in secrets}
        return {
            "id": row.id,
            "name": row.name,
            "attributes": {"authenticator": row.provider, **shown},
            "secrets_set": sorted(k for k in row.attributes if k in secrets),
            "follow_cnames": row.follow_cnames,
        }

    async def entries(self) -> list[dict[str, Any]]:
        every = select(DNSAuthenticator).order_by(DNSAuthenticator.id)
        rows = await self.app.db.read_objects(
            lambda session: session.scalars(every).all()
        )
        return [self._entry(row) for row in rows]

    def _validate_attributes(
        self, provider_name: Any, attributes: dict[str, Any], where: str
    ) -> tuple[str, ProviderAttributes]:
        providers = self.providers()
        if not isinstance(provider_name, str) or provider_name not in providers:
            raise ValidationError.single(
                f"{where}.authenticator",
                f"unknown provider {provider_name!r}; choose one of {', '.join(sorted(providers))}",
            )
        return provider_name, parse_attributes(
            providers[provider_name].Attributes, attributes, prefix=where
        )

    async def _check_name(
        self, session: Any, name: str, exclude: int | None = None
    ) -> None:
        errors = ValidationCollector()
        if not NAME_PATTERN.fullmatch(name):
            errors.add("data.name", "use only letters, digits, '_' and '-'")
        query = select(DNSAuthenticator.id).where(DNSAuthenticator.name == name)
        if exclude is not None:
            query = query.where(DNSAuthenticator.id != exclude)
        if await session.scalar(query):
            errors.add(
                "data.name", f"a DNS authenticator named {name!r} already exists"
            )
        errors.check()

    @api_method(secret_params=("data.attributes",))
    async def create(self, data: AuthenticatorCreate) -> AuthenticatorEntry:
        """Store a named provider with its credentials."""
        attributes = dict(data.attributes)
        provider_name = attributes.pop("authenticator", None)
        provider_name, parsed = self._validate_attributes(
            provider_name, attributes, "data.attributes"
        )
        async with self.app.db.session() as session:
            await self._check_name(session, data.name)
            row = DNSAuthenticator(
                name=data.name,
                provider=provider_name,
                attributes=plain_attributes(parsed),
                follow_cnames=data.follow_cnames,
            )
            session.add(row)
            await session.flush()
            entry = self._entry(row)
        load_order_modules()
        return entry  # type: ignore[return-value]

    @api_method(secret_params=("data.attributes",))
    async def update(self, id: int, data: AuthenticatorUpdate) -> AuthenticatorEntry:
        """Rename, or change attributes; secrets left out keep their stored value."""
        async with self.app.db.session() as session:
            row = await session.get(DNSAuthenticator, id)
            if row is None:
                raise NotFoundError(self.kind, id)
            if data.name is not None:
                await self._check_name(session, data.name, exclude=id)
                row.name = data.name
            if data.follow_cnames is not None:
                row.follow_cnames = data.follow_cnames
            if data.attributes is not None:
                attributes = dict(data.attributes)
                provider_name = attributes.pop("authenticator", row.provider)
                if provider_name != row.provider:
                    raise ValidationError.single(
                        "data.attributes.authenticator",
                        "the provider cannot change; create a new authenticator instead",
                    )
                self._require_secrets_again(row, attributes)
                merged = {**row.attributes, **attributes}
                _, parsed = self._validate_attributes(
                    row.provider, merged, "data.attributes"
                )
                row.attributes = plain_attributes(parsed)
            await session.flush()
            return self._entry(row)  # type: ignore[return-value]

    def _require_secrets_again(
        self, row: DNSAuthenticator, attributes: dict[str, Any]
    ) -> None:
        """Stored secrets stay only while nothing else about the provider changes.

        Otherwise a caller who may update but not read secrets could point the
        provider at a server of its own (api_url, server, endpoint_url) and have
        certd send it the stored credentials.
        """
        provider = self.providers().get(row.provider)
        secrets = _secret_fields(provider.Attributes) if provider else set()
        changed = [
            key
            for key, value in attributes.items()
            if key not in secrets and row.attributes.get(key) != value
        ]
        missing = sorted(
            k for k in secrets if k in row.attributes and k not in attributes
        )
        if changed and missing:
            raise ValidationError.single(
                f"data.attributes.{missing[0]}",
                f"changing {', '.join(sorted(changed))} needs the secret(s) "
                f"{', '.join(missing)} sent again",
            )

    @api_method()
    async def delete(self, id: int, force: bool = False) -> bool:
        """Delete; refused while an ACME certificate maps a domain to it, unless forced."""
        async with self.app.db.session() as session:
            row = await session.get(DNSAuthenticator, id)
            if row is None:
                raise NotFoundError(self.kind, id)
            users = [
                cert
                for cert in (await session.scalars(select(Certificate))).all()
                if id in (cert.dns_mapping or {}).values()
            ]
            if users and not force:
                raise ConflictError(
                    f"DNS authenticator {row.name!r} is used by certificate(s) "
                    f"{', '.join(sorted(c.name for c in users))}; their renewals "
                    "would fail. Remap them first, or pass force=true."
                )
            for cert in users:
                # Forget the mapping rather than leave a dangling id, which a
                # later authenticator could be given by the database.
                cert.dns_mapping = {
                    domain: auth
                    for domain, auth in cert.dns_mapping.items()
                    if auth != id
                }
                cert.last_error = (
                    f"DNS authenticator {row.name!r} was deleted; map its "
                    "domains to another one with certificate.update"
                )
            await session.delete(row)
        if users:
            log.warning(
                "dns_authenticator_deleted_in_use",
                authenticator=row.name,
                certificates=sorted(c.name for c in users),
            )
        return True

    @api_method(readonly=True)
    async def authenticator_schemas(self) -> list[ProviderSchema]:
        """Every installed provider with the JSON schema of its attributes."""
        return [
            {
                "key": name,
                "title": cls.title,
                "schema": attributes_schema(cls.Attributes),
            }  # type: ignore[misc]
            for name, cls in sorted(self.providers().items())
        ]

    @api_method(job=True)
    async def test(self, job: Job, id: int, name: str) -> ProbeResult:
        """Write a random TXT value for ``name``, wait until every authoritative
        server returns it, remove it, and report how long each step took."""
        from certd.renewal.issuance import propagation_settings

        domain = name.strip().rstrip(".").lower().removeprefix("*.")
        if not domain or " " in domain:
            raise ValidationError.single(
                "name", "give a domain name, like www.example.com"
            )
        record = (
            domain
            if domain.startswith("_acme-challenge.")
            else f"_acme-challenge.{domain}"
        )
        await job.set_progress(10, f"publishing a test value at {record}")
        provider = await self.open_provider(id)
        async with provider:
            settings = propagation_settings(self.app, provider.context.follow_cnames)
            return await probe_provider(provider, record, settings)  # type: ignore[return-value]

    async def open_provider(self, authenticator_id: int) -> DNSProvider:
        """An instance of the provider behind an authenticator, ready to use."""
        async with self.app.db.session() as session:
            row = await session.get(DNSAuthenticator, authenticator_id)
        if row is None:
            raise NotFoundError(self.kind, authenticator_id)
        cls = self.providers().get(row.provider)
        if cls is None:
            raise NotFoundError("DNS provider", row.provider)
        attributes = cls.Attributes.model_validate(row.attributes)
        context = ProviderContext(
            request_timeout=self.app.config.dns.request_timeout,
            resolvers=self.app.config.dns.resolver_addresses(),
            follow_cnames=row.follow_cnames,
        )
        return cls(attributes, context)
