"""The memory goal's row in the report: a miss carries its reason in figures."""

from __future__ import annotations

from typing import Any

from bench.report import GOALS


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
