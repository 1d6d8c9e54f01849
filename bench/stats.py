"""Median, min and max of repeated runs, and the ratios between tools."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def figure(values: Sequence[float], unit: str, **extra: Any) -> dict[str, Any]:
    """A figure of several runs: median, min, max and every run."""
    clean = [round(v, 4) for v in values]
    return {
        "unit": unit,
        "median": round(statistics.median(clean), 4) if clean else None,
        "min": min(clean, default=None),
        "max": max(clean, default=None),
        "n": len(clean),
        "runs": clean,
        **extra,
    }


def ratio(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> float | None:
    """Our median over theirs (lower is better for times)."""
    if not ours or not theirs or not ours.get("median") or not theirs.get("median"):
        return None
    return round(ours["median"] / theirs["median"], 4)
