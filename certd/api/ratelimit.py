"""Rate limits on failed authentication, one token bucket per remote address.

Every failed attempt takes a token; a bucket regains one token every
``refill_seconds`` up to ``burst``. An address with an empty bucket is refused
before its key is even looked at, so guessing keys costs the guesser time and
the daemon nothing. Successful calls take no token.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

# JSON-RPC code of a request refused because its address failed too often.
TOO_MANY_FAILURES = -32006
# Addresses remembered at most; the least recently seen are forgotten first,
# so a flood of addresses cannot grow the table without bound.
MAX_TRACKED = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class AuthFailureLimiter:
    """Counts failed authentications per address and says when to refuse."""

    def __init__(
        self, burst: int, refill_seconds: float, max_tracked: int = MAX_TRACKED
    ) -> None:
        self.burst = burst
        self.refill_seconds = refill_seconds
        self.max_tracked = max_tracked
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _bucket(self, address: str, now: float) -> _Bucket:
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[address] = bucket
            while len(self._buckets) > self.max_tracked:
                self._buckets.popitem(last=False)
        else:
            regained = (now - bucket.updated) / self.refill_seconds
            bucket.tokens = min(float(self.burst), bucket.tokens + regained)
            bucket.updated = now
            self._buckets.move_to_end(address)
        return bucket

    def retry_after(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try again; 0 when it may now."""
        bucket = self._buckets.get(address)
        if bucket is None:
            return 0.0
        bucket = self._bucket(address, now)
        if bucket.tokens >= 1:
            return 0.0
        return (1 - bucket.tokens) * self.refill_seconds

    def failed(self, address: str, now: float) -> bool:
        """Record a failed attempt; True when this one emptied the bucket."""
        bucket = self._bucket(address, now)
        bucket.tokens = max(0.0, bucket.tokens - 1)
        return bucket.tokens < 1

    def forget(self, address: str) -> None:
        self._buckets.pop(address, None)


def retry_after_header(seconds: float) -> str:
    """Retry-After (RFC 9110 §10.2.3) in whole seconds, never 0 for a refusal."""
    return str(max(1, math.ceil(seconds)))
