"""Terminal output: a progress bar while training and the quality and throughput tables."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def _num(value: Any, fmt: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, fmt)


def _rate(row: dict[str, Any], name: str) -> str:
    rate = row.get(f"{name}_samples_per_s")
    if rate is None:
        return "–"
    spread = row.get(f"{name}_spread")
    text = f"{rate:,.0f}"
    return text if spread is None else f"{text} (IQR {100 * spread:.0f}%)"


class RichReporter:
    """Draws one progress bar per model on stderr; silent when ``quiet``."""

    def __init__(self, console: Console, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self._progress: Progress | None = None
        self._task: Any = None

    @contextmanager
    def training(self, label: str, total_steps: int) -> Iterator[None]:
        if self.quiet:
            yield
            return
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        with progress:
            self._progress, self._task = (
                progress,
                progress.add_task(f"training {label}", total=total_steps),
            )
            try:
                yield
            finally:
                self._progress = None

    def step(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def finished(self, row: dict[str, Any]) -> None:
        model, plugin, prior = _names(row)
        line = f"{model}:{plugin}/{prior}: {row['status']}"
        if row["status"] != "ok":
            self.console.print(f"vaebench: model {line}", markup=False, highlight=False)
        elif not self.quiet:
            self.console.print(line, markup=False, highlight=False)


LEFT = {"model", "plugin", "prior", "status"}


def _table(title: str, headers: tuple[str, ...]) -> Table:
    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header, justify="left" if header in LEFT else "right")
    return table


def _names(row: dict[str, Any]) -> tuple[str, str, str]:
    return str(row.get("model", "vae")), str(row["plugin"]), str(row["prior"])


def quality_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = _table(
        title,
        (
            "model",
            "plugin",
            "prior",
            "status",
            "-ELBO",
            "recon",
            "KL",
            "IW-NLL",
            "gap",
            "AU",
            "probe acc",
            "untrained",
        ),
    )
    for row in rows:
        au = row.get("active_units")
        untrained = row.get("neg_elbo_untrained", row.get("recon_nll_untrained"))
        table.add_row(
            *_names(row),
            row["status"],
            _num(row.get("neg_elbo")),
            _num(row.get("recon_nll")),
            _num(row.get("kl")),
            _num(row.get("iw_nll")),
            _num(row.get("elbo_gap")),
            "–" if au is None else f"{au}/{row['latent_dim']}",
            _num(row.get("probe_accuracy"), ".3f"),
            _num(untrained),
        )
    return table


def generative_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = _table(
        title,
        (
            "model",
            "plugin",
            "prior",
            "sample FD",
            "sample confidence",
            "latent MMD",
            "interp path ratio",
            "interp max jump",
        ),
    )
    for row in rows:
        table.add_row(
            *_names(row),
            _num(row.get("sample_fd")),
            _num(row.get("sample_confidence"), ".3f"),
            _num(row.get("latent_mmd"), ".4f"),
            _num(row.get("interp_path_ratio"), ".3f"),
            _num(row.get("interp_max_jump"), ".3f"),
        )
    return table


def throughput_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    kernels = sorted(
        {
            k.removeprefix("reparam_kl_").removesuffix("_samples_per_s")
            for row in rows
            for k in row
            if k.startswith("reparam_kl_") and k.endswith("_samples_per_s")
        }
    )
    for header in (
        "model",
        "plugin",
        "prior",
        "train samples/s",
        "encode samples/s",
        "decode samples/s",
    ):
        table.add_column(header, justify="left" if header in LEFT else "right")
    for kernel in kernels:
        table.add_column(f"reparam+KL fwd+bwd\n{kernel}, samples/s", justify="right")
    for row in rows:
        table.add_row(
            *_names(row),
            _rate(row, "train"),
            _rate(row, "encode"),
            _rate(row, "decode"),
            *(_rate(row, f"reparam_kl_{kernel}") for kernel in kernels),
        )
    return table


def comparison_table(frame, title: str) -> Table:
    """``vaebench compare``'s per-model deltas (pandas frame from ``compare_runs``)."""
    table = Table(title=title, title_justify="left")
    headers = (
        "model",
        "status base -> new",
        "NLL base",
        "NLL new",
        "NLL delta",
        "train",
        "encode",
        "decode",
        "verdict",
    )
    for header in headers:
        table.add_column(
            header,
            justify="left" if header in {"model", "status base -> new", "verdict"} else "right",
        )
    for _, row in frame.iterrows():
        table.add_row(
            row["model"],
            f"{row['status_base']} -> {row['status_new']}",
            _num(row["nll_base"]),
            _num(row["nll_new"]),
            _num(row["nll_delta"], "+.3f"),
            *(_num(row[f"{kind}_change"], "+.1%") for kind in ("train", "encode", "decode")),
            row["verdict"],
        )
    return table
