"""Run-to-run comparison for CI: per-model deltas, and whether any model regressed.

A model regressed when its IW-NLL (or negative ELBO, where IW-NLL is missing) rose by more
than ``max_nll_increase`` nats, any of its throughputs fell by more than ``max_slowdown``,
or it finished in the base run but not in the new one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from vaebench.errors import VaebenchError
from vaebench.results import load_run

KEY = ["model", "plugin", "prior"]
SPEEDS = ("train_samples_per_s", "encode_samples_per_s", "decode_samples_per_s")
MUST_MATCH = ("dataset", "likelihood")


@dataclass
class Comparison:
    table: pd.DataFrame
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


def _nll(row: pd.Series, side: str) -> float:
    for column in ("iw_nll", "neg_elbo"):
        value = row.get(f"{column}_{side}")
        if value is not None and not pd.isna(value):
            return float(value)
    return math.nan


def compare_runs(
    base_dir: Path, new_dir: Path, *, max_slowdown: float, max_nll_increase: float
) -> Comparison:
    base, new = load_run(base_dir).results, load_run(new_dir).results
    for frame in (base, new):  # runs from before --model existed trained the vae objective
        if "model" not in frame:
            frame["model"] = "vae"
    merged = base.merge(new, on=KEY, how="outer", suffixes=("_base", "_new"), indicator=True)
    label = (
        merged["model"].astype(str)
        + ":"
        + merged["plugin"].astype(str)
        + "/"
        + merged["prior"].astype(str)
    )
    only_base = list(label[merged["_merge"] == "left_only"])
    only_new = list(label[merged["_merge"] == "right_only"])
    both = merged[merged["_merge"] == "both"].copy()
    if both.empty:
        raise VaebenchError(
            f"{base_dir} and {new_dir} have no model (model:plugin/prior) in common; nothing to compare"
        )
    rows, regressions = [], []
    for _, row in both.iterrows():
        name = f"{row['model']}:{row['plugin']}/{row['prior']}"
        for column in MUST_MATCH:
            a, b = row.get(f"{column}_base"), row.get(f"{column}_new")
            if a is not None and b is not None and not pd.isna(a) and not pd.isna(b) and a != b:
                raise VaebenchError(
                    f"{name}: {column} differs ({a} vs {b}); NLLs are not comparable"
                )
        record = {"model": name, "status_base": row["status_base"], "status_new": row["status_new"]}
        reasons = []
        if row["status_base"] == "ok" and row["status_new"] != "ok":
            reasons.append(f"now {row['status_new']}")
        nll_base, nll_new = _nll(row, "base"), _nll(row, "new")
        record["nll_base"], record["nll_new"], record["nll_delta"] = (
            nll_base,
            nll_new,
            nll_new - nll_base,
        )
        if record["nll_delta"] > max_nll_increase:
            reasons.append(f"NLL +{record['nll_delta']:.3f} nats")
        for speed in SPEEDS:
            a, b = row.get(f"{speed}_base"), row.get(f"{speed}_new")
            change = (
                (float(b) / float(a) - 1)
                if a and b and not pd.isna(a) and not pd.isna(b)
                else math.nan
            )
            record[f"{speed.removesuffix('_samples_per_s')}_change"] = change
            if change < -max_slowdown:
                reasons.append(f"{speed.split('_')[0]} {change:+.1%}")
        record["verdict"] = "; ".join(reasons) if reasons else "ok"
        if reasons:
            regressions.append(f"{name}: {record['verdict']}")
        rows.append(record)
    return Comparison(pd.DataFrame(rows), regressions, only_base, only_new)
