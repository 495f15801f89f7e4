"""Run-to-run comparison for CI: per-model differences, and whether any model regressed.

A model regressed when its IW-NLL (or negative ELBO, where IW-NLL is missing) rose by more
than ``max_nll_increase`` nats, any of its headline throughputs (the schema's throughput
columns) fell by more than ``max_slowdown``, or it finished in the base run but not in the
new one. With several seeds on both sides (``vaebench run --seeds``, or a sweep's seed axis)
a change counts only when it is also significant: Welch's t-test of the seeds, p < ``alpha``;
the table gives the difference of means with its 95% interval and p. With one seed on a side
there are no error bars, and the thresholds alone decide, as the table says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vaebench.errors import VaebenchError
from vaebench.io import load_run, read_json
from vaebench.schema import MISSING, SPEEDS, column, is_missing, row_label, with_mode_defaults
from vaebench.seeds import Difference, by_model, difference, mean, values

NLL_KEYS = ("iw_nll", "neg_elbo")  # the first one present is compared
# NLLs compare only on the same data (bytes and binarization), likelihood and K
MUST_MATCH = ("dataset", "data_sha256", "binarize", "likelihood", "iw_samples")
NO_ERROR_BARS = "one seed on a side: no error bars, thresholds alone"
SEEDLESS_AXES = {"axis.seed", "axis.plugins", "axis.priors", "axis.models"}  # in the label


@dataclass
class Comparison:
    table: pd.DataFrame  # one row per model, formatted for display
    regressions: list[str] = field(default_factory=list)
    only_in_base: list[str] = field(default_factory=list)
    only_in_new: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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


def load_rows(path: Path) -> list[dict[str, Any]]:
    """A run folder's rows, or every cell's rows of a sweep folder (``sweep.json`` beside)."""
    if (path / "sweep.json").is_file() and (path / "sweep.csv").is_file():
        read_json(path / "sweep.json")
        try:
            frame = pd.read_csv(path / "sweep.csv")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise VaebenchError(f"{path / 'sweep.csv'}: unreadable ({exc})") from None
        rows = [with_mode_defaults(row) for row in frame.to_dict("records")]
        # A sweep's other axes (latent_dim=8, ...) tell its groups apart: they join the name.
        axes = [c for c in frame.columns if c.startswith("axis.") and c not in SEEDLESS_AXES]
        for row in rows:
            extra = " ".join(f"{a.removeprefix('axis.')}={row[a]}" for a in axes)
            if extra:
                row["model"] = f"{row['model']} [{extra}]"
        return rows
    return load_run(path).results.to_dict("records")


def _fmt(value: float, spec: str) -> str:
    return MISSING if math.isnan(value) else format(value, spec)


def _interval(diff: Difference, spec: str) -> str:
    if math.isnan(diff.delta):
        return MISSING
    if not diff.has_error_bars:
        return _fmt(diff.delta, spec)
    return f"{diff.delta:{spec}} [{diff.low:{spec}}, {diff.high:{spec}}]"


def _significant(diff: Difference, alpha: float) -> bool:
    """Beyond noise: always true without error bars (the thresholds decide alone)."""
    return not diff.has_error_bars or diff.p < alpha


def _check_comparable(name: str, base: list[dict], new: list[dict]) -> None:
    for key in MUST_MATCH:
        seen = {str(r.get(key)) for r in (*base, *new) if not is_missing(r.get(key))}
        if len(seen) > 1:
            raise VaebenchError(
                f"{name}: {key} differs ({' vs '.join(sorted(seen))}); NLLs are not comparable"
            )


def compare_runs(
    base_dir: Path,
    new_dir: Path,
    *,
    max_slowdown: float,
    max_nll_increase: float,
    alpha: float = 0.05,
) -> Comparison:
    """Each model of both runs (all its seeds), compared on its NLL and throughputs."""
    base, new = by_model(load_rows(base_dir)), by_model(load_rows(new_dir))
    label = {key: row_label(rows[0]) for key, rows in (*base.items(), *new.items())}
    only_base = [label[k] for k in base if k not in new]
    only_new = [label[k] for k in new if k not in base]
    both = [k for k in base if k in new]
    if not both:
        raise VaebenchError(
            f"{base_dir} and {new_dir} have no model (model:plugin/prior) in common; nothing to compare"
        )
    records, regressions, thin = [], [], False
    for key in both:
        name, rows_base, rows_new = label[key], base[key], new[key]
        _check_comparable(name, rows_base, rows_new)
        reasons = []
        done_base = sum(r.get("status") == "ok" for r in rows_base)
        done_new = sum(r.get("status") == "ok" for r in rows_new)
        if done_new < len(rows_new) and done_base == len(rows_base):
            failed = next(r["status"] for r in rows_new if r.get("status") != "ok")
            reasons.append(f"now {failed}")
        nll = next((k for k in NLL_KEYS if values(rows_base, k)), NLL_KEYS[0])
        diff = difference(values(rows_base, nll), values(rows_new, nll))
        thin |= not diff.has_error_bars
        if diff.delta > max_nll_increase and _significant(diff, alpha):
            reasons.append(f"{column(nll).header} +{diff.delta:.3f} nats")
        record = {
            "model": name,
            "seeds base/new": f"{len(rows_base)}/{len(rows_new)}",
            "finished base -> new": f"{done_base}/{len(rows_base)} -> {done_new}/{len(rows_new)}",
            "NLL": column(nll).header,
            "base": _fmt(mean(values(rows_base, nll)), ".2f"),
            "new": _fmt(mean(values(rows_new, nll)), ".2f"),
            "delta [95% CI]": _interval(diff, "+.3f"),
            "p": _fmt(diff.p, ".3g"),
        }
        for speed in SPEEDS:
            a, b = values(rows_base, speed), values(rows_new, speed)
            mean_a = mean(a)
            change = mean(b) / mean_a - 1 if mean_a > 0 else math.nan
            speed_diff = difference(a, b)
            header = column(speed).header
            record[f"{header} change"] = _fmt(change, "+.1%")
            if speed_diff.has_error_bars:
                record[f"{header} p"] = _fmt(speed_diff.p, ".3g")
            if change < -max_slowdown and _significant(speed_diff, alpha):
                reasons.append(f"{header} {change:+.1%}")
        record["verdict"] = "; ".join(reasons) or "ok"
        if reasons:
            regressions.append(f"{name}: {record['verdict']}")
        records.append(record)
    notes = [NO_ERROR_BARS] if thin else []
    return Comparison(pd.DataFrame(records), regressions, only_base, only_new, notes)
