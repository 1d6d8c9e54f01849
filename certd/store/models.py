"""The tables. Each row class is one kind of thing the API manages.

Private keys and provider secrets are declared with the encrypted column types
of :mod:`certd.store.crypto`: they are sealed in the database and read back in
the clear.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from certd.store.crypto import EncryptedJSON, EncryptedText


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and always gives them back aware.

    SQLite keeps no time zone, so without this a value read back would be naive
    and comparisons with aware datetimes would fail.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime | None, dialect: Any
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(
        self, value: datetime | None, dialect: Any
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class ApiKey(Base):
    __tablename__ = "api_key"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(128))
    # SCRAM-SHA-512 verifiers (RFC 5802): base64 of the salt, StoredKey and
    # ServerKey. Null for keys made before SCRAM existed, until their first use.
    scram_salt: Mapped[str | None] = mapped_column(String(64), default=None)
    scram_iterations: Mapped[int | None] = mapped_column(Integer, default=None)
    scram_stored_key: Mapped[str | None] = mapped_column(String(128), default=None)
    scram_server_key: Mapped[str | None] = mapped_column(String(128), default=None)
    readonly: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


class Job(Base):
    __tablename__ = "job"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    method: Mapped[str] = mapped_column(String(120))
    arguments: Mapped[Any] = mapped_column(JSON, default=list)
    state: Mapped[str] = mapped_column(String(16), index=True)
    progress_percent: Mapped[float] = mapped_column(default=0.0)
    progress_description: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[Any] = mapped_column(JSON, nullable=True, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    error_data: Mapped[Any] = mapped_column(JSON, nullable=True, default=None)
    # "apikey:" and a key's name of up to 120 characters, or another caller.
    caller: Mapped[str] = mapped_column(String(255), default="")
    # The daemon that runs the job (its node id): daemons sharing a store
    # each recover only their own jobs. Null on rows from before node ids.
    node: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class DNSAuthenticator(Base):
    __tablename__ = "dns_authenticator"
    # An id is never handed out again, so a job or a caller holding one never
    # reaches a newer row that took a deleted one's place.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    provider: Mapped[str] = mapped_column(String(64))
    # The provider's settings with its secrets: encrypted as one document.
    attributes: Mapped[dict[str, Any]] = mapped_column(
        EncryptedJSON("dns_authenticator", "attributes"), default=dict
    )
    # Whether _acme-challenge CNAMEs are followed to the zone they point into.
    follow_cnames: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default="1"
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AcmeAccount(Base):
    __tablename__ = "acme_account"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    directory: Mapped[str] = mapped_column(String(500), unique=True)
    account_url: Mapped[str | None] = mapped_column(String(500), default=None)
    key_pem: Mapped[str] = mapped_column(EncryptedText("acme_account", "key_pem"))
    contact_email: Mapped[str | None] = mapped_column(String(320), default=None)
    tos_agreed: Mapped[bool] = mapped_column(Boolean, default=False)
    terms_of_service: Mapped[str | None] = mapped_column(String(500), default=None)
    status: Mapped[str] = mapped_column(String(16), default="valid")
    eab_kid: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CertificateAuthority(Base):
    __tablename__ = "certificate_authority"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    create_type: Mapped[str] = mapped_column(String(40))
    certificate: Mapped[str] = mapped_column(Text)
    privatekey: Mapped[str | None] = mapped_column(
        EncryptedText("certificate_authority", "privatekey"), default=None
    )
    signedby_id: Mapped[int | None] = mapped_column(
        ForeignKey("certificate_authority.id", ondelete="RESTRICT"), default=None
    )
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_reason: Mapped[str | None] = mapped_column(String(40), default=None)
    crl_number: Mapped[int] = mapped_column(Integer, default=0)
    # The newest CRL (PEM) this CA signed; rebuilt whenever a revocation under
    # the CA changes and before it grows stale.
    crl: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Revocation(Base):
    """One serial a local CA revoked: the source of that CA's CRL.

    Kept apart from the certificate row, so deleting a revoked certificate
    does not take it off the CRL.
    """

    __tablename__ = "revocation"
    __table_args__ = (UniqueConstraint("authority_id", "serial"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    authority_id: Mapped[int] = mapped_column(
        ForeignKey("certificate_authority.id", ondelete="CASCADE"), index=True
    )
    # Upper-case hex, as certificate.query shows serials.
    serial: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[datetime] = mapped_column(default=utcnow)
    # An RFC 5280 5.3.1 reason name, e.g. keyCompromise.
    reason: Mapped[str | None] = mapped_column(String(40), default=None)
    # What was revoked, for people reading the list: a name and its kind.
    subject: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(16))
    not_valid_after: Mapped[datetime | None] = mapped_column(default=None)


class Certificate(Base):
    __tablename__ = "certificate"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    # CERTIFICATE or CSR: what the row holds now, independent of how it was made.
    cert_type: Mapped[str] = mapped_column(String(16))
    create_type: Mapped[str] = mapped_column(String(40))
    certificate: Mapped[str | None] = mapped_column(Text, default=None)
    privatekey: Mapped[str | None] = mapped_column(
        EncryptedText("certificate", "privatekey"), default=None
    )
    csr: Mapped[str | None] = mapped_column(Text, default=None)
    signedby_id: Mapped[int | None] = mapped_column(
        ForeignKey("certificate_authority.id", ondelete="RESTRICT"), default=None
    )
    csr_id: Mapped[int | None] = mapped_column(
        ForeignKey("certificate.id", ondelete="SET NULL"), default=None
    )
    acme_account_id: Mapped[int | None] = mapped_column(
        ForeignKey("acme_account.id", ondelete="RESTRICT"), default=None
    )
    acme_directory_uri: Mapped[str | None] = mapped_column(String(500), default=None)
    acme_uri: Mapped[str | None] = mapped_column(String(500), default=None)
    # issuer CN of the chain to prefer among those the CA offers (RFC 8555 §7.4.2)
    acme_preferred_chain: Mapped[str | None] = mapped_column(String(200), default=None)
    dns_mapping: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    renew_days: Mapped[int | None] = mapped_column(Integer, default=None)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_reason: Mapped[str | None] = mapped_column(String(40), default=None)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    failure_count: Mapped[int] = mapped_column(Integer, default=0)
    # Why next_attempt_at is what it is: renew_days, lifetime_fraction, ari,
    # backoff or retry_after (the names certificate.renewal_plan reports).
    next_attempt_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    # The CA's Retry-After of the last failure, as a point in time.
    retry_not_before: Mapped[datetime | None] = mapped_column(default=None)
    # Renewal keeps the key (and CSR) instead of generating a new one.
    # Server defaults as the migrations that added these columns wrote them,
    # so a store created from the models has the very schema of a migrated one.
    reuse_key: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    # The CA's suggested renewal window (RFC 9773) and when to ask again.
    ari_window_start: Mapped[datetime | None] = mapped_column(default=None)
    ari_window_end: Mapped[datetime | None] = mapped_column(default=None)
    ari_next_fetch_at: Mapped[datetime | None] = mapped_column(default=None)
    # File targets and hooks (certd.deploy.models.DeployConfig), the same on
    # every host. Encrypted: a target's PKCS#12 passphrase is kept in it.
    deploy: Mapped[dict[str, Any]] = mapped_column(
        EncryptedJSON("certificate", "deploy"), default=dict, server_default="{}"
    )
    # How the last deployment went, from before deployments were per host:
    # moved into the starting daemon's Deployment row and emptied
    # (certd.deploy.deployer.Deployer.adopt); nothing reads it otherwise.
    deploy_state: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict, server_default="{}"
    )
    # When a deployment was last asked of every host (the certificate was
    # stored or renewed, or its spec set); null while the spec is empty. A
    # host whose Deployment row answered another request owes one.
    deploy_next_attempt_at: Mapped[datetime | None] = mapped_column(
        default=None, index=True
    )
    # The daemon renewing the certificate, until when: daemons sharing a
    # store take this lease before a renewal, so that one renews at a time.
    # It outlives no daemon for long: one killed stops extending it.
    renewing_node: Mapped[str | None] = mapped_column(String(64), default=None)
    renewal_lease_until: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Deployment(Base):
    """How one daemon (node) last deployed one certificate onto its own host.

    The spec is the certificate's; the files and hooks are each host's own,
    so each daemon sharing the store keeps its outcome and retries here.
    """

    __tablename__ = "deployment"

    certificate_id: Mapped[int] = mapped_column(
        ForeignKey("certificate.id", ondelete="CASCADE"), primary_key=True
    )
    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The certificate's deploy_next_attempt_at that this node's last
    # deployment answered: when it differs, the node owes a deployment.
    requested_at: Mapped[datetime | None] = mapped_column(default=None)
    # As certificate.get_deploy shows it: files, hooks, ok, attempts, serial.
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Set while a failed deployment is to be retried.
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RenewalAttempt(Base):
    """One renewal of one certificate, written before each step it takes.

    An attempt that is neither succeeded nor failed was cut short; the next
    process resumes it from ``order_url`` (fetching an order the CA already
    issued instead of ordering again). The new key lives here only until the
    certificate is replaced, then it is cleared.
    """

    __tablename__ = "renewal_attempt"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    certificate_id: Mapped[int] = mapped_column(
        ForeignKey("certificate.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[int | None] = mapped_column(Integer, default=None)
    # running, succeeded, failed
    state: Mapped[str] = mapped_column(String(16), index=True)
    # schedule, manual, resume
    trigger: Mapped[str] = mapped_column(String(16))
    privatekey: Mapped[str | None] = mapped_column(
        EncryptedText("renewal_attempt", "privatekey"), default=None
    )
    csr: Mapped[str | None] = mapped_column(Text, default=None)
    replaces: Mapped[str | None] = mapped_column(String(500), default=None)
    order_url: Mapped[str | None] = mapped_column(String(500), default=None)
    order_count: Mapped[int] = mapped_column(Integer, default=0)
    old_serial: Mapped[str | None] = mapped_column(String(64), default=None)
    new_serial: Mapped[str | None] = mapped_column(String(64), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class Event(Base):
    """Something that happened to a certificate or CA, kept for event.query."""

    __tablename__ = "event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(48), index=True)
    # info, warning, error
    severity: Mapped[str] = mapped_column(String(16))
    certificate_id: Mapped[int | None] = mapped_column(
        ForeignKey("certificate.id", ondelete="SET NULL"), default=None, index=True
    )
    subject: Mapped[str | None] = mapped_column(String(120), default=None)
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class WebhookDelivery(Base):
    """A post of one event to one webhook, still to be made.

    Written in the event's transaction and deleted once the hook took the
    event or it was given up, so a restart or crash between the commit and the
    post loses no notification. The hook is named by a keyed digest of its
    URL: the URL (whose path, query or user info often holds the hook's token)
    and its headers stay in the config.
    """

    __tablename__ = "webhook_delivery"
    # Ids never reused: a post finishing late must not delete a newer row.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(
        ForeignKey("event.id", ondelete="CASCADE"), index=True
    )
    # Hex HMAC-SHA256 of the hook's URL under a key derived from the master
    # key (certd.deploy.events.hook_digest); rows of releases before it held
    # the plain SHA-256 and are renamed at start.
    hook: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # While a post is under way, when another process may take the row over.
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Only so that a delivery can be added before its event has an id.
    event: Mapped[Event] = relationship(lazy="raise")


class ChallengeRecord(Base):
    """A TXT value certd wrote (or is about to write) and must remove.

    The row is written before the value is published, so a crash between the
    two leaves a row whose removal is harmless, never a value nobody knows of.
    """

    __tablename__ = "challenge_record"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    authenticator_id: Mapped[int] = mapped_column(
        ForeignKey("dns_authenticator.id", ondelete="CASCADE")
    )
    zone: Mapped[str | None] = mapped_column(String(255), default=None)
    fqdn: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(String(255))
    order_url: Mapped[str | None] = mapped_column(String(500), default=None)
    job_id: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Node(Base):
    """A daemon using the store: who it is, where, under which key, last seen when.

    Daemons sharing a store check these rows at start (a copied state
    directory, a different master key) and before a key rotation.
    """

    __tablename__ = "node"

    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    # certd.store.crypto.key_id of the daemon's master key, never the key.
    master_key_id: Mapped[str] = mapped_column(String(32))
    # Random per process: tells a second process with the same node id apart.
    instance: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Null once the daemon stopped cleanly; refreshed by its heartbeat.
    seen_at: Mapped[datetime | None] = mapped_column(default=None)
