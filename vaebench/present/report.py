"""Comparison reports from run folders: tables, curves, bars and pictures of each model.

Reads only what ``vaebench run`` wrote (results, config, environment, history, checkpoints);
several run folders are put side by side, each model labelled with its run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from vaebench.checkpoints import model_views
from vaebench.errors import VaebenchError
from vaebench.io import Run, load_runs
from vaebench.present import figures
from vaebench.present.render import Plot, Section, Table, write_report
from vaebench.present.summary import per_run_section, summary_section
from vaebench.present.sweep_report import (
    group_labels,
    is_sweep,
    summary_sections,
    sweep_sections,
)
from vaebench.registry import Registry
from vaebench.reporting import Reporter
from vaebench.schema import SPEEDS, Column, column, columns_of, metric_columns, row_label
from vaebench.seeds import several_seeds, summarize
from vaebench.tasks import LITERATURE_HEADERS, literature_rows, references_of


def combined(runs: list[Run]) -> pd.DataFrame:
    """Every run's rows in one frame, labelled (with the run's name when there are several)."""
    frames = []
    for run in runs:
        frame = run.results.copy()
        frame.insert(0, "run", run.name)
        seeded = several_seeds(frame.to_dict("records"))
        labels = [row_label(row, seeded) for _, row in frame.iterrows()]
        frame["label"] = [f"{run.name}: {label}" if len(runs) > 1 else label for label in labels]
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    for col in metric_columns():  # a run that measured none of a metric still has its column
        if col.key not in table:
            table[col.key] = math.nan
    for col in metric_columns(table.columns):
        table[col.key] = pd.to_numeric(table[col.key], errors="coerce")
    return table


def metric_table(frame: pd.DataFrame, columns: list[Column]) -> Table:
    """Model rows, the best value of each column highlighted (among models that finished);
    a column no row measured is left out (older runs, other families)."""
    columns = [c for c in columns if c.key in frame and frame[c.key].notna().any()]
    headers = ["model", "status", *(c.title for c in columns)]
    rows = [
        [str(row["label"]), str(row["status"]), *(c.format(row.get(c.key)) for c in columns)]
        for _, row in frame.iterrows()
    ]
    best = set()
    ok = (frame["status"] == "ok").to_numpy()
    for c, col in enumerate(columns, start=2):
        values = pd.to_numeric(frame[col.key], errors="coerce")[ok].dropna()
        if col.better is None or values.empty:
            continue
        target = values.min() if col.better == "lower" else values.max()
        best |= {(r, c) for r in range(len(frame)) if ok[r] and frame[col.key].iloc[r] == target}
    return Table(headers, rows, best, text_columns=2)


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

    rows = [[k, *(value(r, k) for r in runs)] for k in keys]
    # Several runs: the settings that differ first (what explains the comparison), marked.
    differs = {r for r, row in enumerate(rows) if len(set(row[1:])) > 1} if len(runs) > 1 else set()
    order = sorted(range(len(rows)), key=lambda r: r not in differs)
    best = {(i, c) for i, r in enumerate(order) if r in differs for c in range(1, len(runs) + 1)}
    headers = ["setting", *(run.name for run in runs)]
    return Table(headers, [rows[r] for r in order], best, text_columns=len(headers))


def build_sections(runs: list[Run], registry: Registry) -> list[Section]:
    frame = combined(runs)
    likelihoods = sorted(set(frame.get("likelihood", pd.Series(dtype=str)).dropna().astype(str)))
    datasets = sorted(set(frame.get("dataset", pd.Series(dtype=str)).dropna().astype(str)))
    finished = frame[frame["status"] == "ok"]
    model_columns = [c for c in columns_of("throughput", frame.columns) if not c.per_run]
    sections = [
        summary_section(runs),  # the answer first: what ran where, who is best, by how much
        *_seed_sections(runs),  # with seeds, their error bars before any per-seed figure
        Section(
            "quality-chart",
            "IW-NLL and negative ELBO per model",
            [
                Plot(
                    "quality",
                    figures.metric_bars(frame, [column("neg_elbo"), column("iw_nll")]),
                    "Nats per test example; lower is better",
                )
            ],
        ),
        Section(
            "throughput-chart",
            "Throughput per model",
            [
                Plot(
                    "throughput",
                    figures.metric_bars(frame, [column(k) for k in SPEEDS], log=True),
                    "Training step, encoder and decoder throughput (median)",
                )
            ],
        ),
        Section(
            "quality",
            "Quality (test split, nats per example)",
            [
                "Lower is better for -ELBO, reconstruction and IW-NLL. NLLs are only comparable between "
                f"models with the same likelihood and data (here: likelihood {', '.join(likelihoods) or '?'}; "
                f"data {', '.join(datasets) or '?'}).",
                metric_table(frame, columns_of("quality", frame.columns)),
            ],
        ),
        _family_section(frame),
        Section(
            "throughput",
            "Throughput (samples/s, median of repeats)",
            [
                "Measured after warm-up with device synchronization; the timing batch is in the "
                "configuration section, the per-run kernel timings and device just below.",
                metric_table(frame, model_columns),
            ],
        ),
        *_memory_sections(frame),
        per_run_section(runs),
        *_literature_sections(runs),
        Section(
            "training-curves",
            "Training curves",
            [
                Plot(
                    "training_curves",
                    figures.loss_curves(_histories(runs)),
                    "Per-epoch train-set means; dashed: the validation figure early stopping "
                    "reads (its best epoch circled, the weights evaluated)",
                )
            ],
        ),
        _kl_section(finished),
    ]
    sections += _picture_sections(runs, frame, registry)
    differ = " (settings that differ between the runs first, highlighted)" if len(runs) > 1 else ""
    sections.append(  # reference material: last, and folded in the HTML report
        Section(
            "configuration",
            "Configuration and environment",
            [
                f"Runs: {', '.join(f'{r.name} ({r.path})' for r in runs)}{differ}.",
                settings_table(runs),
            ],
            folded=True,
        )
    )
    return sections


def _memory_sections(frame: pd.DataFrame) -> list[Section]:
    """Peak memory per phase; with --timing-batch-sizes, throughput and memory curves."""
    sections = []

    def measured(columns: list[Column]) -> bool:
        return bool(columns) and frame[[c.key for c in columns]].notna().any().any()

    memory = columns_of("memory", frame.columns)
    if measured(memory):
        sections.append(
            Section(
                "memory",
                "Peak memory per phase (MiB above what was live before the call)",
                [
                    "CUDA: torch.cuda.max_memory_allocated after a reset (exact); CPU: the "
                    "profiler's allocation events of the CPU allocator (tensors only).",
                    metric_table(frame, memory),
                ],
            )
        )
    curve = columns_of("curve", frame.columns)
    if measured(curve):
        sections.append(
            Section(
                "batch-curves",
                "Throughput and memory against batch size",
                [
                    metric_table(frame, curve),
                    Plot(
                        "batch_curves",
                        figures.batch_curves(frame),
                        "Median throughput and training-step peak memory at each timed batch "
                        "size (log-log); examples are cycled when the split is smaller",
                    ),
                ],
            )
        )
    return sections


def _seed_sections(runs: list[Run]) -> list[Section]:
    """Runs with several seeds: each model's mean ± std over its seeds, with error bars."""
    frames = []
    for run in runs:
        if several_seeds(run.results.to_dict("records")):
            frame = run.results.copy()
            if len(runs) > 1:
                frame["axis.run"] = run.name
            frames.append(frame)
    if not frames:
        return []
    summary = summarize(pd.concat(frames, ignore_index=True))
    return summary_sections(summary, group_labels(summary), "seeds", prefix="seed-")


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
        metric_table(ordered, [column("family"), *columns_of("samples", ordered.columns)])
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


def _literature_sections(runs: list[Run]) -> list[Section]:
    """Each task run's published reference figures beside its own, labelled as literature."""
    sections = []
    for run in runs:
        if not run.task:
            continue
        refs = references_of(run.task, str(run.path / "task.json"))
        if not refs:
            continue
        rows = run.results.to_dict("records")
        name = f"{run.task.get('name')}@{run.task.get('version')}"
        sections.append(
            Section(
                f"literature-{run.name}",
                f"Literature: {name}" + (f" ({run.name})" if len(runs) > 1 else ""),
                [
                    "Published figures of the task's protocol (as printed in the source named; "
                    "architectures and training budgets differ), then this run's own on the "
                    "same figure. A row's protocol column says if a setting was changed.",
                    Table(list(LITERATURE_HEADERS), literature_rows(refs, rows), text_columns=3),
                ],
            )
        )
    return sections


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


class Reporting(Reporter):
    """A silent reporter that draws the run's report for its trackers (HTML and Markdown)."""

    def report(self, out: Path, registry: Registry) -> list[Path]:
        html, _markdown = make_report([out], out / "report.html", registry)
        return [html]
