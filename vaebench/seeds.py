"""Statistics over seeds: one model's rows across seeds, their mean and spread, and whether a
difference between two sets of seeds is more than seed-to-seed noise.

``vaebench run --seeds`` tables and ``vaebench compare`` read these, so "mean ± std (n)" and
"significant" mean the same everywhere.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vaebench.schema import IDENTITY, Column, columns_of, metric_columns

CONFIDENCE = 0.95


def identity(row: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(row[k]) for k in IDENTITY)


def by_model(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, ...], list[Mapping[str, Any]]]:
    """Rows grouped by model (``model:plugin/prior``), in first-seen order."""
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(identity(row), []).append(row)
    return groups


def several_seeds(rows: Iterable[Mapping[str, Any]]) -> bool:
    return any(len({r.get("seed") for r in group}) > 1 for group in by_model(rows).values())


def values(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """The finite figures of ``key`` among rows that finished."""
    found = []
    for row in rows:
        value = row.get(key)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if row.get("status") == "ok" and number and math.isfinite(value):
            found.append(float(value))
    return found


def mean_std(col: Column, xs: list[float]) -> str:
    """``mean ± std (n=K)`` in the column's format (the sample standard deviation)."""
    if not xs:
        return "–"
    if len(xs) == 1:
        return col.format(xs[0])
    return f"{col.format(statistics.fmean(xs))} ± {col.format(statistics.stdev(xs))} (n={len(xs)})"


def summary_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per model: its settings, ``status`` as ``ok K/N``, each metric as mean ± std
    text (no per-seed detail such as one seed's IQR)."""
    out = []
    keys = {k for row in rows for k in row}
    columns = metric_columns(keys)
    settings = [c.key for c in columns_of("setting", keys)]
    for group in by_model(rows).values():
        done = sum(r.get("status") == "ok" for r in group)
        summary: dict[str, Any] = {k: group[0].get(k) for k in (*IDENTITY, *settings)}
        summary["status"] = f"ok {done}/{len(group)}"
        summary["seed"] = ",".join(str(r.get("seed")) for r in group)
        for col in columns:
            summary[col.key] = mean_std(col, values(group, col.key))
        out.append(summary)
    return out


@dataclass(frozen=True)
class Difference:
    """new - base over seeds: the difference of means, its 95% interval and Welch's p."""

    delta: float
    low: float
    high: float
    p: float
    n_base: int
    n_new: int

    @property
    def has_error_bars(self) -> bool:
        return self.n_base >= 2 and self.n_new >= 2


def difference(base: list[float], new: list[float]) -> Difference:
    """Welch's t-test (unequal variances) of ``new`` against ``base``.

    With fewer than two values on a side there is no error bar: the interval is unbounded
    and p is NaN, and callers fall back to plain thresholds. Two sides with no spread at all
    are certain: p is 0 when their means differ, 1 when they agree.
    """
    if not base or not new:
        return Difference(math.nan, math.nan, math.nan, math.nan, len(base), len(new))
    delta = statistics.fmean(new) - statistics.fmean(base)
    if len(base) < 2 or len(new) < 2:
        return Difference(delta, -math.inf, math.inf, math.nan, len(base), len(new))
    if statistics.pvariance(base) == 0 and statistics.pvariance(new) == 0:
        p = 0.0 if delta != 0 else 1.0
        return Difference(delta, delta, delta, p, len(base), len(new))
    from scipy import stats

    result = stats.ttest_ind(new, base, equal_var=False)
    interval = result.confidence_interval(CONFIDENCE)
    return Difference(
        delta, float(interval.low), float(interval.high), float(result.pvalue), len(base), len(new)
    )
