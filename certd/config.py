"""The daemon's configuration: a TOML file read once at start (and on SIGHUP).

Every key has a safe default, so the daemon starts with no file at all: state
in a private directory, HTTP on 127.0.0.1 only, and a unix socket beside the
state. ``config.example.toml`` documents each key.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from certd.errors import FieldError, ValidationError

# What is not a URI character (RFC 3986 2.2, 2.3) or a whole %XX escape (2.1).
_NOT_IN_URI = re.compile(r"%(?![0-9A-Fa-f]{2})|[^A-Za-z0-9\-._~!$&'()*+,;=:@/\[\]%]")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def default_state_dir() -> Path:
    """systemd's StateDirectory when set, else /var/lib/certd for root, else XDG."""
    if state := os.environ.get("STATE_DIRECTORY"):
        return Path(state.split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/certd")
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "certd"


def default_socket_path() -> Path:
    """systemd's RuntimeDirectory when set, else /run/certd for root, else beside state."""
    if runtime := os.environ.get("RUNTIME_DIRECTORY"):
        return Path(runtime.split(":")[0]) / "certd.sock"
    if os.geteuid() == 0:
        return Path("/run/certd/certd.sock")
    return default_state_dir() / "certd.sock"


class ServerConfig(_Section):
    http_enabled: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8446, ge=0, le=65535)
    unix_socket: Path | None = Field(default_factory=default_socket_path)
    socket_mode: int = 0o600
    socket_group: str | None = None
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_batch_size: int = Field(default=100, ge=1)
    # Jobs beyond this many wait (state WAITING) until one ends.
    max_running_jobs: int = Field(default=16, ge=1)
    # Failed authentications per API key and remote address: a token bucket of
    # this many attempts that regains one every auth_failure_refill_seconds.
    # Each address also has one bucket for all keys, ADDRESS_FACTOR times this
    # in burst and rate (certd/api/ratelimit.py).
    auth_failure_burst: int = Field(default=10, ge=1)
    auth_failure_refill_seconds: float = Field(default=60.0, gt=0)
    # The name of a certificate in the store to serve HTTPS with; empty: HTTP.
    tls_certificate: str | None = None

    @field_validator("socket_mode", mode="before")
    @classmethod
    def _octal(cls, value: object) -> object:
        if isinstance(value, str):
            return int(value, 8)
        return value

    @field_validator("socket_mode")
    @classmethod
    def _tight(cls, value: int) -> int:
        if value not in (0o600, 0o660):
            raise ValueError("must be 0600 (owner only) or 0660 (owner and group)")
        return value


class StoreConfig(_Section):
    state_dir: Path = Field(default_factory=default_state_dir)
    database_url: str | None = None
    # The master key that encrypts private keys and provider secrets; default:
    # the systemd credential certd-master-key, else master.key in state_dir.
    master_key_file: Path | None = None

    def url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.state_dir / 'certd.db'}"


class AcmeConfig(_Section):
    ca_bundle: Path | None = None
    # The first look comes soon: over the internet a poll's round trip is the
    # real pace, and a CA on the same network may be done within milliseconds.
    poll_initial: float = Field(default=0.005, gt=0)
    poll_max: float = Field(default=2.0, gt=0)
    order_timeout: float = Field(default=300.0, gt=0)
    request_timeout: float = Field(default=30.0, gt=0)
    default_directory: str = "https://acme-v02.api.letsencrypt.org/directory"


class DNSConfig(_Section):
    propagation: Literal["authoritative", "resolvers"] = "authoritative"
    resolvers: list[str] = Field(default_factory=list)
    nameserver_port: int = Field(default=53, ge=1, le=65535)
    propagation_timeout: float = Field(default=120.0, gt=0)
    propagation_interval: float = Field(default=0.05, gt=0)
    propagation_max_interval: float = Field(default=2.0, gt=0)
    request_timeout: float = Field(default=30.0, gt=0)

    @field_validator("resolvers")
    @classmethod
    def _host_port(cls, value: list[str]) -> list[str]:
        for item in value:
            _resolver_address(item)
        return value

    def resolver_addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple(_resolver_address(item) for item in self.resolvers)


def _resolver_address(item: str) -> tuple[str, int]:
    """``IP``, ``IPv4:PORT`` or ``[IPv6]:PORT`` as an address and a port.

    An address, not a host name: the resolvers are what names are looked up
    with, so there is nothing to look theirs up with.
    """
    host, port = item, "53"
    if item.startswith("["):
        host, closed, rest = item[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            host = item  # refused below
        if rest:
            port = rest[1:]
    elif item.count(":") == 1:
        host, port = item.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{item!r}: expected an IP address, IPv4:PORT or [IPv6]:PORT"
        ) from None
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{item!r}: the port must be a number from 1 to 65535")
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"{item!r}: not the address of one server")
    return str(address), int(port)


class RenewalConfig(_Section):
    enabled: bool = True
    renew_days: int = Field(default=30, ge=1, le=365)
    scan_interval: float = Field(default=3600.0, gt=0)
    max_concurrent: int = Field(default=4, ge=1)
    tick_interval: float = Field(default=30.0, gt=0)
    # A renewal never starts before this fraction of the lifetime has passed,
    # however large renew_days is (short-lived certificates would loop).
    earliest_fraction: float = Field(default=1 / 3, ge=0, lt=1)
    jitter: float = Field(default=3600.0, ge=0)
    retry_base: float = Field(default=300.0, gt=0)
    retry_max: float = Field(default=21600.0, gt=0)
    failure_alert_after: int = Field(default=3, ge=1)
    expiry_warning_days: int = Field(default=14, ge=0)
    ca_warning_days: int = Field(default=90, ge=0)
    ari: bool = True
    ari_fetch_interval: float = Field(default=21600.0, ge=60)


class DeployConfig(_Section):
    # Where certificate.set_deploy may write files, and which programs its
    # hooks may run; empty: anywhere and any program.
    allowed_directories: list[Path] = Field(default_factory=list)
    allowed_programs: list[Path] = Field(default_factory=list)
    hook_timeout: float = Field(default=60.0, gt=0, le=3600)
    hook_retries: int = Field(default=5, ge=0)
    retry_base: float = Field(default=30.0, gt=0)
    retry_max: float = Field(default=3600.0, gt=0)


class WebhookConfig(_Section):
    url: str = Field(pattern=r"^https?://")
    # Event kinds to send (e.g. "certificate.renewal_failed"); empty: all.
    kinds: list[str] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=10.0, gt=0)
    retries: int = Field(default=5, ge=0)
    retry_base: float = Field(default=2.0, gt=0)


class EventsConfig(_Section):
    retention_days: int = Field(default=180, ge=1)
    webhooks: list[WebhookConfig] = Field(default_factory=list)


MAX_CRL_BASE_URL = 512


class PkiConfig(_Section):
    # The URL relying parties reach the daemon's HTTP listener at (usually a
    # reverse proxy in front of it); set, every certificate a CA of ours signs
    # names its CRL below it (RFC 5280 4.2.1.13). Unset or empty: none.
    crl_base_url: str | None = None

    @field_validator("crl_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if len(value) > MAX_CRL_BASE_URL:
            # It goes into every certificate signed, with the CRL path after it.
            raise ValueError(f"must be at most {MAX_CRL_BASE_URL} characters")
        try:
            parts = urlsplit(value)
            _ = parts.port  # reading it checks the port
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a URL: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise ValueError("must start with http:// or https://")
        if not parts.hostname:
            raise ValueError("must name a host, e.g. http://pki.example.lan")
        if parts.query or parts.fragment or "?" in value or "#" in value:
            raise ValueError("must have no query (?) or fragment (#)")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry a user name or password")
        if parts.port == 0:
            raise ValueError("port 0 is not a port to reach")
        if any(seg in (".", "..") for seg in parts.path.split("/")):
            # Every certificate would carry it; clients resolve it differently.
            raise ValueError("must have no '.' or '..' path segments")
        if not value.isascii() or any(c.isspace() for c in value):
            # A URI in a certificate is an IA5String (RFC 5280 4.2.1.6).
            raise ValueError(
                "must be ASCII without white space (an IDN host in its xn-- form)"
            )
        bad = _NOT_IN_URI.search(value)
        if bad is not None:
            # RFC 3986 2.1/2.2: other characters are written as %XX escapes.
            raise ValueError(
                f"{bad.group()!r} at position {bad.start() + 1} is not allowed in "
                "a URI; write a character outside RFC 3986 as a %XX escape"
            )
        # The CRL path (/crl/by-id/<ca id>.crl) is appended to it.
        return value.rstrip("/")


class MetricsConfig(_Section):
    enabled: bool = True


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Config(_Section):
    server: ServerConfig = Field(default_factory=ServerConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    acme: AcmeConfig = Field(default_factory=AcmeConfig)
    dns: DNSConfig = Field(default_factory=DNSConfig)
    renewal: RenewalConfig = Field(default_factory=RenewalConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    pki: PkiConfig = Field(default_factory=PkiConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    # The file this was read from, so that SIGHUP can read it again.
    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        return self._source


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    """ "unknown key", with the closest key of its section when one is close."""
    import difflib
    import typing

    section: type[BaseModel] = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue  # an item of a list of sections (events.webhooks)
        field = section.model_fields.get(part)
        candidates = [field.annotation] if field is not None else []
        found = None
        while candidates:
            kind = candidates.pop()
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                found = kind
                break
            candidates.extend(typing.get_args(kind))
        if found is None:
            return "unknown key"
        section = found
    close = difflib.get_close_matches(str(loc[-1]), list(section.model_fields), n=1)
    return f"unknown key; did you mean {close[0]!r}?" if close else "unknown key"


def load_config(path: Path | None) -> Config:
    """Read and check a TOML file; ``None`` gives the defaults.

    Raises:
        ValidationError: the file cannot be read or a key is wrong; each error
            names the key as ``section.key``.
    """
    if path is None:
        return Config()
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ValidationError.single(
            "config", f"cannot read {path}: {exc.strerror}"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError.single(
            "config", f"{path} is not valid TOML: {exc}"
        ) from exc
    import pydantic

    try:
        config = Config.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ValidationError(
            [
                FieldError(
                    ".".join(str(p) for p in err["loc"]),
                    _unknown_key(err["loc"])
                    if err["type"] == "extra_forbidden"
                    else err["msg"].removeprefix("Value error, "),
                )
                for err in exc.errors()
            ]
        ) from exc
    config._source = Path(path)
    return config
