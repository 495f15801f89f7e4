"""Matplotlib figures for reports. Each function returns a Figure; the caller saves it.

Inputs are plain tables and arrays (no models), so every figure can be redrawn from files.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def _subplots(rows: int = 1, cols: int = 1, *, figsize, squeeze: bool = True):
    """A Figure outside pyplot's global registry: nothing to close, nothing leaks."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=squeeze)


LABEL_CHARS = 60  # a longer label is cut in its middle: a figure's axes keep their room


def plain(text: object) -> str:
    """User text (plugin names, paths) drawn literally: a ``$`` never starts mathtext, and
    a label longer than LABEL_CHARS keeps its two ends around an ellipsis."""
    text = str(text)
    if len(text) > LABEL_CHARS:
        half = (LABEL_CHARS - 1) // 2
        text = f"{text[:half]}…{text[-half:]}"
    return text.replace("$", r"\$")


HISTORY_TERMS = (
    ("loss", "loss: train (solid), validation -ELBO (dashed)"),
    ("recon", "reconstruction NLL (train)"),
    ("kl", "KL (train)"),
)
VALID_TERMS = ("valid_neg_elbo", "valid_loss")  # the first present is drawn beside the loss


def loss_curves(histories: dict[str, list[dict[str, float]]]) -> Figure:
    """Per-epoch train-set terms, one colour per model (label -> epochs); the loss panel adds
    the validation figure early stopping reads, dashed, with its best epoch circled."""
    fig, axes = _subplots(1, 3, figsize=(13, 3.6))
    for ax, (key, title) in zip(axes, HISTORY_TERMS, strict=True):
        for label, epochs in histories.items():
            if not epochs:
                continue
            x = [e["epoch"] for e in epochs]
            (line,) = ax.plot(
                x, [e.get(key, math.nan) for e in epochs], label=plain(label), marker="."
            )
            valid = next((k for k in VALID_TERMS if k in epochs[0]), None)
            if key == "loss" and valid is not None:
                values = [e.get(valid, math.nan) for e in epochs]
                ax.plot(x, values, linestyle="--", color=line.get_color())
                finite = [(v, i) for i, v in enumerate(values) if math.isfinite(v)]
                if finite:
                    best, at = min(finite)
                    ax.plot([x[at]], [best], marker="o", fillstyle="none", color=line.get_color())
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per example")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    return fig


def _grouped_bars(
    ax, labels: list[str], series: dict[str, list[float]], statuses: list[str]
) -> None:
    width = 0.8 / max(1, len(series))
    x = np.arange(len(labels))
    for i, (name, values) in enumerate(series.items()):
        heights = [v if v is not None and math.isfinite(v) else 0.0 for v in values]
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=name)
        ax.bar_label(
            bars,
            labels=[f"{h:,.3g}" if h else "" for h in heights],
            fontsize="x-small",
            rotation=90,
            padding=2,
        )
    for xi, status in zip(x, statuses, strict=True):
        if status != "ok":
            ax.annotate(
                plain(status),
                (xi, 0),
                xytext=(0, 4),
                textcoords="offset points",
                ha="center",
                va="bottom",
                rotation=90,
                color="crimson",
                fontsize="small",
            )
    ax.set_xticks(x, [plain(label) for label in labels], rotation=20, ha="right")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")


def metric_bars(frame: pd.DataFrame, columns: list, *, log: bool = False) -> Figure:
    """Grouped bars of schema ``columns`` per model; failed models are labelled."""
    fig, ax = _subplots(figsize=(max(6, 1.3 * len(frame)), 4))
    series = {c.header: list(frame[c.key]) for c in columns}
    _grouped_bars(ax, list(frame["label"]), series, list(frame["status"]))
    if log:
        ax.set_yscale("symlog")
    ax.set_ylabel(f"{columns[0].unit} ({columns[0].better} is better)")
    return fig


def family_bars(frame: pd.DataFrame) -> Figure:
    """Sample FD and latent MMD per model, AE family and VAE family in two colours."""
    colours = ["tab:red" if family == "ae" else "tab:blue" for family in frame["family"]]
    fig, axes = _subplots(1, 2, figsize=(max(8, 1.4 * len(frame)), 4))
    for ax, (column, title) in zip(
        axes,
        (("sample_fd", "sample FD (lower is better)"), ("latent_mmd", "latent MMD to the prior")),
        strict=True,
    ):
        x = np.arange(len(frame))
        ax.bar(x, frame[column].fillna(0.0), color=colours)
        ax.set_xticks(x, [plain(label) for label in frame["label"]], rotation=30, ha="right")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in ("tab:red", "tab:blue")]
    axes[0].legend(handles, ["AE family", "VAE family"], fontsize="small")
    return fig


def kl_per_dim(labels: list[str], kl_rows: list[list[float]]) -> Figure:
    """Heat map of the KL of each latent unit: the bright ones carry information."""
    width = max(len(r) for r in kl_rows)
    grid = np.full((len(kl_rows), width), np.nan)
    for i, row in enumerate(kl_rows):
        grid[i, : len(row)] = row
    fig, ax = _subplots(figsize=(max(6, 0.35 * width + 3), 0.5 * len(labels) + 1.5))
    image = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(labels)), [plain(label) for label in labels])
    ax.set_xlabel("latent dimension")
    fig.colorbar(image, ax=ax, label="KL to N(0, I), nats")
    return fig


def as_pictures(batch: np.ndarray) -> np.ndarray:
    """``(B, *input_shape)`` to ``(B, H, W)`` grey or ``(B, H, W, 3)`` colour pictures."""
    if batch.ndim == 4:
        return batch.transpose(0, 2, 3, 1) if batch.shape[1] == 3 else batch[:, 0]
    if batch.ndim == 3:
        return batch
    return batch.reshape(batch.shape[0], 1, -1)


def image_grid(rows: list[tuple[str, np.ndarray]], title: str) -> Figure:
    """Rows of pictures, each row labelled: originals over reconstructions, a sample grid, a strip."""
    columns = max(len(images) for _, images in rows)
    fig, axes = _subplots(
        len(rows), columns, figsize=(1.1 * columns + 1.2, 1.2 * len(rows) + 0.5), squeeze=False
    )
    for r, (label, images) in enumerate(rows):
        pictures = as_pictures(np.clip(images, 0, 1))
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(pictures):
                ax.imshow(pictures[c], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(plain(label), rotation=0, ha="right", va="center", fontsize="small")
    fig.suptitle(plain(title), fontsize="medium")
    return fig


def error_bars(summary: pd.DataFrame, labels: list[str], columns: list) -> Figure:
    """Mean +- std over seeds of each group, one panel per (schema) column."""
    present = [c for c in columns if f"{c.key}_mean" in summary]
    cols = min(4, max(1, len(present)))
    rows = math.ceil(max(1, len(present)) / cols)
    width = max(4.5, 0.6 * len(labels) + 2) * cols
    fig, axes = _subplots(rows, cols, figsize=(width, 4.5 * rows), squeeze=False)
    axes = axes.ravel()
    x = np.arange(len(labels))
    for ax, col in zip(axes, present, strict=False):
        ax.bar(
            x,
            summary[f"{col.key}_mean"].fillna(0),
            yerr=summary[f"{col.key}_std"].fillna(0),
            capsize=4,
        )
        ax.set_xticks(
            x, [plain(label) for label in labels], rotation=30, ha="right", fontsize="small"
        )
        better = f", {col.better} is better" if col.better else ""
        ax.set_title(f"{col.header} ({col.unit or 'value'}{better})\nmean ± std over seeds")
        ax.grid(axis="y", alpha=0.3)
    return fig


CURVE_PANELS = (
    ("train_samples_per_s_at_{batch}", "training step", "samples/s"),
    ("encode_samples_per_s_at_{batch}", "encoder", "samples/s"),
    ("decode_samples_per_s_at_{batch}", "decoder", "samples/s"),
    ("train_peak_mb_at_{batch}", "training-step peak memory", "MiB"),
)


def batch_curves(frame: pd.DataFrame) -> Figure:
    """Throughput and peak memory against batch size, one line per model (log-log): where
    throughput saturates, and what each design costs in memory to get there."""
    from vaebench.schema import template_members

    fig, axes = _subplots(1, len(CURVE_PANELS), figsize=(4 * len(CURVE_PANELS), 3.6))
    for ax, (template, title, unit) in zip(axes, CURVE_PANELS, strict=True):
        members = template_members(template, frame.columns)
        for _, row in frame.iterrows():
            points = [(int(size), row[key]) for size, key in members if pd.notna(row[key])]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=plain(row["label"]))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("batch size")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize="small")
    return fig
