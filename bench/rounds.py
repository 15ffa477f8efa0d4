"""One figure from several rounds of a scenario (:mod:`bench.run` runs each in rounds)."""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["median_figures"]


def median_figures(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One proxy's figures from its rounds: the median of each number, the most ``errors``,
    the first of anything else (a note); a round that failed is reported if every round did."""
    good = [r for r in rounds if "error" not in r]
    if not good:
        return rounds[0]
    out: dict[str, Any] = {}
    for key, first in good[0].items():
        values = [r.get(key) for r in good]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if key == "errors" and numbers:
            out[key] = max(numbers)
        elif numbers and len(numbers) == len(values):
            out[key] = statistics.median(numbers)
        else:
            out[key] = first
    if len(rounds) > 1:
        out["rounds"] = len(good)
    return out
