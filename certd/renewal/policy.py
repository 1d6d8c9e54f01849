"""When to renew: a pure function of a certificate's dates, failures and CA advice.

The rules, in order:

1. Where the CA publishes a renewal window (ARI, RFC 9773), renew at a random
   point inside it.
2. Otherwise renew ``renew_days`` before ``not_after``, but never later than
   when a third of the lifetime remains and never before ``earliest_fraction``
   of it has passed (a short-lived certificate would otherwise be due the
   moment it is issued). The point is moved earlier by a random jitter of up
   to ``jitter`` (at most 5 % of the lifetime) so that renewals spread out;
   where the floor set the point, the jitter moves it later instead.
3. After a failure the next attempt waits ``retry_base * 2**(failures - 1)``,
   capped at ``retry_max`` (less a random quarter), and never before the CA's
   Retry-After.

Random choices are seeded by the certificate (its serial), so planning the
same certificate twice gives the same time. ``now`` is a parameter: nothing
here reads the clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from certd.config import RenewalConfig

Reason = Literal["renew_days", "lifetime_fraction", "ari", "backoff", "retry_after"]

# Renew no later than when this fraction of the lifetime is left.
LATEST_REMAINING_FRACTION = 1 / 3
# Jitter never moves a renewal by more than this fraction of the lifetime.
JITTER_FRACTION = 0.05
# A retry waits between this fraction and all of its backoff delay.
BACKOFF_JITTER = 0.25


@dataclass(frozen=True)
class PolicySettings:
    """The knobs of the policy; ``renew_days`` is the default for certificates."""

    renew_days: int = 30
    earliest_fraction: float = 1 / 3
    jitter: timedelta = timedelta(hours=1)
    retry_base: timedelta = timedelta(minutes=5)
    retry_max: timedelta = timedelta(hours=6)

    @classmethod
    def from_config(cls, config: RenewalConfig) -> PolicySettings:
        return cls(
            renew_days=config.renew_days,
            earliest_fraction=config.earliest_fraction,
            jitter=timedelta(seconds=config.jitter),
            retry_base=timedelta(seconds=config.retry_base),
            retry_max=timedelta(seconds=config.retry_max),
        )


@dataclass(frozen=True)
class Window:
    """A span of time in which a renewal should start."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class Facts:
    """What the policy needs to know about one certificate."""

    not_before: datetime
    not_after: datetime
    renew_days: int | None = None
    failure_count: int = 0
    last_attempt_at: datetime | None = None
    retry_not_before: datetime | None = None
    ari_window: Window | None = None
    # Seeds the random choices: the same certificate gets the same plan.
    seed: str = ""


@dataclass(frozen=True)
class Plan:
    """When the next attempt is due, why, and the window it was chosen from."""

    at: datetime
    reason: Reason
    window: Window
    due: bool


def renewal_window(facts: Facts, settings: PolicySettings) -> tuple[Window, Reason]:
    """The window a first attempt is picked from, and the rule that set it."""
    ari = facts.ari_window
    if ari is not None and ari.start <= ari.end:
        return ari, "ari"

    lifetime = facts.not_after - facts.not_before
    latest = facts.not_after - lifetime * LATEST_REMAINING_FRACTION
    earliest = min(facts.not_before + lifetime * settings.earliest_fraction, latest)
    renew_days = facts.renew_days or settings.renew_days
    by_days = facts.not_after - timedelta(days=renew_days)

    spread = min(settings.jitter, lifetime * JITTER_FRACTION)
    if by_days < earliest:
        # The floor holds: here the jitter moves the point later, as far as
        # the latest point allows.
        return Window(earliest, earliest + min(spread, latest - earliest)), (
            "lifetime_fraction"
        )
    reason: Reason
    if by_days > latest:
        point, reason = latest, "lifetime_fraction"
    else:
        point, reason = by_days, "renew_days"
    return Window(point - spread, point), reason


def backoff_delay(failure_count: int, settings: PolicySettings) -> timedelta:
    """The full delay after ``failure_count`` failures in a row, before jitter."""
    if failure_count <= 0:
        return timedelta(0)
    # In float seconds: a long failure streak must reach the cap, not overflow.
    seconds = settings.retry_base.total_seconds() * 2.0 ** min(failure_count - 1, 64)
    return timedelta(seconds=min(seconds, settings.retry_max.total_seconds()))


def plan(facts: Facts, settings: PolicySettings, now: datetime) -> Plan:
    """The next attempt to renew the certificate described by ``facts``."""
    window, reason = renewal_window(facts, settings)
    rng = random.Random(f"{facts.seed}|{window.start.isoformat()}")
    at = window.start + (window.end - window.start) * rng.random()
    chosen: Reason = reason

    if facts.failure_count > 0 and facts.last_attempt_at is not None:
        delay = backoff_delay(facts.failure_count, settings)
        retry_rng = random.Random(f"{facts.seed}|retry|{facts.failure_count}")
        delay *= 1 - BACKOFF_JITTER * retry_rng.random()
        retry_at = facts.last_attempt_at + delay
        if retry_at > at:
            at, chosen = retry_at, "backoff"

    if facts.retry_not_before is not None and facts.retry_not_before > at:
        at, chosen = facts.retry_not_before, "retry_after"

    return Plan(at=at, reason=chosen, window=window, due=at <= now)
