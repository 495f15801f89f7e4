"""Run-to-run comparison for CI: per-model deltas, and whether any model regressed.

A model regressed when its IW-NLL (or negative ELBO, where IW-NLL is missing) rose by more
than ``max_nll_increase`` nats, any of its headline throughputs (the schema's throughput
columns) fell by more than ``max_slowdown``, or it finished in the base run but not in the new one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from vaebench.errors import VaebenchError
from vaebench.io import load_run
from vaebench.schema import IDENTITY, MISSING, SPEEDS, column, is_missing, row_label

NLL_KEYS = ("iw_nll", "neg_elbo")  # the first one present is compared
# NLLs compare only on the same data (bytes and binarization), likelihood and K
MUST_MATCH = ("dataset", "data_sha256", "binarize", "likelihood", "iw_samples")


@dataclass
class Comparison:
    table: pd.DataFrame  # one row per model, formatted for display
    regressions: list[str] = field(default_factory=list)
    only_in_base: list[str] = field(default_factory=list)
    only_in_new: list[str] = field(default_factory=list)


def parse_fraction(text: str) -> float:
    """'10%' or '0.1' to 0.1."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise VaebenchError(
            f"--max-slowdown expects a percentage like 10% or a fraction like 0.1, got '{text}'"
        ) from None
    if not 0 <= value < 1:
        raise VaebenchError(f"--max-slowdown must be between 0% and 100%, got '{text}'")
    return value


def _number(value) -> float:
    return math.nan if is_missing(value) else float(value)


def _nll(row: pd.Series, side: str) -> tuple[str, float]:
    for key in NLL_KEYS:
        value = _number(row.get(f"{key}_{side}"))
        if not math.isnan(value):
            return key, value
    return NLL_KEYS[0], math.nan


def _fmt(value: float, spec: str) -> str:
    return MISSING if math.isnan(value) else format(value, spec)


def compare_runs(
    base_dir: Path, new_dir: Path, *, max_slowdown: float, max_nll_increase: float
) -> Comparison:
    base, new = load_run(base_dir).results, load_run(new_dir).results
    merged = base.merge(
        new, on=list(IDENTITY), how="outer", suffixes=("_base", "_new"), indicator=True
    )
    labels = [row_label(row) for _, row in merged.iterrows()]
    only_base = [
        label for label, m in zip(labels, merged["_merge"], strict=True) if m == "left_only"
    ]
    only_new = [
        label for label, m in zip(labels, merged["_merge"], strict=True) if m == "right_only"
    ]
    both = merged[merged["_merge"] == "both"]
    if both.empty:
        raise VaebenchError(
            f"{base_dir} and {new_dir} have no model (model:plugin/prior) in common; nothing to compare"
        )
    records, regressions = [], []
    for _, row in both.iterrows():
        name = row_label(row)
        for key in MUST_MATCH:
            a, b = row.get(f"{key}_base"), row.get(f"{key}_new")
            if not is_missing(a) and not is_missing(b) and a != b:
                raise VaebenchError(f"{name}: {key} differs ({a} vs {b}); NLLs are not comparable")
        reasons = []
        if row["status_base"] == "ok" and row["status_new"] != "ok":
            reasons.append(f"now {row['status_new']}")
        key, nll_base = _nll(row, "base")
        nll_new = _number(row.get(f"{key}_new"))
        delta = nll_new - nll_base
        if delta > max_nll_increase:
            reasons.append(f"{column(key).header} +{delta:.3f} nats")
        record = {
            "model": name,
            "status base -> new": f"{row['status_base']} -> {row['status_new']}",
            "NLL": column(key).header,
            "base": _fmt(nll_base, ".2f"),
            "new": _fmt(nll_new, ".2f"),
            "delta": _fmt(delta, "+.3f"),
        }
        for speed in SPEEDS:
            a, b = _number(row.get(f"{speed}_base")), _number(row.get(f"{speed}_new"))
            change = b / a - 1 if a > 0 else math.nan
            header = column(speed).header
            record[f"{header} change"] = _fmt(change, "+.1%")
            if change < -max_slowdown:
                reasons.append(f"{header} {change:+.1%}")
        record["verdict"] = "; ".join(reasons) or "ok"
        if reasons:
            regressions.append(f"{name}: {record['verdict']}")
        records.append(record)
    return Comparison(pd.DataFrame(records), regressions, only_base, only_new)
