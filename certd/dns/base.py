"""The provider plugin interface and the registry of installed providers."""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar, TypeVar

import pydantic
import structlog
from pydantic import BaseModel, ConfigDict

from certd.errors import DNSProviderError, ValidationCollector

ENTRY_POINT_GROUP = "certd.dns_providers"

_log = structlog.get_logger(__name__)


class AttributeRuleError(ValueError):
    """A rule across several attributes failed; names the attribute to blame.

    Raise it from a model validator: :func:`parse_attributes` reports it under
    ``field`` instead of under the model as a whole.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ProviderAttributes(BaseModel):
    """Base of every provider's attribute model.

    Secret fields are declared as ``pydantic.SecretStr`` so they are never shown
    in query results, logs or error messages; the JSON schema marks them with
    ``"secret": true`` (see :func:`attributes_schema`).
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


@dataclass(frozen=True)
class ProviderContext:
    """What a provider gets from the daemon besides its own attributes."""

    request_timeout: float = 30.0
    # attempts per vendor call when the vendor answers 429/5xx or throttles
    max_attempts: int = 4
    retry_base_delay: float = 0.5
    retry_max_delay: float = 30.0
    # how long a vendor may take to apply a change it accepted (Route 53 INSYNC)
    change_timeout: float = 300.0
    change_poll_interval: float = 1.0
    # (host, port) of resolvers for providers that find zones through DNS
    # (shell, acme-dns); the system resolver when empty
    resolvers: tuple[tuple[str, int], ...] = ()
    # whether DNS-01 through this authenticator follows _acme-challenge CNAMEs
    # (the issuer reads it; providers themselves write where they are told)
    follow_cnames: bool = False

    def retry_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry ``attempt`` (1-based): Retry-After, else backoff; capped."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_max_delay)
        return min(self.retry_base_delay * 2 ** (attempt - 1), self.retry_max_delay)


class DNSProvider(abc.ABC):
    """One DNS vendor: find a zone, add one TXT value, remove exactly that value.

    Implementations must be safe to call concurrently for different values on
    the same name: ``add_txt`` adds to what is there, never replaces it, and
    ``remove_txt`` removes only the given value. Names are passed without the
    trailing dot, in lower case.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    Attributes: ClassVar[type[ProviderAttributes]]

    def __init__(
        self, attributes: ProviderAttributes, context: ProviderContext
    ) -> None:
        self.attributes = attributes
        self.context = context
        self.log = structlog.get_logger("certd.dns").bind(provider=self.name)

    @abc.abstractmethod
    async def find_zone(self, fqdn: str) -> str:
        """Return the zone (no trailing dot) this provider would write ``fqdn`` in."""

    @abc.abstractmethod
    async def add_txt(self, zone: str, fqdn: str, value: str) -> None:
        """Add ``value`` to the TXT record set at ``fqdn``, keeping other values."""

    @abc.abstractmethod
    async def remove_txt(self, zone: str, fqdn: str, value: str) -> None:
        """Remove ``value`` from the TXT record set at ``fqdn``; absent is fine."""

    async def aclose(self) -> None:
        """Release sessions or clients; called once the provider is no longer used."""
        return None

    def error(self, message: str, *, retryable: bool | None = None) -> DNSProviderError:
        """A :class:`DNSProviderError` that names this provider."""
        return DNSProviderError(self.name, message, retryable=retryable)

    async def __aenter__(self) -> DNSProvider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def normalize_name(name: str) -> str:
    """A domain name in the form providers receive: lower case, no trailing dot."""
    return name.strip().rstrip(".").lower()


def in_zone(fqdn: str, zone: str) -> bool:
    """Whether ``fqdn`` is ``zone`` itself or below it, on a label boundary."""
    fqdn, zone = normalize_name(fqdn), normalize_name(zone)
    return fqdn == zone or fqdn.endswith("." + zone)


def relative_name(fqdn: str, zone: str) -> str:
    """``fqdn`` relative to ``zone``; the empty string for the apex."""
    fqdn, zone = normalize_name(fqdn), normalize_name(zone)
    if fqdn == zone:
        return ""
    if not fqdn.endswith("." + zone):
        raise ValueError(f"{fqdn} is not in zone {zone}")
    return fqdn[: -len(zone) - 1]


def candidate_zones(fqdn: str, *, min_labels: int = 2) -> list[str]:
    """``fqdn`` and each parent of at least ``min_labels`` labels, most specific first."""
    labels = normalize_name(fqdn).split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - min_labels + 1)]


def attributes_schema(model: type[ProviderAttributes]) -> dict[str, Any]:
    """The JSON schema of a provider's attributes, with secret fields marked."""
    schema = model.model_json_schema()
    for prop in schema.get("properties", {}).values():
        # an optional secret is an anyOf of the secret string and null
        if any(
            choice.get("format") == "password" or choice.get("writeOnly")
            for choice in [prop, *prop.get("anyOf", [])]
        ):
            prop["secret"] = True
    return schema


AttributesT = TypeVar("AttributesT", bound=ProviderAttributes)


def parse_attributes(
    model: type[AttributesT], data: dict[str, Any], *, prefix: str = "attributes"
) -> AttributesT:
    """Validate raw attributes into ``model``.

    Raises:
        ValidationError: naming every bad field as ``<prefix>.<field>``.
    """
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        collector = ValidationCollector()
        for err in exc.errors():
            cause = err.get("ctx", {}).get("error")
            if isinstance(cause, AttributeRuleError):
                field, message = cause.field, cause.message
            else:
                field = ".".join(str(part) for part in err["loc"])
                message = str(cause) if err["type"] == "value_error" else err["msg"]
            collector.add(f"{prefix}.{field}" if field else prefix, message)
        collector.check()
        raise  # unreachable: a pydantic error always carries at least one entry


_BUILTIN: dict[str, str] = {}


def register_builtin(name: str, target: str) -> None:
    """Register a provider shipped inside certd as ``module:Class``."""
    _BUILTIN[name] = target


def installed_providers() -> dict[str, type[DNSProvider]]:
    """Every provider: certd's own, then third-party ones from the entry point group."""
    from certd.dns import providers  # noqa: F401  (registers the built-in providers)

    found: dict[str, type[DNSProvider]] = {}
    for name, target in _BUILTIN.items():
        module_name, _, class_name = target.partition(":")
        try:
            module = importlib.import_module(module_name)
            found[name] = getattr(module, class_name)
        except (ImportError, AttributeError) as exc:
            _log.error("dns_provider_unavailable", provider=name, error=str(exc))
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            continue
        # A broken third-party plugin must not take the other providers down.
        try:
            found[ep.name] = ep.load()
        except Exception as exc:  # any import-time failure of the plugin
            _log.error("dns_provider_unavailable", provider=ep.name, error=str(exc))
    return found
