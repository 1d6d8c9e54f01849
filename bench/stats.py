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
    """Our median over theirs (lower is better for times), unrounded.

    The report rounds it once where it is shown: rounded here as well, the
    goal row and the ratio line could show different digits for one figure.
    """
    if not ours or not theirs or not ours.get("median") or not theirs.get("median"):
        return None
    return float(ours["median"] / theirs["median"])
