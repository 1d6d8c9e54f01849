"""The report from synthetic results: goal rows, ratios, sizes, reruns, labels."""

from __future__ import annotations

from typing import Any

from bench.report import GOALS, P99_BEFORE, render
from bench.stats import figure, ratio


def _mb(value: float) -> dict[str, Any]:
    return {"unit": "MB", "median": value, "min": value, "max": value, "n": 1}


def _entry(idle: float) -> dict[str, Any]:
    return {
        "results": {
            "idle, empty store": _mb(idle),
            "10000 certificates, after the queries": _mb(170.0),
            "for reference: the libraries alone, imported": _mb(76.2),
            "for reference: SQLAlchemy (asyncio ORM, SQLite)'s own share": _mb(18.7),
            "for reference: aiohttp's own share": _mb(9.3),
        }
    }


def test_a_missed_memory_goal_names_the_libraries_share() -> None:
    measured, met = GOALS[8]["check"](_entry(92.4))

    assert met is False
    assert measured == (
        "idle 92 MB, with inventory 170 MB (the libraries alone 76 MB,"
        " SQLAlchemy's share 19 MB: see Goals not met, and why)"
    )


def test_a_met_memory_goal_is_only_its_figures() -> None:
    assert GOALS[8]["check"](_entry(79.0)) == (
        "idle 79 MB, with inventory 170 MB",
        True,
    )


def _s(*values: float) -> dict[str, Any]:
    return figure(list(values), "s")


def _options(**changes: Any) -> dict[str, Any]:
    options = {
        "runs": 5,
        "peer_runs": 3,
        "lego_default_runs": 1,
        "certs": 50,
        "parallel": 8,
        "inventory": 10_000,
        "load_seconds": 3.0,
        "keygen_keys": 8,
        "only": [1, 2, 3, 4, 5, 6, 7, 8],
        "peers": True,
        "quick": False,
    }
    return {**options, **changes}


def _result(scenarios: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {
        "created_at": "2026-12-05T01:00:00+00:00",
        "seconds": 60.0,
        "options": _options(**options),
        "machine": {
            "nproc": 2,
            "cpu_model": "test CPU",
            "memory_gb": 4.0,
            "kernel": "6.1",
            "os": "Debian",
            "python": "3.11",
        },
        "versions": {"certd": "0.1.0 (abc1234)"},
        "scenarios": scenarios,
    }


def _many(certd: float, lego: float) -> dict[str, Any]:
    results = {"certd": _s(certd), "certbot": _s(certd * 40), "lego": _s(lego)}
    return {
        "title": GOALS[3]["title"],
        "results": results,
        "ratios": {
            "certd/certbot": ratio(results["certd"], results["certbot"]),
            "certd/lego": ratio(results["certd"], results["lego"]),
        },
    }


def test_a_ratio_is_rounded_once_so_goal_row_and_ratio_line_agree() -> None:
    # 1 / 57.15 = 0.017498: rounded to 4 places first it would show as 0.018.
    markdown = render(_result({"3": _many(1.0, 57.15)}, only=[3]))

    assert "; 0.017 x lego (1.000 s vs 57.1 s) | yes |" in markdown
    assert "Ratios of medians: certd/certbot = 0.025, certd/lego = 0.017." in markdown


def test_a_ratio_stored_rounded_is_taken_from_the_medians() -> None:
    # Results written before ratios were stored unrounded.
    entry = _many(1.0, 57.15)
    entry["ratios"] = {"certd/certbot": 0.025, "certd/lego": 0.0175}

    markdown = render(_result({"3": entry}, only=[3]))

    assert "0.017 x lego" in markdown and "certd/lego = 0.017." in markdown
    assert "0.018" not in markdown


def test_a_full_run_names_every_size_and_bolds_a_miss() -> None:
    result = _result({"3": _many(10.0, 100.0)})

    markdown = render(result)

    assert (
        "(60 s in all): up to 5 runs per figure, 3 for the peers' "
        "many-certificate loops, 50 certificates in scenario 3.\n" in markdown
    )
    assert "0.100 x lego (10.0 s vs 100.0 s) | **no** |" in markdown


def _quick_wildcard() -> dict[str, Any]:
    return {
        "title": GOALS[2]["title"],
        "results": {
            "certd": _s(0.11),
            "lego (RFC2136_SEQUENCE_INTERVAL=0)": _s(6.2),
        },
        "ratios": {"certd/lego default": None, "certd/lego sequence 0": 0.0177},
    }


def test_quick_mode_marks_verdicts_as_one_run_and_names_what_was_skipped() -> None:
    scenarios = {"1": _one(0.1, 0.6), "2": _quick_wildcard(), "8": _memory(92.4)}
    options = {"runs": 1, "peer_runs": 1, "lego_default_runs": 0, "certs": 10}
    result = _result(scenarios, inventory=1000, quick=True, **options)

    markdown = render(result)

    assert (
        "(60 s in all): 1 run per figure, 1,000 in the inventory (quick mode).\n"
        in markdown
    )
    assert "| 0.167 x lego (0.100 s vs 0.600 s) | yes (1 run) |" in markdown
    assert (
        "| certd 0.110 s; lego's default settings not run (quick mode) | - |"
        in markdown
    )
    assert "see Goals not met, and why) | no (1 run) |" in markdown
    assert "**no**" not in markdown
    assert (
        "Scenario 2 shows\n  lego with `RFC2136_SEQUENCE_INTERVAL=0` only: its run"
        " with its default `RFC2136_SEQUENCE_INTERVAL` (60 s between the two\n"
        "  authorizations of one name, which its TXT replacement needs) was"
        " skipped in quick mode." in markdown
    )
    assert "and with 0." not in markdown


def test_settings_name_lego_default_run_when_it_ran() -> None:
    entry = _quick_wildcard()
    entry["results"]["lego (default settings)"] = _s(60.7)

    markdown = render(_result({"2": entry}, only=[2]))

    assert "0.002 x lego (0.110 s vs 60.7 s) | yes |" in markdown
    assert "needs) and with 0.\n" in markdown and "skipped" not in markdown


def _one(certd: float, lego: float | None) -> dict[str, Any]:
    results = {"certd": _s(certd)}
    if lego is not None:
        results["lego"] = _s(lego)
    return {
        "title": GOALS[1]["title"],
        "results": results,
        "ratios": {"certd/lego": ratio(results["certd"], results.get("lego"))},
    }


def _memory(idle: float) -> dict[str, Any]:
    return {"title": GOALS[8]["title"], **_entry(idle)}


def test_without_peers_the_header_and_rows_say_peers_not_run() -> None:
    result = _result({"1": _one(0.1, None), "3": _many(3.0, 1.0)}, peers=False)
    result["scenarios"]["3"]["results"] = {"certd": _s(3.0)}
    result["scenarios"]["3"]["ratios"] = {"certd/certbot": None, "certd/lego": None}
    result["options"]["only"] = [1, 3]

    markdown = render(result)

    assert (
        "(60 s in all): up to 5 runs per figure, 50 certificates in scenario 3,"
        " peers not run.\n" in markdown
    )
    assert "| certd 0.100 s; peers not run | - |" in markdown
    assert "| certd 3.000 s; peers not run | - |" in markdown
    assert "many-certificate loops" not in markdown
    assert "lego did not run in it here." in markdown


def _rerun(when: str, scenarios: list[int], runs: int = 5) -> dict[str, Any]:
    return {
        "created_at": when,
        "scenarios": scenarios,
        "options": _options(runs=runs, only=scenarios, peers=False),
        "certd": f"0.1.0 ({when[11:13]}00000)",
    }


def test_a_rerun_line_superseded_by_a_later_rerun_is_dropped() -> None:
    result = _result({"1": _one(0.1, 0.6), "6": _keygen(), "8": _memory(79.0)})
    result["reruns"] = [
        _rerun("2026-12-05T02:00:00+00:00", [8]),
        _rerun("2026-12-05T03:00:00+00:00", [6, 8], runs=3),
        _rerun("2026-12-05T04:00:00+00:00", [8]),
    ]

    markdown = render(result)

    assert "02:00:00" not in markdown
    assert (
        "Scenario 6 was run again on 2026-12-05T03:00:00+00:00 with certd"
        " 0.1.0 (0300000); up to 3 runs per figure, peers not run; scenario 8,"
        " run then too, were run again since; its figures below are from that"
        " run.\n" in markdown
    )
    assert (
        "Scenario 8 was run again on 2026-12-05T04:00:00+00:00 with certd"
        " 0.1.0 (0400000); up to 5 runs per figure, 10,000 in the inventory,"
        " peers not run; its figures below are from that run.\n" in markdown
    )


def test_a_quick_rerun_marks_only_its_own_scenarios_as_one_run() -> None:
    result = _result({"1": _one(0.1, 0.6), "6": _keygen()})
    result["reruns"] = [_rerun("2026-12-05T02:00:00+00:00", [6], runs=1)]

    markdown = render(result)

    assert "| 0.167 x lego (0.100 s vs 0.600 s) | yes |" in markdown
    assert "| p99 5.0 ms | yes (1 run) |" in markdown
    assert "1 run per figure, peers not run; its figures" in markdown


def _keygen() -> dict[str, Any]:
    ms = figure([5.0], "ms")
    return {
        "title": GOALS[6]["title"],
        "results": {"p99 while generating": ms, "p99 before (idle daemon)": ms},
    }


def test_the_p99_before_key_generation_is_labelled_as_under_the_same_load() -> None:
    markdown = render(_result({"6": _keygen()}, only=[6]))

    assert f"| {P99_BEFORE} | ms | 5.0 | 5.0 | 5.0 | 1 |" in markdown
    assert "p99 before (idle daemon)" not in markdown
