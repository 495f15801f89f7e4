"""Reports of sweep folders: summary over seeds with error bars, and every cell's status."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vaebench.errors import VaebenchError
from vaebench.io import read_json
from vaebench.present import figures
from vaebench.present.render import Plot, Section, Table
from vaebench.schema import (
    IDENTITY,
    MODE_DEFAULTS,
    Column,
    column,
    metric_columns,
    row_label,
)
from vaebench.seeds import format_mean_std

HEADLINE = [c for c in metric_columns() if c.headline]


def is_sweep(path: Path) -> bool:
    return (path / "sweep.json").is_file()


def _read(path: Path, name: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path / name)
    except FileNotFoundError:
        raise VaebenchError(
            f"{path / name}: missing; has the sweep in {path} aggregated yet?"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise VaebenchError(f"{path / name}: unreadable ({exc})") from None
    for key, default in MODE_DEFAULTS.items():  # sweeps from before the modes: fp32 eager
        frame[key] = frame[key].fillna(default) if key in frame else default
    return frame


def group_labels(summary: pd.DataFrame) -> list[str]:
    """Each group's axis values (those not already in the row label) and its row label."""
    shown = {"axis.plugins", "axis.priors", "axis.models"}
    labels = []
    for _, row in summary.iterrows():
        parts = [
            f"{k.removeprefix('axis.')}={row[k]}"
            for k in summary.columns
            if k.startswith("axis.") and k not in shown
        ]
        if all(k in summary for k in IDENTITY):
            parts.append(row_label(row))
        labels.append(" ".join(parts))
    return labels


def _mean_std(row: pd.Series, col: Column) -> str:
    return format_mean_std(col, *(row.get(f"{col.key}_{s}") for s in ("mean", "std", "count")))


def sweep_sections(path: Path) -> list[Section]:
    plan = read_json(path / "sweep.json")
    if not isinstance(plan, dict) or not isinstance(plan.get("fixed", {}), dict):
        raise VaebenchError(f"{path / 'sweep.json'}: not a sweep plan (expected an object)")
    sweep, summary = _read(path, "sweep.csv"), _read(path, "summary.csv")
    labels = group_labels(summary)
    settings = Table(
        ["setting", "value"],
        [[f"fixed.{k}", json.dumps(v)] for k, v in plan.get("fixed", {}).items()]
        + [[f"axes.{k}", json.dumps(v)] for k, v in plan.get("axes", {}).items()]
        + [["source", str(plan.get("source", ""))]],
    )
    cells = sweep.drop_duplicates("cell_id")
    status_counts = cells["cell_status"].fillna("not run").value_counts()
    cell_columns = [column(k) for k in (*IDENTITY, "seed") if k in sweep]
    cell_columns += [c for c in HEADLINE if c.key in sweep]
    cell_table = Table(
        ["cell", "status", *(c.header for c in cell_columns)],
        [
            [
                str(row["cell_id"]),
                str(row.get("status", row["cell_status"])),
                *(c.format(row.get(c.key)) for c in cell_columns),
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
        *summary_sections(summary, labels, "cells"),
        Section("cells", "Every cell", [cell_table]),
    ]


def summary_sections(
    summary: pd.DataFrame, labels: list[str], unit: str, prefix: str = ""
) -> list[Section]:
    """Mean ± std over seeds per group, as a table and as error bars (sweeps, and runs with
    ``--seeds``); ``unit`` names what each group counts (cells, seeds); ``prefix`` keeps the
    section ids unique in a report that has a summary of its own."""
    table = Table(
        ["group", unit, "finished", *(c.header for c in HEADLINE)],
        [
            [
                label,
                str(int(row["cells"])),
                str(int(row.get("finished", 0))),
                *(_mean_std(row, c) for c in HEADLINE),
            ]
            for label, (_, row) in zip(labels, summary.iterrows(), strict=True)
        ],
    )
    return [
        Section(
            f"{prefix}summary",
            "Summary over seeds",
            [
                "Mean ± sample standard deviation over the seeds of each group (n = finished runs).",
                table,
            ],
        ),
        Section(
            f"{prefix}summary-chart",
            "Error bars over seeds",
            [
                Plot(
                    "seed_summary",
                    figures.error_bars(summary, labels, HEADLINE),
                    "Mean ± std over seeds per group",
                )
            ],
        ),
    ]
