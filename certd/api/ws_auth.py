"""``auth``: logging a WebSocket connection in with an API key.

The connection, not a token, becomes authenticated. ``API_KEY_PLAIN`` sends
the key itself; ``SCRAM`` (SCRAM-SHA-512, see :mod:`certd.api.scram`) proves
knowledge of it in two calls, bound to the TLS certificate over ``wss://``.
Either way the username is the name the key was created under. Wrong
credentials are a normal result (``AUTH_ERR``), never a call error, because
that is how the client tells a refused login from a broken call.
"""

from __future__ import annotations

import errno
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Annotated, Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from certd.api.auth import Caller
from certd.api.ratelimit import UNPARSEABLE, refusal_message, row_key, token_key
from certd.api.registry import Service, api_method
from certd.api.scram import (
    ClientFirst,
    ServerExchange,
    StandInVerifiers,
    parse_client_first,
)
from certd.api.ws_shapes import WireError, refusal
from certd.errors import AuthenticationError

if TYPE_CHECKING:
    from certd.api.websocket import Connection

log = structlog.get_logger(__name__)

MECHANISMS = ["API_KEY_PLAIN", "SCRAM"]
# Buckets whose last logged refusal is remembered, at most.
MAX_REFUSALS_TRACKED = 10_000
AUTH_ERR = {"response_type": "AUTH_ERR"}
# One per process: unknown users get the same salt on every connection.
STAND_INS = StandInVerifiers()


class ApiKeyPlain(BaseModel):
    """``auth.login_ex`` with the key in the clear (protected only by TLS)."""

    model_config = ConfigDict(extra="forbid")

    mechanism: Literal["API_KEY_PLAIN"]
    username: str = Field(min_length=1, max_length=120)
    api_key: SecretStr
    login_options: dict[str, Any] = Field(default_factory=dict)


class ScramStep(BaseModel):
    """``auth.login_ex`` carrying one SCRAM message (RFC 5802 syntax)."""

    model_config = ConfigDict(extra="forbid")

    mechanism: Literal["SCRAM"]
    scram_type: Literal["CLIENT_FIRST_MESSAGE", "CLIENT_FINAL_MESSAGE"]
    rfc_str: str = Field(min_length=1, max_length=4096)
    login_options: dict[str, Any] = Field(default_factory=dict)


LoginEx = Annotated[ApiKeyPlain | ScramStep, Field(discriminator="mechanism")]


def _user_info(caller: Caller) -> dict[str, Any]:
    return {
        "username": caller.name.removeprefix("apikey:"),
        "readonly": caller.readonly,
    }


class RefusalLog:
    """Says when the refusals by one empty bucket are worth a log line again.

    A refused guesser may keep sending; one line per bucket per refill period
    says what is going on without letting it fill the log.
    """

    def __init__(self, max_tracked: int = MAX_REFUSALS_TRACKED) -> None:
        self.max_tracked = max_tracked
        self._logged: OrderedDict[str, float] = OrderedDict()

    def due(self, bucket: str, now: float, period: float) -> bool:
        """True, and remembered, when ``bucket`` was not logged in ``period``."""
        last = self._logged.get(bucket)
        if last is not None and now - last < period:
            return False
        self._logged[bucket] = now
        self._logged.move_to_end(bucket)
        while len(self._logged) > self.max_tracked:
            self._logged.popitem(last=False)
        return True


class AuthSession(Service):
    """The ``auth`` methods of one connection."""

    namespace = "auth"
    app: Connection

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        # The exchange under way, with the caller it logs in (None for a
        # user that does not exist) and the key's id and name.
        self._scram: tuple[ServerExchange, Caller | None, int, str] | None = None

    def _refused(self, mechanism: str, reason: str, key: str) -> dict[str, Any]:
        address = self.app.remote
        log.warning(
            "authentication_failed",
            mechanism=mechanism,
            reason=reason,
            remote=address,
            connection=self.app.id,
            key_ref=key,
        )
        self.app.server.daemon.auth_limiter.count_failure(address, key)
        return AUTH_ERR

    def _logged_in(self, caller: Caller, mechanism: str, key: str) -> None:
        self.app.server.daemon.auth_limiter.succeeded(
            self.app.remote, key, time.monotonic()
        )
        self.app.login(caller, mechanism)

    def _check_rate(self, key: str) -> None:
        # Refused before the key is looked at, as over HTTP.
        address = self.app.remote
        limiter = self.app.server.daemon.auth_limiter
        now = time.monotonic()
        refused = limiter.refusal(address, key, now)
        if refused is None:
            return
        bucket = address if refused.bucket == "address" else f"{address} {key}"
        if self.app.server.refusals.due(bucket, now, limiter.refill_seconds):
            log.warning(
                "authentication_refused_rate_limited",
                remote=address,
                connection=self.app.id,
                key_ref=key,
                bucket=refused.bucket,
                retry_after=round(refused.wait, 1),
            )
        raise WireError(refusal(errno.EAGAIN, refusal_message(address, refused)))

    @api_method(anonymous=True, readonly=True)
    async def mechanism_choices(self) -> list[str]:
        """The login mechanisms ``auth.login_ex`` accepts."""
        return MECHANISMS

    @api_method(anonymous=True, readonly=True)
    async def login_ex(self, data: LoginEx) -> dict[str, Any]:
        """Log this connection in; ``response_type`` says how it went."""
        if isinstance(data, ApiKeyPlain):
            secret = data.api_key.get_secret_value()
            key = token_key(secret)
            limiter = self.app.server.daemon.auth_limiter
            if limiter.proven(secret):
                # As over HTTP: a key that works is not held by others' guesses.
                return await self._plain(data, key)
            self._check_rate(key)
            # Logins not known to work take turns, as HTTP calls do, so one
            # connection's pipelined guesses are each counted before the next.
            async with limiter.turn(self.app.remote):
                self._check_rate(key)
                return await self._plain(data, key)
        if data.scram_type == "CLIENT_FIRST_MESSAGE":
            try:
                first = parse_client_first(data.rfc_str)
                name, key_id = first.api_key()
            except AuthenticationError as exc:
                self._check_rate(UNPARSEABLE)
                self._scram = None
                return self._refused("SCRAM", exc.message, UNPARSEABLE)
            self._check_rate(row_key(key_id))
            return await self._scram_first(first, name, key_id)
        pending = self._scram
        self._check_rate(UNPARSEABLE if pending is None else row_key(pending[2]))
        return await self._scram_final(data.rfc_str)

    @api_method(anonymous=True, readonly=True)
    async def logout(self) -> bool:
        """End this connection's login; its subscriptions end with it."""
        self._scram = None
        self.app.logout()
        return True

    @api_method(readonly=True)
    async def me(self) -> dict[str, Any]:
        """Who this connection is logged in as."""
        caller = self.app.caller
        assert caller is not None  # the dispatcher refuses anonymous callers
        return {**_user_info(caller), "caller": caller.name}

    async def _plain(self, data: ApiKeyPlain, key: str) -> dict[str, Any]:
        api_keys = self.app.server.daemon.api_keys
        limiter = self.app.server.daemon.auth_limiter
        secret = data.api_key.get_secret_value()
        caller = await api_keys.login(data.username, secret)
        if caller is None:
            limiter.disprove(secret)
            return self._refused(
                "API_KEY_PLAIN", "unknown, revoked or foreign key", key
            )
        self._logged_in(caller, "API_KEY_PLAIN", key)
        limiter.prove(secret)
        return {
            "response_type": "SUCCESS",
            "user_info": _user_info(caller),
            "authenticator": "LEVEL_1",
            "reconnect_token": None,
        }

    async def _scram_first(
        self, first: ClientFirst, name: str, key_id: int
    ) -> dict[str, Any]:
        self._scram = None
        api_keys = self.app.server.daemon.api_keys
        found = await api_keys.scram_verifier(name, key_id)
        # An unknown user is answered like a known one and refused, and
        # counted against the rate limit, only at the final message.
        caller, verifier = found or (None, STAND_INS.verifier(first.username))
        try:
            exchange = ServerExchange(first, verifier, self.app.channel_binding)
        except AuthenticationError as exc:
            return self._refused("SCRAM", exc.message, row_key(key_id))
        self._scram = (exchange, caller, key_id, name)
        return {
            "response_type": "SCRAM_RESPONSE",
            "scram_type": "SERVER_FIRST_RESPONSE",
            "rfc_str": exchange.server_first,
            "user_info": None,
        }

    async def _scram_final(self, message: str) -> dict[str, Any]:
        pending, self._scram = self._scram, None
        if pending is None:
            return self._refused(
                "SCRAM", "client-final-message without a first", UNPARSEABLE
            )
        exchange, caller, key_id, name = pending
        server_final: str | None = None
        try:
            server_final = exchange.finish(message)
        except AuthenticationError as exc:
            reason = exc.message
        if caller is None:
            # The key does not exist: refused as a wrong proof is, whatever
            # the proof, and logged for what it is.
            reason = f"no active key {key_id} named {name!r}"
        if caller is not None and server_final is not None:
            # The key may have been revoked since the first message.
            caller = await self.app.server.daemon.api_keys.current(caller)
            if caller is None:
                reason = f"key {key_id} named {name!r} was revoked"
        if caller is None or server_final is None:
            return self._refused("SCRAM", reason, row_key(key_id))
        await self.app.server.daemon.api_keys.mark_used(key_id)
        self._logged_in(caller, "SCRAM", row_key(key_id))
        return {
            "response_type": "SCRAM_RESPONSE",
            "scram_type": "SERVER_FINAL_RESPONSE",
            "rfc_str": server_final,
            "user_info": _user_info(caller),
        }
