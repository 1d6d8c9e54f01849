"""``certificate``: certificates and signing requests, created, listed and deleted.

Create types follow the NAS middleware: a certificate signed by one of our
CAs (``CERTIFICATE_CREATE_INTERNAL``), an imported certificate with its key
(``CERTIFICATE_CREATE_IMPORTED``), a new key and CSR
(``CERTIFICATE_CREATE_CSR``), an imported CSR with its key
(``CERTIFICATE_CREATE_IMPORTED_CSR``), and a certificate obtained over ACME
DNS-01 from such a CSR (``CERTIFICATE_CREATE_ACME``).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pydantic import SecretStr
from sqlalchemy import String, bindparam, select, type_coerce
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from certd.api.certificate_entries import ENTRY_FIELDS, Record, record_of
from certd.api.crud import CRUDService
from certd.api.jobs import Job, run_to_end
from certd.api.pki_import import (
    match_certificate_key,
    match_csr_key,
    read_chain,
    read_checked_key,
    read_csr,
    secret,
)
from certd.api.pki_models import (
    NAME_PATTERN,
    CertificateCreate,
    CertificateEntry,
    CertificateUpdate,
    ExportResult,
    check_revocation_change,
    check_trusted_store,
)
from certd.api.pki_params import (
    Parsed,
    apply_profile,
    given,
    parse_request,
    pick_profile,
)
from certd.api.pki_store import (
    Signer,
    chain_pem,
    find_issuer,
    is_ca_certificate,
    load_chain,
    load_signer,
    probe_key,
    record_revocation,
    remove_revocation,
    sign_request,
)
from certd.api.registry import api_method
from certd.errors import (
    ConflictError,
    NotFoundError,
    PkiError,
    ValidationCollector,
    ValidationError,
)
from certd.pki.csr import create_csr, load_csr
from certd.pki.export import to_pkcs12
from certd.pki.keys import PrivateKey, load_stored_private_key, private_key_to_pem
from certd.pki.profiles import certificate_profiles, csr_profiles
from certd.pki.sign import check_csr_names
from certd.renewal.planning import renewal_kind
from certd.store.models import (
    Certificate,
    CertificateAuthority,
    DNSAuthenticator,
    Event,
    utcnow,
)
from certd.workers import generate_key

log = structlog.get_logger(__name__)

_SHA256 = hashes.SHA256()


def _check_acme_request(data: CertificateCreate) -> None:
    errors = ValidationCollector()
    if data.csr_id is None:
        errors.add("data.csr_id", "required for CERTIFICATE_CREATE_ACME")
    if not data.acme_directory_uri:
        errors.add("data.acme_directory_uri", "required for CERTIFICATE_CREATE_ACME")
    elif not data.acme_directory_uri.startswith("https://"):
        errors.add(
            "data.acme_directory_uri",
            "must be an https:// URL (RFC 8555 requires HTTPS)",
        )
    errors.check()


async def _name_taken(session: AsyncSession, name: str) -> bool:
    found = await session.scalar(select(Certificate.id).where(Certificate.name == name))
    return found is not None


def _taken(name: str) -> str:
    return f"a certificate named {name!r} already exists"


async def _csr_and_authenticators(
    session: AsyncSession, csr_id: int | None
) -> tuple[Certificate | None, set[int]]:
    csr_row = await session.get(Certificate, csr_id) if csr_id is not None else None
    authenticators = set((await session.scalars(select(DNSAuthenticator.id))).all())
    return csr_row, authenticators


@dataclass(frozen=True)
class ImportPlan:
    """A checked import: chain leaf first, its key, and what it relates to."""

    chain: list[x509.Certificate]
    key_pem: str
    signedby: int | None
    csr_row: Certificate | None


_TABLE: Any = Certificate.__table__
# What an entry shows, in one statement: every column but the sealed ones (no
# entry shows them, and each would cost a decryption per row) and the name of
# the issuing CA of ours.
_WITH_AUTHORITY = _TABLE.outerjoin(
    CertificateAuthority.__table__,
    CertificateAuthority.id == _TABLE.c.signedby_id,
)
# Every write goes through the ORM, which stamps updated_at, so a row whose
# stamp (as stored, unparsed), CA name and csr_id (which the database itself
# clears when the CSR is deleted) did not change has the same entry.
_VERSION = type_coerce(_TABLE.c.updated_at, String).label("version")
_ENTRY_QUERY = select(
    *(column for column in _TABLE.c if column.name not in ("privatekey", "deploy")),
    _TABLE.c.privatekey.is_not(None).label("has_privatekey"),
    CertificateAuthority.name.label("authority_name"),
    _VERSION,
).select_from(_WITH_AUTHORITY)
_VERSION_QUERY = select(
    _TABLE.c.id,
    _VERSION,
    CertificateAuthority.name.label("authority_name"),
    _TABLE.c.csr_id,
).select_from(_WITH_AUTHORITY)
# Built once: building and hashing a statement per call costs more than running it.
_ALL_VERSIONS = _VERSION_QUERY.order_by(_TABLE.c.id)
_ONE_VERSION = _VERSION_QUERY.where(_TABLE.c.id == bindparam("ident"))
# Rows read (and described) at a time when entries are built.
_BUILD_BATCH = 200
# Above this many changed rows one statement reads them all.
_REFETCH_BY_ID_MAX = 500


def acme_domains(csr_pem: str) -> tuple[list[str], list[str]]:
    """(DNS names an ACME order for this CSR covers, entries dns-01 cannot prove)."""
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
    entry_fields = ENTRY_FIELDS

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        # id -> the row's compact record; see _current.
        self._entry_cache: dict[int, Record] = {}
        self.create_handlers: dict[
            str, Callable[[Job, CertificateCreate], Awaitable[int]]
        ] = {
            "CERTIFICATE_CREATE_INTERNAL": self._create_internal,
            "CERTIFICATE_CREATE_IMPORTED": self._create_imported,
            "CERTIFICATE_CREATE_CSR": self._create_csr,
            "CERTIFICATE_CREATE_IMPORTED_CSR": self._create_imported_csr,
            "CERTIFICATE_CREATE_ACME": self._create_acme,
        }

    async def on_start(self) -> None:
        from certd.renewal.issuance import clean_leftover_records

        await clean_leftover_records(self.app)

    # --- results ----------------------------------------------------------

    async def _current(self, ident: int | None = None) -> list[Record]:
        """Entries of every row in id order, or of the row ``ident`` only.

        Describing a certificate costs far more than reading a row's stamp, so
        records are kept per row and rebuilt only for rows that changed.
        """
        cache, db = self._entry_cache, self.app.db
        if ident is None:
            versions_query, params = _ALL_VERSIONS, {}
        else:
            versions_query, params = _ONE_VERSION, {"ident": ident}
            # The common case, an unchanged row, is answered without a hand-off.
            found = db.read_now(_ONE_VERSION, params)
            if found is not None and all(
                (c := cache.get(r[0])) is not None and c.version == r[1:] for r in found
            ):
                return [cache[r[0]] for r in found]

        def read(conn: Any) -> tuple[list[tuple[Any, ...]], list[Record]]:
            # Records are built here, in the reading thread, a batch of rows
            # at a time: describing thousands of certificates neither holds
            # the event loop for seconds nor keeps every raw row in memory.
            versions = db.plain_rows(conn, versions_query, params)
            stale = {
                r[0]
                for r in versions
                if (c := cache.get(r[0])) is None or c.version != r[1:]
            }
            if not stale:
                return versions, []
            if len(stale) > _REFETCH_BY_ID_MAX:
                result = conn.execute(_ENTRY_QUERY)
            else:
                result = conn.execute(_ENTRY_QUERY.where(_TABLE.c.id.in_(stale)))
            built: list[Record] = []
            for batch in result.partitions(_BUILD_BATCH):
                built.extend(
                    record_of(row, cache.get(row.id))
                    for row in batch
                    if row.id in stale
                )
            return versions, built

        versions, built = await db.read(read)
        for record in built:
            cache[record.row[0]] = record
        if ident is None and len(cache) > len(versions):
            present = {r[0] for r in versions}
            for gone in [key for key in cache if key not in present]:
                del cache[gone]
        return [cache[r[0]] for r in versions if r[0] in cache]

    async def entries(self) -> list[Record]:  # type: ignore[override]
        return await self._current()

    async def get_entry(self, id: int) -> dict[str, Any]:
        found = await self._current(id)
        if not found:
            raise NotFoundError(self.kind, id)
        return found[0].as_dict()

    # --- create: checks -------------------------------------------------------

    async def check_create(self, data: CertificateCreate) -> None:
        """Everything that can be checked before the job starts."""
        errors = ValidationCollector()
        if not NAME_PATTERN.match(data.name):
            errors.add("data.name", "use only letters, digits, '_' and '-'")
        async with self.app.db.session() as session:
            if await _name_taken(session, data.name):
                errors.add("data.name", _taken(data.name))
            if data.create_type == "CERTIFICATE_CREATE_ACME":
                # Read now, in the same session, and checked below.
                acme_rows = await _csr_and_authenticators(session, data.csr_id)
        check_trusted_store(errors, data.add_to_trusted_store)
        if data.profile is not None and data.create_type not in (
            "CERTIFICATE_CREATE_INTERNAL",
            "CERTIFICATE_CREATE_CSR",
        ):
            errors.add(
                "data.profile",
                f"profiles apply to internal certificates and CSRs, not to "
                f"{data.create_type}",
            )
        errors.check()
        if data.create_type == "CERTIFICATE_CREATE_INTERNAL":
            await self._plan_internal(data)
        elif data.create_type == "CERTIFICATE_CREATE_IMPORTED":
            await self._plan_import(data)
        elif data.create_type == "CERTIFICATE_CREATE_CSR":
            self._csr_options(data)
        elif data.create_type == "CERTIFICATE_CREATE_IMPORTED_CSR":
            await self._read_imported_csr(data)
        elif data.create_type == "CERTIFICATE_CREATE_ACME":
            self._check_acme_against(data, *acme_rows)

    def _request_values(
        self, data: CertificateCreate, profiles: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        values = given(data.model_dump(exclude_unset=True))
        return apply_profile(
            values, pick_profile(data.profile, profiles, "data.profile")
        )

    def _csr_options(self, data: CertificateCreate) -> Parsed:
        return parse_request(self._request_values(data, csr_profiles()), lifetime=False)

    async def _plan_internal(self, data: CertificateCreate) -> tuple[Parsed, Signer]:
        if data.signedby is None:
            raise ValidationError.single(
                "data.signedby",
                "required for CERTIFICATE_CREATE_INTERNAL: the id of the signing CA",
            )
        parsed = parse_request(self._request_values(data, certificate_profiles()))
        if parsed.extensions.is_ca:
            raise ValidationError.single(
                "data.cert_extensions.BasicConstraints.ca",
                "a CA certificate is made with certificateauthority.create",
            )
        now = utcnow()
        async with self.app.db.session() as session:
            signer = await load_signer(
                session,
                data.signedby,
                "data.signedby",
                now,
                crl_base_url=self.app.config.pki.crl_base_url,
            )
        # A trial signature with a throwaway key applies every rule of the
        # library (lifetime within the CA's, SAN syntax) before a job starts.
        sign_request(parsed, probe_key().public_key(), now, signer=signer)
        return parsed, signer

    async def _plan_import(self, data: CertificateCreate) -> ImportPlan:
        errors = ValidationCollector()
        if not data.certificate:
            errors.add("data.certificate", "required for CERTIFICATE_CREATE_IMPORTED")
        if data.privatekey is None and data.csr_id is None:
            errors.add(
                "data.privatekey",
                "required: the certificate's private key, or csr_id of the CSR "
                "it was issued for",
            )
        errors.check()

        chain = read_chain(data.certificate or "")
        if is_ca_certificate(chain[0]):
            raise ValidationError.single(
                "data.certificate",
                "this is a CA certificate; import it with certificateauthority.create "
                "(CA_CREATE_IMPORTED)",
            )

        csr_row = None
        if data.csr_id is not None and data.privatekey is None:
            # The key of a CSR of ours, as the import form's "CSR exists on
            # this system" offers.
            csr_row = await self._csr_row(data.csr_id)
            key = await read_checked_key(csr_row.privatekey or "", None, "data.csr_id")
            match_certificate_key(chain[0], key, "data.csr_id")
        else:
            key = await read_checked_key(secret(data.privatekey) or "", data.passphrase)
            match_certificate_key(chain[0], key)

        async with self.app.db.session() as session:
            authority = await find_issuer(session, chain[0])
        return ImportPlan(
            chain,
            private_key_to_pem(key),
            authority.id if authority else None,
            csr_row,
        )

    async def _read_imported_csr(
        self, data: CertificateCreate
    ) -> tuple[x509.CertificateSigningRequest, PrivateKey]:
        errors = ValidationCollector()
        if not data.CSR:
            errors.add("data.CSR", "required for CERTIFICATE_CREATE_IMPORTED_CSR")
        if data.privatekey is None:
            errors.add("data.privatekey", "required: the CSR's private key")
        errors.check()
        csr = read_csr(data.CSR or "")
        # Refused early, by the rules ca_sign_csr applies again when signing.
        check_csr_names(csr, "data.CSR")
        key = await read_checked_key(secret(data.privatekey) or "", data.passphrase)
        match_csr_key(csr, key)
        return csr, key

    async def _csr_row(self, csr_id: int) -> Certificate:
        async with self.app.db.session() as session:
            row = await session.get(Certificate, csr_id)
        if row is None or row.cert_type != "CSR":
            raise ValidationError.single("data.csr_id", f"no CSR with id {csr_id}")
        if not row.privatekey:
            raise ValidationError.single(
                "data.csr_id", "the CSR has no private key stored with it"
            )
        return row

    async def _check_acme(
        self, data: CertificateCreate, session: AsyncSession | None = None
    ) -> Certificate:
        """The CSR an ACME order would use, once ``data`` is checked against it.

        ``session`` is the caller's when it has one open: the daemon's
        sessions share one connection, so opening a second would wait for it.
        """
        if session is None:
            async with self.app.db.session() as session:
                rows = await _csr_and_authenticators(session, data.csr_id)
        else:
            rows = await _csr_and_authenticators(session, data.csr_id)
        return self._check_acme_against(data, *rows)

    @staticmethod
    def _check_acme_against(
        data: CertificateCreate, csr_row: Certificate | None, authenticators: set[int]
    ) -> Certificate:
        _check_acme_request(data)
        errors = ValidationCollector()
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

    # --- create: the job --------------------------------------------------------

    @api_method(
        job=True,
        secret_params=("data.privatekey", "data.passphrase"),
        check="check_create",
    )
    async def create(self, job: Job, data: CertificateCreate) -> CertificateEntry:
        """Create a certificate or CSR; the job's result is the new entry."""
        # check_create ran before the job was queued. Each handler reads again
        # what it builds on, and _insert refuses a name taken in the meantime.
        await job.set_progress(2, "checked the request")
        new_id = await self.create_handlers[data.create_type](job, data)
        # Stored: from here an abort or a stop would report a job that failed
        # while its certificate exists, and a retry would find the name taken.
        try:
            entry = await run_to_end(self.get_entry(new_id))
        except NotFoundError:
            # Deleted by another call since it was stored: the job did its
            # work, and its result is what the store transaction recorded.
            log.info("certificate_deleted_after_create", certificate=data.name)
            return {"id": new_id, "name": data.name}  # type: ignore[return-value]
        return entry  # type: ignore[return-value]

    async def _insert(self, row: Certificate, job: Job | None = None) -> int:
        """Store ``row``; ``job``, the job storing it, is marked done with it.

        The transaction runs to its end even if the job is aborted or the
        daemon stops meanwhile: whether the row was stored decides the job's
        outcome, so it must be known.
        """
        taken = ValidationError.single("data.name", _taken(row.name))
        try:
            event = await run_to_end(self._store(row, job, taken))
        except IntegrityError:
            # Another job stored the same name between our check and insert.
            raise taken from None
        log.info(
            "certificate_stored", certificate=row.name, create_type=row.create_type
        )
        if event is not None:
            self.app.events.deliver(event)
        return row.id

    async def _store(
        self, row: Certificate, job: Job | None, taken: ValidationError
    ) -> Event | None:
        async with self.app.db.session() as session:
            if await _name_taken(session, row.name):
                raise taken
            if (
                row.csr_id is not None
                and await session.get(Certificate, row.csr_id) is None
            ):
                # The CSR was deleted while the job ran; the certificate
                # keeps its own copy of the CSR and key, so only the link goes.
                row.csr_id = None
            if (
                row.signedby_id is not None
                and await session.get(CertificateAuthority, row.signedby_id) is None
            ):
                raise ValidationError.single(
                    "data.signedby", "the CA was deleted while the job ran"
                )
            session.add(row)
            await session.flush()
            if job is not None:
                # With the row: a crash after this commit leaves the job done.
                await self.app.jobs.stage_success(
                    session, job, {"id": row.id, "name": row.name}
                )
            if row.cert_type != "CERTIFICATE":
                return None
            return self.app.renewal.stage_change(session, row)

    async def _create_internal(self, job: Job, data: CertificateCreate) -> int:
        parsed, signer = await self._plan_internal(data)
        await job.set_progress(10, f"generating a new {parsed.key.key_type} key")
        key_pem, key = await self.app.workers.run(generate_key, parsed.key.model_dump())
        await job.set_progress(70, f"signing with CA {signer.name!r}")
        cert = sign_request(parsed, key.public_key(), utcnow(), signer=signer)
        log.info(
            "certificate_issued",
            certificate=data.name,
            authority=signer.name,
            serial=f"{cert.serial_number:X}",
        )
        return await self._insert(
            Certificate(
                name=data.name,
                cert_type="CERTIFICATE",
                create_type=data.create_type,
                certificate=chain_pem([cert, *signer.chain]),
                privatekey=key_pem,
                signedby_id=signer.id,
            ),
            job,
        )

    async def _create_imported(self, job: Job, data: CertificateCreate) -> int:
        plan = await self._plan_import(data)
        await job.set_progress(50, "storing the imported certificate")
        return await self._insert(
            Certificate(
                name=data.name,
                cert_type="CERTIFICATE",
                create_type=data.create_type,
                certificate=chain_pem(plan.chain),
                privatekey=plan.key_pem,
                signedby_id=plan.signedby,
                csr=plan.csr_row.csr if plan.csr_row else None,
                csr_id=plan.csr_row.id if plan.csr_row else None,
            ),
            job,
        )

    async def _create_csr(self, job: Job, data: CertificateCreate) -> int:
        parsed = self._csr_options(data)
        await job.set_progress(10, f"generating a new {parsed.key.key_type} key")
        key_pem, key = await self.app.workers.run(generate_key, parsed.key.model_dump())
        await job.set_progress(70, "signing the CSR")
        csr = create_csr(
            key,
            parsed.subject,
            parsed.san,
            parsed.extensions,
            parsed.key.digest_algorithm,
        )
        csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode()
        return await self._insert(
            Certificate(
                name=data.name,
                cert_type="CSR",
                create_type=data.create_type,
                csr=csr_pem,
                privatekey=key_pem,
            ),
            job,
        )

    async def _create_imported_csr(self, job: Job, data: CertificateCreate) -> int:
        csr, key = await self._read_imported_csr(data)
        await job.set_progress(50, "storing the imported CSR")
        return await self._insert(
            Certificate(
                name=data.name,
                cert_type="CSR",
                create_type=data.create_type,
                csr=csr.public_bytes(serialization.Encoding.PEM).decode(),
                privatekey=private_key_to_pem(key),
            ),
            job,
        )

    async def _create_acme(self, job: Job, data: CertificateCreate) -> int:
        async with self.app.db.session() as session:
            # Before ordering: a certificate that cannot be stored is not ordered.
            if await _name_taken(session, data.name):
                raise ValidationError.single("data.name", _taken(data.name))
            csr_row = await self._check_acme(data, session)
        issued = await self.app.issuer.issue(
            csr_pem=csr_row.csr or "",
            directory=data.acme_directory_uri or "",
            dns_mapping=data.dns_mapping,
            tos=data.tos,
            progress=job.set_progress,
            job_id=job.id,
            preferred_chain=data.preferred_chain,
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
                acme_preferred_chain=data.preferred_chain,
                dns_mapping=data.dns_mapping,
                renew_days=data.renew_days,
            ),
            job,
        )

    # --- update and delete -------------------------------------------------

    @api_method()
    async def update(self, id: int, data: CertificateUpdate) -> CertificateEntry:
        """Rename, change ACME renewal settings, or revoke a certificate of our CA."""
        revocation_changed = False
        async with self.app.db.session() as session:
            row = await session.get(Certificate, id)
            if row is None:
                raise NotFoundError(self.kind, id)
            errors = ValidationCollector()
            if data.name is not None and data.name != row.name:
                if not NAME_PATTERN.match(data.name):
                    errors.add("data.name", "use only letters, digits, '_' and '-'")
                elif await _name_taken(session, data.name):
                    errors.add("data.name", _taken(data.name))
            is_acme = row.acme_account_id is not None
            if data.renew_days is not None and renewal_kind(row) is None:
                errors.add(
                    "data.renew_days",
                    "applies to certificates certd renews: ACME ones and those "
                    "signed by one of its CAs",
                )
            if data.dns_mapping is not None and not is_acme:
                errors.add("data.dns_mapping", "applies to ACME certificates only")
            check_trusted_store(errors, data.add_to_trusted_store)
            self._check_revocation(row, data, errors)
            errors.check()
            if data.dns_mapping is not None:
                probe = CertificateCreate(
                    name=row.name,
                    create_type="CERTIFICATE_CREATE_ACME",
                    csr_id=row.csr_id,
                    acme_directory_uri=row.acme_directory_uri,
                    dns_mapping=data.dns_mapping,
                )
                if row.csr_id:
                    await self._check_acme(probe, session)
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
            event = None
            if data.revoked is not None:
                revocation_changed = await self._apply_revocation(session, row, data)
                if revocation_changed and row.revoked:
                    event = self.app.renewal.stage_change(session, row)
            row.updated_at = utcnow()
            await session.flush()
            authority_id = row.signedby_id
        if event is not None:
            self.app.events.deliver(event)
        if revocation_changed and authority_id is not None:
            await self.app.services["certificateauthority"].crls.publish(authority_id)
        return await self.get_entry(id)  # type: ignore[return-value]

    def _check_revocation(
        self, row: Certificate, data: CertificateUpdate, errors: ValidationCollector
    ) -> None:
        if data.revoked is None:
            check_revocation_change(
                errors,
                revoked=None,
                reason=data.revoked_reason,
                now_revoked=row.revoked,
                now_reason=row.revoked_reason,
            )
            return
        if row.cert_type == "CSR":
            errors.add(
                "data.revoked", "a CSR is not a certificate and cannot be revoked"
            )
        elif row.acme_account_id is not None:
            errors.add(
                "data.revoked",
                "an ACME certificate is revoked at its CA: call certificate.revoke",
            )
        elif row.signedby_id is None:
            errors.add(
                "data.revoked",
                "only certificates signed by a local CA can be revoked here",
            )
        else:
            check_revocation_change(
                errors,
                revoked=data.revoked,
                reason=data.revoked_reason,
                now_revoked=row.revoked,
                now_reason=row.revoked_reason,
            )

    async def _apply_revocation(
        self, session: Any, row: Certificate, data: CertificateUpdate
    ) -> bool:
        """Record or lift the revocation; True when the CRL must change."""
        assert row.signedby_id is not None
        try:
            leaf = load_chain(row.certificate or "")[0]
        except PkiError as exc:
            raise ValidationError.single(
                "data.revoked", f"the stored certificate cannot be read: {exc.message}"
            ) from None
        authority = await session.get(CertificateAuthority, row.signedby_id)
        if authority is None or not authority.privatekey:
            raise ValidationError.single(
                "data.revoked",
                "the signing CA has no private key, so it cannot publish a CRL",
            )
        if data.revoked:
            reason = data.revoked_reason
            if row.revoked and row.revoked_reason == reason:
                return False
            now = utcnow()
            await record_revocation(
                session,
                authority_id=row.signedby_id,
                cert=leaf,
                subject=row.name,
                kind="certificate",
                reason=reason,
                revoked_at=row.revoked_at or now,
            )
            row.revoked = True
            row.revoked_at = row.revoked_at or now
            row.revoked_reason = reason
            row.next_attempt_at = None
            log.info(
                "certificate_revoked",
                certificate=row.name,
                authority=authority.name,
                serial=f"{leaf.serial_number:X}",
                reason=reason,
            )
            return True
        if not row.revoked:
            return False
        await remove_revocation(session, row.signedby_id, leaf)
        row.revoked = False
        row.revoked_at = None
        row.revoked_reason = None
        log.info("certificate_hold_lifted", certificate=row.name)
        return True

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

    # --- export -------------------------------------------------------------

    @api_method(secret_params=("password",), reveals_keys=True)
    async def export(
        self,
        id: int,
        format: Literal["PEM", "PKCS12"] = "PEM",
        password: SecretStr | None = None,
    ) -> ExportResult:
        """A certificate with its chain and private key, as PEM or PKCS#12."""
        async with self.app.db.session() as session:
            row = await session.get(Certificate, id)
            if row is None:
                raise NotFoundError(self.kind, id)
            ca_chain: list[x509.Certificate] = []
            if row.signedby_id is not None:
                authority = await session.get(CertificateAuthority, row.signedby_id)
                if authority is not None:
                    ca_chain = _chain_or_empty(authority.certificate)
        if row.cert_type != "CERTIFICATE" or not row.certificate:
            raise ValidationError.single(
                "id", f"{row.name!r} is a CSR, not a certificate"
            )
        if not row.privatekey:
            raise ValidationError.single("id", f"{row.name!r} has no private key")
        if format == "PKCS12" and not (password and password.get_secret_value()):
            raise ValidationError.single(
                "password",
                "a PKCS#12 file holds the private key: give a password to encrypt it",
            )
        if format == "PEM" and password is not None:
            raise ValidationError.single(
                "password", "applies to PKCS12 only; PEM keys are exported unencrypted"
            )
        try:
            certs = load_chain(row.certificate)
            key = load_stored_private_key(row.privatekey)
        except PkiError as exc:
            raise ValidationError.single(
                "id", f"{row.name!r} cannot be exported: {exc.message}"
            ) from None
        chain = certs[1:]
        # The stored chain may end below the root; our CA's chain completes it.
        known = {c.fingerprint(_SHA256) for c in certs}
        chain.extend(c for c in ca_chain if c.fingerprint(_SHA256) not in known)

        pem = serialization.Encoding.PEM
        result: dict[str, Any] = {
            "id": row.id,
            "name": row.name,
            "format": format,
            "certificate": certs[0].public_bytes(pem).decode(),
            "chain": [c.public_bytes(pem).decode() for c in chain],
            "privatekey": None,
            "pkcs12": None,
        }
        if format == "PEM":
            result["privatekey"] = private_key_to_pem(key)
        else:
            p12 = to_pkcs12(certs[0], key, chain, secret(password), row.name)
            result["pkcs12"] = base64.b64encode(p12).decode()
        log.info(
            "certificate_exported",
            certificate=row.name,
            certificate_id=row.id,
            format=format,
            encrypted=bool(password) if format == "PKCS12" else False,
        )
        return result  # type: ignore[return-value]


def _chain_or_empty(pem: str) -> list[x509.Certificate]:
    try:
        return load_chain(pem)
    except PkiError:
        return []
