"""Every statistic over seeds: one model's rows across seeds, their mean and spread, the
summary of a sweep's cells, and whether a difference between two sets of seeds is more than
seed-to-seed noise.

The console's ``--seeds`` tables, the run report, the sweep files and report, and
``vaebench compare`` all read these, so "mean ± std (n)" and "significant" mean the same
everywhere.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from vaebench.schema import IDENTITY, MISSING, Column, columns_of, is_missing, metric_columns

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


def mean(xs: Sequence[float]) -> float:
    """The mean, NaN for no values."""
    return statistics.fmean(xs) if xs else math.nan


def format_mean_std(col: Column, mean: Any, std: Any, count: Any) -> str:
    """``mean ± std (n=K)`` in the column's format; no ``±`` where the spread is unknown."""
    if is_missing(mean):
        return MISSING
    spread = "" if is_missing(std) else f" ± {col.format(std)}"
    return f"{col.format(mean)}{spread} (n={int(count)})"


def mean_std(col: Column, xs: list[float]) -> str:
    """``mean ± std (n=K)`` of the values (the sample standard deviation); one value alone."""
    if not xs:
        return MISSING
    if len(xs) == 1:
        return col.format(xs[0])
    return format_mean_std(col, statistics.fmean(xs), statistics.stdev(xs), len(xs))


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


def summarize(sweep: pd.DataFrame) -> pd.DataFrame:
    """A sweep's (or several runs') rows grouped over everything but the seed: cells per
    group, how many finished, and each metric's mean, std and count over those that finished."""
    keys = [c for c in sweep.columns if c.startswith("axis.") and c != "axis.seed"]
    keys += [c for c in IDENTITY if c in sweep]
    if not keys:
        keys = ["all"]
        sweep = sweep.assign(all="all")
    finished = sweep[sweep["status"] == "ok"] if "status" in sweep else sweep.iloc[:0]
    metrics = [c.key for c in metric_columns(sweep.columns)]
    groups = sweep.groupby(keys, dropna=False, sort=False)
    summary = groups.size().rename("cells").reset_index()
    done = finished.groupby(keys, dropna=False, sort=False).size().rename("finished").reset_index()
    summary = summary.merge(done, on=keys, how="left")
    summary["finished"] = summary["finished"].fillna(0).astype(int)
    if metrics and len(finished):
        stats = finished.groupby(keys, dropna=False, sort=False)[metrics].agg(
            ["mean", "std", "count"]
        )
        stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
        summary = summary.merge(stats.reset_index(), on=keys, how="left")
    return summary
