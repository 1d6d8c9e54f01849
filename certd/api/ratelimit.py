"""Rate limits on failed authentication: token buckets per API key and address.

Guessing is always guessing the secret of one key, so every failed attempt
takes a token from the bucket of the key it named at its remote address, and
one from the address's own bucket, which is larger. A bucket regains tokens
steadily up to its burst. A request meeting an empty bucket is refused before
its key is looked at, so guessing costs the guesser time and the daemon
nothing. Successful calls take no token.

Counting per key matters where many clients share an address: on loopback
every local process is 127.0.0.1, and one of them sending a wrong key must not
lock out the others. The address's bucket still slows a sweep over many key
ids. A key that has authenticated from an address answers only to its own
bucket there, so a sweep by one local process does not stop the clients whose
keys work either; a guess at such a key's secret still meets that key's bucket.

Two things keep the count honest. Attempts whose outcome is not known yet
take turns per address (:meth:`AuthFailureLimiter.turn`): a thousand guesses
sent at once would otherwise all pass the check before the first failure is
counted. And a token that has authenticated is remembered by its digest
(:meth:`AuthFailureLimiter.prove`), so it skips both the limits and the turns:
no stranger's guesses can lock out a client whose key works, and a busy client
does not queue behind a guesser. Every loopback source counts as one address,
since any local process may send from any of 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import structlog

from certd.api.auth import CLIENT_FORM, split_key

log = structlog.get_logger(__name__)

# JSON-RPC code of a request refused because its address failed too often.
TOO_MANY_FAILURES = -32006
# Buckets remembered at most; the least recently seen are forgotten first,
# so a flood of addresses or key ids cannot grow the table without bound.
MAX_TRACKED = 10_000
# An address may fail as often as this many keys failing at the per-key limit
# together, in burst and in refill: room for a few clients with stale keys
# behind one address before everyone there waits, while a sweep over many key
# ids still meets a limit. Every secret has 256 bits, so a few more attempts a
# minute over all keys brings no guess nearer; one key's limit is unchanged.
ADDRESS_FACTOR = 5
# The key named by a token that names none (a malformed key or another scheme).
UNPARSEABLE = "unparseable"
# Longer key ids are cut: certd makes 12-character ones, and the cut only
# merges buckets of ids that cannot exist.
_MAX_KEY_ID = 64
_MAX_ROW_ID = 2**63 - 1
# The scope of an address's own bucket; no key's name is empty.
_ADDRESS = ""
# Tokens remembered as having authenticated, at most; only a working key adds
# one, so a guesser cannot push them out.
MAX_PROVEN = 1_000
# What every loopback source address is counted as.
LOOPBACK = "loopback"

Bucket = Literal["key", "address"]


def counted_address(address: str) -> str:
    """The address attempts are counted against: loopback sources are one."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        # A unix socket's peer, named by its user id.
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return LOOPBACK if ip.is_loopback else str(ip)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def row_key(row_id: int) -> str:
    """The limiter's name for the key with this row id (SCRAM, ``<id>-<secret>``)."""
    if not 0 < row_id <= _MAX_ROW_ID:
        return UNPARSEABLE
    return f"id={row_id}"


def token_key(token: str) -> str:
    """The limiter's name for the key a token names, read without the store.

    Tokens are read as :func:`certd.api.auth.ApiKeys.verify` reads them, so
    the ways of writing one row id (leading zeros) share a bucket. The two forms of one key cannot be told apart without a lookup
    and count apart, each form within the address's bucket.
    """
    if parts := split_key(token):
        return f"key_id={parts[0][:_MAX_KEY_ID]}"
    if match := CLIENT_FORM.fullmatch(token):
        return row_key(int(match[1]))
    return UNPARSEABLE


@dataclass
class _Bucket:
    tokens: float
    updated: float
    # The key authenticated from this address since the bucket was made.
    proven: bool = False


@dataclass
class _Turn:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Attempts holding or waiting for the lock.
    users: int = 0


@dataclass(frozen=True)
class Refusal:
    """Why an address may not try a key now: which bucket is empty, for how long."""

    bucket: Bucket
    key: str
    wait: float


class AuthFailureLimiter:
    """Counts failed authentications per key and address and says when to refuse."""

    def __init__(
        self, burst: int, refill_seconds: float, max_tracked: int = MAX_TRACKED
    ) -> None:
        self.burst = burst
        self.refill_seconds = refill_seconds
        self.address_burst = burst * ADDRESS_FACTOR
        self.address_refill_seconds = refill_seconds / ADDRESS_FACTOR
        self.max_tracked = max_tracked
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        self._proven: OrderedDict[bytes, None] = OrderedDict()
        self._turns: dict[str, _Turn] = {}

    def proven(self, token: str) -> bool:
        """Whether ``token`` authenticated lately: it skips limits and turns."""
        digest = _digest(token)
        if digest not in self._proven:
            return False
        self._proven.move_to_end(digest)
        return True

    def prove(self, token: str) -> None:
        """Remember that ``token`` authenticated."""
        digest = _digest(token)
        self._proven[digest] = None
        self._proven.move_to_end(digest)
        while len(self._proven) > MAX_PROVEN:
            self._proven.popitem(last=False)

    def disprove(self, token: str) -> None:
        """Forget ``token``: it failed (its key was revoked or removed)."""
        self._proven.pop(_digest(token), None)

    @asynccontextmanager
    async def turn(self, address: str) -> AsyncIterator[None]:
        """Hold the address's turn while an attempt's outcome is not known.

        The caller checks :meth:`refusal` again once it has the turn: the
        attempts before it may have emptied a bucket meanwhile.
        """
        scope = counted_address(address)
        turn = self._turns.get(scope)
        if turn is None:
            turn = self._turns[scope] = _Turn()
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            # The lock goes with its last user (holder or waiter), so the
            # table holds only the addresses with an attempt in flight.
            turn.users -= 1
            if turn.users == 0:
                del self._turns[scope]

    def _limits(self, scope: str) -> tuple[int, float]:
        if scope == _ADDRESS:
            return self.address_burst, self.address_refill_seconds
        return self.burst, self.refill_seconds

    def _refilled(self, name: tuple[str, str], now: float) -> _Bucket | None:
        bucket = self._buckets.get(name)
        if bucket is None:
            return None
        burst, refill_seconds = self._limits(name[1])
        regained = (now - bucket.updated) / refill_seconds
        bucket.tokens = min(float(burst), bucket.tokens + regained)
        bucket.updated = now
        self._buckets.move_to_end(name)
        return bucket

    def _bucket(self, name: tuple[str, str], now: float) -> _Bucket:
        bucket = self._refilled(name, now)
        if bucket is None:
            bucket = _Bucket(float(self._limits(name[1])[0]), now)
            self._buckets[name] = bucket
            while len(self._buckets) > self.max_tracked:
                self._buckets.popitem(last=False)
        return bucket

    def _wait(self, scope: str, bucket: _Bucket) -> float:
        return max(0.0, 1 - bucket.tokens) * self._limits(scope)[1]

    def refusal(self, address: str, key: str, now: float) -> Refusal | None:
        """Why ``address`` may not try ``key`` now; None when it may."""
        address = counted_address(address)
        refusals = []
        own = self._refilled((address, key), now)
        if own is not None and own.tokens < 1:
            refusals.append(Refusal("key", key, self._wait(key, own)))
        if own is None or not own.proven:
            shared = self._refilled((address, _ADDRESS), now)
            if shared is not None and shared.tokens < 1:
                refusals.append(Refusal("address", key, self._wait(_ADDRESS, shared)))
        # The longest wait is the one after which the key may be tried again.
        return max(refusals, key=lambda r: r.wait, default=None)

    def failed(self, address: str, key: str, now: float) -> Refusal | None:
        """Record a failed attempt; a refusal when it emptied a bucket, else None."""
        address = counted_address(address)
        emptied = []
        # The key's bucket first, so the address's is the more recently seen
        # and outlives it in the table.
        scopes: tuple[tuple[Bucket, str], ...] = (("key", key), ("address", _ADDRESS))
        for kind, scope in scopes:
            bucket = self._bucket((address, scope), now)
            had = bucket.tokens
            bucket.tokens = max(0.0, had - 1)
            if had >= 1 > bucket.tokens:
                emptied.append(Refusal(kind, key, self._wait(scope, bucket)))
        return max(emptied, key=lambda r: r.wait, default=None)

    def count_failure(self, address: str, key: str) -> None:
        """Record a failed attempt now, and log it when it emptied a bucket."""
        refused = self.failed(address, key, time.monotonic())
        if refused is not None:
            log.warning(
                "authentication_rate_limited",
                remote=address,
                key_ref=key,
                bucket=refused.bucket,
                retry_after=refused.wait,
            )

    def succeeded(self, address: str, key: str, now: float) -> None:
        """Record that ``key`` authenticated from ``address``; it takes no token."""
        if key == UNPARSEABLE:
            # Whatever authenticated, tokens naming no key stay under the
            # address's bucket.
            return
        self._bucket((counted_address(address), key), now).proven = True

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after_header(seconds: float) -> str:
    """Retry-After (RFC 9110 §10.2.3) in whole seconds, never 0 for a refusal."""
    return str(max(1, math.ceil(seconds)))


def refusal_message(address: str, refusal: Refusal) -> str:
    """What a refused caller reads: which attempts were too many, when to retry."""
    if refusal.bucket == "address":
        which = ""
    elif refusal.key == UNPARSEABLE:
        which = " with malformed API keys"
    else:
        which = f" for API key {refusal.key}"
    return (
        f"Too many failed authentication attempts from {address}{which}; "
        f"try again in {retry_after_header(refusal.wait)} s"
    )
