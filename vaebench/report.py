"""Comparison reports from run folders: tables, curves, bars and pictures of each model.

Reads only what ``vaebench run`` wrote (results, config, environment, history, checkpoints);
several run folders are put side by side, each model labelled with its run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from vaebench import figures
from vaebench.errors import VaebenchError
from vaebench.registry import Registry
from vaebench.render import Plot, Section, Table, write_report
from vaebench.results import Run, load_runs
from vaebench.sweep_report import is_sweep, sweep_sections
from vaebench.views import model_views

# column, header, format, which value is best (None: no highlight)
QUALITY_COLUMNS = (
    ("neg_elbo", "-ELBO", ".2f", "min"),
    ("recon_nll", "recon", ".2f", "min"),
    ("kl", "KL", ".2f", None),
    ("iw_nll", "IW-NLL", ".2f", "min"),
    ("elbo_gap", "ELBO gap", ".2f", None),
    ("active_units", "active units", ".0f", None),
    ("probe_accuracy", "probe accuracy", ".3f", "max"),
)
GENERATIVE_COLUMNS = (
    ("sample_fd", "sample FD", ".2f", "min"),
    ("sample_confidence", "sample confidence", ".3f", "max"),
    ("latent_mmd", "latent MMD", ".4f", "min"),
    ("interp_path_ratio", "interp path ratio", ".3f", "min"),
    ("interp_max_jump", "interp max jump", ".3f", "min"),
)
THROUGHPUT_COLUMNS = (
    ("train_samples_per_s", "train samples/s", ",.0f", "max"),
    ("encode_samples_per_s", "encode samples/s", ",.0f", "max"),
    ("decode_samples_per_s", "decode samples/s", ",.0f", "max"),
)


def combined(runs: list[Run]) -> pd.DataFrame:
    frames = []
    for run in runs:
        frame = run.results.copy()
        frame.insert(0, "run", run.name)
        model = frame["plugin"].astype(str) + "/" + frame["prior"].astype(str)
        if "model" in frame:
            model = frame["model"].fillna("vae").astype(str) + ":" + model
        frame["label"] = (run.name + ": " + model) if len(runs) > 1 else model
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    if "family" not in table:
        table["family"] = "vae"
    table["family"] = table["family"].fillna("vae")
    for column, *_ in (*QUALITY_COLUMNS, *GENERATIVE_COLUMNS, *THROUGHPUT_COLUMNS):
        if column not in table:
            table[column] = float("nan")
        table[column] = pd.to_numeric(table[column], errors="coerce")
    return table


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return format(value, spec)


def kernel_columns(frame: pd.DataFrame) -> tuple[tuple[str, str, str, str], ...]:
    """reparameterize_kl forward + backward throughput of every backend a run timed."""
    backends = sorted(
        c.removeprefix("reparam_kl_").removesuffix("_samples_per_s")
        for c in frame.columns
        if c.startswith("reparam_kl_") and c.endswith("_samples_per_s")
    )
    return tuple(
        (f"reparam_kl_{b}_samples_per_s", f"reparam+KL {b} samples/s", ",.0f", "max")
        for b in backends
    )


def metric_table(frame: pd.DataFrame, columns) -> Table:
    """Model rows, best value per column highlighted (among models that finished)."""
    headers = ["model", "status", *(header for _, header, _, _ in columns)]
    rows, best = [], set()
    ok = frame["status"] == "ok"
    for _, row in frame.iterrows():
        rows.append(
            [
                str(row["label"]),
                str(row["status"]),
                *(_fmt(row[c], spec) for c, _, spec, _ in columns),
            ]
        )
    for c, (column, _, _, direction) in enumerate(columns, start=2):
        values = frame.loc[ok, column].dropna()
        if direction is None or values.empty:
            continue
        target = values.min() if direction == "min" else values.max()
        best |= {
            (r, c) for r in range(len(frame)) if ok.iloc[r] and frame[column].iloc[r] == target
        }
    return Table(headers, rows, best)


def settings_table(runs: list[Run]) -> Table:
    keys: list[str] = []
    for run in runs:
        for key in [*run.config, *(f"env.{k}" for k in run.environment)]:
            if key not in keys:
                keys.append(key)

    def value(run: Run, key: str) -> str:
        source, name = (run.environment, key[4:]) if key.startswith("env.") else (run.config, key)
        item = source.get(name, "")
        return item if isinstance(item, str) else json.dumps(item)

    return Table(
        ["setting", *(run.name for run in runs)], [[k, *(value(r, k) for r in runs)] for k in keys]
    )


def build_sections(runs: list[Run], registry: Registry) -> list[Section]:
    frame = combined(runs)
    likelihoods = sorted(set(frame.get("likelihood", pd.Series(dtype=str)).dropna().astype(str)))
    datasets = sorted(set(frame.get("dataset", pd.Series(dtype=str)).dropna().astype(str)))
    finished = frame[frame["status"] == "ok"]
    sections = [
        Section(
            "configuration",
            "Configuration and environment",
            [
                f"Runs: {', '.join(f'{r.name} ({r.path})' for r in runs)}.",
                settings_table(runs),
            ],
        ),
        Section(
            "quality",
            "Quality (test split, nats per example)",
            [
                "Lower is better for -ELBO, reconstruction and IW-NLL. NLLs are only comparable between "
                f"models with the same likelihood and data (here: likelihood {', '.join(likelihoods) or '?'}; "
                f"data {', '.join(datasets) or '?'}).",
                metric_table(frame, QUALITY_COLUMNS),
            ],
        ),
        _family_section(frame),
        Section(
            "throughput",
            "Throughput (samples/s, median of repeats)",
            [
                "Measured after warm-up with device synchronization; the conditions of each run "
                "(device, batch, threads) are in the configuration section.",
                metric_table(frame, (*THROUGHPUT_COLUMNS, *kernel_columns(frame))),
            ],
        ),
        Section(
            "training-curves",
            "Training curves",
            [
                Plot(
                    "training_curves",
                    figures.loss_curves(_histories(runs)),
                    "Per-epoch train-set means",
                )
            ],
        ),
        Section(
            "quality-chart",
            "IW-NLL and negative ELBO per model",
            [Plot("quality", figures.quality_bars(frame), "Lower is better")],
        ),
        Section(
            "throughput-chart",
            "Throughput per model",
            [
                Plot(
                    "throughput",
                    figures.throughput_bars(frame),
                    "Training step, encoder and decoder throughput",
                )
            ],
        ),
        _kl_section(finished),
    ]
    sections += _picture_sections(runs, frame, registry)
    return sections


def _family_section(frame: pd.DataFrame) -> Section:
    """The theory's prediction, in numbers: AE latents are not a generative space."""
    section = Section("families", "AE family vs VAE family: prior samples and latent space")
    section.blocks.append(
        "Sample FD: Frechet distance between a small classifier's features of test images and of "
        "images decoded from prior samples (lower is better); sample confidence: that classifier's "
        "mean top probability on the samples; latent MMD: how far the test set's codes are from the "
        "prior (about 0 when they match); interpolation: decoded path length over end-to-end "
        "distance, and the largest single step's share of the path (1/16 is perfectly even). "
        "The AE family (ae, dae, sae) trains without a prior; its 'prior samples' are decoded "
        "N(0, I) draws, exactly the experiment the theory says fails."
    )
    ordered = frame.sort_values("family", kind="stable")
    section.blocks.append(
        metric_table(ordered, (("family", "family", "s", None), *GENERATIVE_COLUMNS))
    )
    finished = ordered[(ordered["status"] == "ok") & ordered["sample_fd"].notna()]
    if not finished.empty:
        section.blocks.append(
            Plot(
                "families",
                figures.family_bars(finished),
                "Sample FD and latent MMD by model, coloured by family",
            )
        )
    return section


def _histories(runs: list[Run]) -> dict[str, list[dict[str, float]]]:
    return {
        (f"{run.name}: {label}" if len(runs) > 1 else label): epochs
        for run in runs
        for label, epochs in run.history.items()
    }


def _kl_section(finished: pd.DataFrame) -> Section:
    section = Section("kl-per-dimension", "KL per latent dimension (active units)")
    rows = [(row["label"], row.get("kl_per_dim")) for _, row in finished.iterrows()]
    rows = [
        (label, kl if isinstance(kl, list) else json.loads(kl))
        for label, kl in rows
        if isinstance(kl, (list, str))
    ]
    if rows:
        section.blocks.append(
            Plot(
                "kl_per_dim",
                figures.kl_per_dim([r[0] for r in rows], [r[1] for r in rows]),
                "Bright units carry information; dark ones collapsed to the prior",
            )
        )
    else:
        section.blocks.append("No finished model to show.")
    return section


def _picture_sections(runs: list[Run], frame: pd.DataFrame, registry: Registry) -> list[Section]:
    recon = Section("reconstructions", "Test reconstructions")
    samples = Section("prior-samples", "Samples decoded from the prior")
    interp = Section("interpolations", "Latent interpolation between two test examples")
    for index, (_, row) in enumerate(frame.iterrows()):
        label = str(row["label"])
        if row["status"] != "ok":
            for section in (recon, samples, interp):
                section.blocks.append(f"{label}: {row['status']}; nothing to draw.")
            continue
        run = next(r for r in runs if r.name == row["run"])
        checkpoint = row.get("checkpoint")
        try:
            if not isinstance(checkpoint, str):
                raise VaebenchError("the run saved no checkpoint")
            views = model_views(registry, run.path / checkpoint)
        except (
            Exception
        ) as exc:  # a missing plugin or a stale checkpoint costs pictures, not the report
            for section in (recon, samples, interp):
                section.blocks.append(f"{label}: cannot redraw ({type(exc).__name__}: {exc}).")
            continue
        name = f"m{index}"
        recon.blocks.append(
            Plot(
                f"{name}_reconstructions",
                figures.image_grid(
                    [("test", views.originals), ("reconstruction", views.reconstructions)], label
                ),
                f"{label}: originals (top), reconstructions (bottom)",
            )
        )
        side = max(1, int(math.sqrt(len(views.samples))))
        grid_rows = [("", views.samples[i : i + side]) for i in range(0, len(views.samples), side)]
        samples.blocks.append(
            Plot(
                f"{name}_samples",
                figures.image_grid(grid_rows, label),
                f"{label}: decoded prior samples",
            )
        )
        interp.blocks.append(
            Plot(
                f"{name}_interpolation",
                figures.image_grid([("", views.interpolation)], label),
                f"{label}: decoded straight line between two test codes",
            )
        )
    return [recon, samples, interp]


def make_report(run_dirs: list[Path], html_path: Path, registry: Registry) -> tuple[Path, Path]:
    """A run comparison, or a sweep summary when given one sweep folder."""
    if any(is_sweep(path) for path in run_dirs):
        if len(run_dirs) != 1:
            raise VaebenchError("report one sweep folder at a time (or run folders only)")
        title = f"vaebench sweep report: {run_dirs[0].resolve().name}"
        return write_report(sweep_sections(run_dirs[0]), title, html_path)
    runs = load_runs(run_dirs)
    title = "vaebench report: " + ", ".join(run.name for run in runs)
    return write_report(build_sections(runs, registry), title, html_path)
