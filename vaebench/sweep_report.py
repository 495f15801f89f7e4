"""Reports of sweep folders: summary over seeds with error bars, and every cell's status."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from vaebench.errors import VaebenchError
from vaebench.render import Plot, Section, Table

SUMMARY_METRICS = (
    ("neg_elbo", "-ELBO", ".2f"),
    ("iw_nll", "IW-NLL", ".2f"),
    ("recon_nll", "recon", ".2f"),
    ("sample_fd", "sample FD", ".2f"),
    ("latent_mmd", "latent MMD", ".4f"),
    ("probe_accuracy", "probe acc.", ".3f"),
    ("train_samples_per_s", "train samples/s", ",.0f"),
)
CHART_METRICS = (
    ("iw_nll", "IW-NLL (nats, lower is better)"),
    ("sample_fd", "sample FD (lower is better)"),
    ("train_samples_per_s", "train samples/s"),
)


def is_sweep(path: Path) -> bool:
    return (path / "sweep.json").is_file()


def _read(path: Path, name: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path / name)
    except FileNotFoundError:
        raise VaebenchError(
            f"{path / name}: missing; has the sweep in {path} aggregated yet?"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise VaebenchError(f"{path / name}: unreadable ({exc})") from None


def _group_labels(summary: pd.DataFrame) -> list[str]:
    keys = [c for c in summary.columns if c.startswith("axis.")] + [
        c for c in ("model", "plugin", "prior") if c in summary
    ]
    labels = []
    for _, row in summary.iterrows():
        parts = [
            f"{k.removeprefix('axis.')}={row[k]}"
            for k in keys
            if k.startswith("axis.") and k not in ("axis.plugins", "axis.priors", "axis.models")
        ]
        parts += (
            [f"{row.get('model', 'vae')}:{row.get('plugin')}/{row.get('prior')}"]
            if "plugin" in summary
            else []
        )
        labels.append(" ".join(dict.fromkeys(parts)))
    return labels


def _mean_std(row: pd.Series, metric: str, spec: str) -> str:
    mean, std, count = (row.get(f"{metric}_{s}") for s in ("mean", "std", "count"))
    if mean is None or pd.isna(mean):
        return ""
    spread = "" if std is None or pd.isna(std) else f" ± {format(std, spec)}"
    return f"{format(mean, spec)}{spread} (n={int(count)})"


def error_bars(summary: pd.DataFrame, labels: list[str]) -> Figure:
    present = [(m, t) for m, t in CHART_METRICS if f"{m}_mean" in summary]
    width = max(4.5, 0.6 * len(labels) + 2) * max(1, len(present))
    fig = Figure(figsize=(width, 4.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(present))))
    x = np.arange(len(labels))
    for ax, (metric, title) in zip(axes, present, strict=False):
        ax.bar(
            x,
            summary[f"{metric}_mean"].fillna(0),
            yerr=summary[f"{metric}_std"].fillna(0),
            capsize=4,
        )
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize="small")
        ax.set_title(title + "\nmean ± std over seeds")
        ax.grid(axis="y", alpha=0.3)
    return fig


def sweep_sections(path: Path) -> list[Section]:
    plan = json.loads((path / "sweep.json").read_text())
    sweep, summary = _read(path, "sweep.csv"), _read(path, "summary.csv")
    labels = _group_labels(summary)
    settings = Table(
        ["setting", "value"],
        [[f"fixed.{k}", json.dumps(v)] for k, v in plan.get("fixed", {}).items()]
        + [[f"axes.{k}", json.dumps(v)] for k, v in plan.get("axes", {}).items()]
        + [["source", str(plan.get("source", ""))]],
    )
    cells = sweep.drop_duplicates("cell_id")
    status_counts = cells["cell_status"].fillna("not run").value_counts()
    table = Table(
        ["group", "cells", "finished", *(header for _, header, _ in SUMMARY_METRICS)],
        [
            [
                label,
                str(int(row["cells"])),
                str(int(row.get("finished", 0))),
                *(_mean_std(row, m, spec) for m, _, spec in SUMMARY_METRICS),
            ]
            for label, (_, row) in zip(labels, summary.iterrows(), strict=True)
        ],
    )
    cell_table = Table(
        [
            "cell",
            "status",
            *(c for c in ("model", "plugin", "prior", "seed", "iw_nll", "sample_fd") if c in sweep),
        ],
        [
            [
                str(row["cell_id"]),
                str(row.get("status", row["cell_status"])),
                *(
                    _cell(row, c)
                    for c in ("model", "plugin", "prior", "seed", "iw_nll", "sample_fd")
                    if c in sweep
                ),
            ]
            for _, row in sweep.iterrows()
        ],
    )
    return [
        Section(
            "sweep",
            "Sweep",
            [
                f"{len(cells)} cells: "
                + ", ".join(f"{n} {s}" for s, n in status_counts.items())
                + ".",
                settings,
            ],
        ),
        Section(
            "summary",
            "Summary over seeds",
            [
                "Mean ± sample standard deviation over the seeds of each group (n = finished runs).",
                table,
            ],
        ),
        Section(
            "summary-chart",
            "Error bars over seeds",
            [Plot("sweep_summary", error_bars(summary, labels), "Mean ± std over seeds per group")],
        ),
        Section("cells", "Every cell", [cell_table]),
    ]


def _cell(row: pd.Series, column: str) -> str:
    value = row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.3f}" if isinstance(value, float) else str(value)
