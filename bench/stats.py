"""Percentiles of latency samples (nearest-rank on the sorted sample, no interpolation)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank `p`-th percentile (0 < p <= 100); None for no values.

    Nearest rank is an observed value (never one between two samples), which is what a
    "p95 at most 2 s" goal means: 95 % of the workflows took at most this long.
    """
    if not values:
        return None
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], not {p}")
    ordered = sorted(values)
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, min, p50, p95, p99, max of `values`, rounded to milliseconds."""

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "count": len(values),
        "min": rounded(min(values)) if values else None,
        "p50": rounded(percentile(values, 50)),
        "p95": rounded(percentile(values, 95)),
        "p99": rounded(percentile(values, 99)),
        "max": rounded(max(values)) if values else None,
    }
