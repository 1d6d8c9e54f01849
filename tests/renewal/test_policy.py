"""The renewal policy, rule by rule, with an explicit ``now``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from certd.config import RenewalConfig
from certd.renewal.policy import (
    Facts,
    PolicySettings,
    Window,
    backoff_delay,
    plan,
    renewal_window,
)

ISSUED = datetime(2030, 1, 1, tzinfo=UTC)
NINETY_DAYS = ISSUED + timedelta(days=90)
NO_JITTER = PolicySettings(renew_days=30, jitter=timedelta(0))


def facts(**overrides: object) -> Facts:
    values: dict[str, object] = {
        "not_before": ISSUED,
        "not_after": NINETY_DAYS,
        "seed": "serial-1",
    }
    values.update(overrides)
    return Facts(**values)  # type: ignore[arg-type]


def test_plan_renew_days_before_not_after() -> None:
    result = plan(facts(renew_days=45), NO_JITTER, now=ISSUED)

    assert result.reason == "renew_days"
    assert result.at == datetime(2030, 2, 15, tzinfo=UTC)  # 90 - 45 = day 45
    assert result.due is False


def test_plan_renew_days_exactly_a_third_is_kept() -> None:
    result = plan(facts(renew_days=30), NO_JITTER, now=ISSUED)

    assert result.reason == "renew_days"
    assert result.at == NINETY_DAYS - timedelta(days=30)


def test_plan_never_later_than_a_third_of_the_lifetime_left() -> None:
    result = plan(facts(renew_days=5), NO_JITTER, now=ISSUED)

    assert result.reason == "lifetime_fraction"
    assert result.at == ISSUED + timedelta(days=60)


def test_plan_short_lifetime_waits_for_the_earliest_fraction() -> None:
    seven_days = facts(not_after=ISSUED + timedelta(days=7), renew_days=30)

    result = plan(seven_days, NO_JITTER, now=ISSUED)

    # renew_days would make it due at once; it waits a third of 7 days instead
    assert result.reason == "lifetime_fraction"
    assert result.at == ISSUED + timedelta(days=7) / 3
    assert result.due is False


def test_plan_earliest_fraction_is_configurable() -> None:
    one_minute = facts(not_after=ISSUED + timedelta(seconds=60))
    settings = PolicySettings(earliest_fraction=0.05, jitter=timedelta(0))

    result = plan(one_minute, settings, now=ISSUED + timedelta(seconds=3))

    assert result.at == ISSUED + timedelta(seconds=3)
    assert result.due is True


def test_plan_jitter_moves_earlier_within_the_cap() -> None:
    settings = PolicySettings(renew_days=40, jitter=timedelta(hours=1))
    point = NINETY_DAYS - timedelta(days=40)

    result = plan(facts(), settings, now=ISSUED)

    assert result.window == Window(point - timedelta(hours=1), point)
    assert point - timedelta(hours=1) <= result.at <= point
    assert plan(facts(), settings, now=ISSUED).at == result.at
    others = {
        plan(facts(seed=f"serial-{n}"), settings, now=ISSUED).at for n in range(20)
    }
    assert len(others) == 20


def test_plan_jitter_is_at_most_five_percent_of_the_lifetime() -> None:
    two_minutes = facts(not_after=ISSUED + timedelta(seconds=120))
    settings = PolicySettings(jitter=timedelta(hours=1))

    window, _ = renewal_window(two_minutes, settings)

    assert window.end - window.start == timedelta(seconds=6)
    # renew_days puts it before the floor (a third of the lifetime), so the
    # window starts there
    assert window.start == ISSUED + timedelta(seconds=40)


def test_plan_ari_window_wins_over_renew_days() -> None:
    ari = Window(ISSUED + timedelta(days=50), ISSUED + timedelta(days=52))

    result = plan(facts(renew_days=45, ari_window=ari), NO_JITTER, now=ISSUED)

    assert result.reason == "ari"
    assert result.window == ari
    assert ari.start <= result.at <= ari.end
    assert result.at != ari.start  # a random point, not the start


def test_plan_ari_window_in_the_past_is_due_now() -> None:
    ari = Window(ISSUED + timedelta(days=1), ISSUED + timedelta(days=2))

    result = plan(facts(ari_window=ari), NO_JITTER, now=ISSUED + timedelta(days=3))

    assert result.due is True
    assert result.at <= ISSUED + timedelta(days=2)


def test_plan_ari_window_reversed_is_ignored() -> None:
    bad = Window(ISSUED + timedelta(days=52), ISSUED + timedelta(days=50))

    result = plan(facts(ari_window=bad), NO_JITTER, now=ISSUED)

    assert result.reason == "renew_days"


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 0), (1, 300), (2, 600), (3, 1200), (7, 19200), (8, 21600), (500, 21600)],
)
def test_backoff_delay_doubles_up_to_the_cap(failures: int, expected: int) -> None:
    settings = PolicySettings(
        retry_base=timedelta(seconds=300), retry_max=timedelta(hours=6)
    )

    assert backoff_delay(failures, settings) == timedelta(seconds=expected)


def test_plan_backoff_after_failures_when_due() -> None:
    failed_at = ISSUED + timedelta(days=70)
    due = facts(renew_days=30, failure_count=3, last_attempt_at=failed_at)

    result = plan(due, NO_JITTER, now=failed_at)

    assert result.reason == "backoff"
    # 5 min * 2**2 = 20 min, less up to a quarter of jitter
    assert (
        failed_at + timedelta(minutes=15)
        <= result.at
        <= failed_at + timedelta(minutes=20)
    )
    assert result.due is False
    assert plan(due, NO_JITTER, now=failed_at).at == result.at


def test_plan_backoff_never_pulls_a_renewal_earlier() -> None:
    # a forced renewal failed on day 1; the regular window is still ahead
    early = facts(
        renew_days=30, failure_count=1, last_attempt_at=ISSUED + timedelta(days=1)
    )

    result = plan(early, NO_JITTER, now=ISSUED + timedelta(days=1))

    assert result.reason == "renew_days"
    assert result.at == ISSUED + timedelta(days=60)


def test_plan_retry_after_is_respected_over_backoff() -> None:
    failed_at = ISSUED + timedelta(days=70)
    limited = facts(
        failure_count=1,
        last_attempt_at=failed_at,
        retry_not_before=failed_at + timedelta(hours=3),
    )

    result = plan(limited, NO_JITTER, now=failed_at)

    assert result.reason == "retry_after"
    assert result.at == failed_at + timedelta(hours=3)


def test_plan_short_retry_after_leaves_backoff_in_charge() -> None:
    failed_at = ISSUED + timedelta(days=70)
    limited = facts(
        failure_count=2,
        last_attempt_at=failed_at,
        retry_not_before=failed_at + timedelta(seconds=10),
    )

    result = plan(limited, NO_JITTER, now=failed_at)

    assert result.reason == "backoff"
    assert result.at >= failed_at + timedelta(minutes=7, seconds=30)


def test_settings_from_config() -> None:
    config = RenewalConfig(
        renew_days=10, earliest_fraction=0.5, jitter=60, retry_base=5, retry_max=50
    )

    settings = PolicySettings.from_config(config)

    assert settings == PolicySettings(
        renew_days=10,
        earliest_fraction=0.5,
        jitter=timedelta(seconds=60),
        retry_base=timedelta(seconds=5),
        retry_max=timedelta(seconds=50),
    )


def test_plan_jitter_never_goes_before_the_earliest_fraction() -> None:
    thirty_days = facts(not_after=ISSUED + timedelta(days=30), renew_days=30)
    settings = PolicySettings(jitter=timedelta(hours=1))
    floor = ISSUED + timedelta(days=30) / 3

    window, reason = renewal_window(thirty_days, settings)
    result = plan(thirty_days, settings, now=ISSUED)

    assert reason == "lifetime_fraction"
    assert window == Window(floor, floor + timedelta(hours=1))
    assert floor <= result.at <= floor + timedelta(hours=1)
