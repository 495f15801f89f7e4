"""Terminal output: progress while training, and every table the commands print (from the schema)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from vaebench.reporting import Reporter
from vaebench.schema import (
    IDENTITY,
    MISSING,
    MODE_DEFAULTS,
    Column,
    columns_of,
    is_missing,
    row_label,
)


def stdout() -> Console:
    """Tables go to stdout, full width on a terminal and 160 columns in a pipe."""
    return Console(width=None if sys.stdout.isatty() else 160)


class RichReporter(Reporter):
    """Draws one progress bar per model on stderr (silent when ``quiet``); the run's report
    for its trackers."""

    def __init__(self, console: Console, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self._progress: Progress | None = None
        self._task: Any = None

    @contextmanager
    def progress(self, description: str, total: int) -> Iterator[None]:
        if self.quiet:
            yield
            return
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),  # a 500-epoch run says when it will end
            console=self.console,
            transient=True,
        )
        with progress:
            self._progress = progress
            self._task = progress.add_task(description, total=total)
            try:
                yield
            finally:
                self._progress = None

    def advance(self, amount: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, amount)

    def report(self, out: Path, registry: Any) -> list[Path]:
        from vaebench.present.report import Reporting  # matplotlib: only when trackers ask

        return Reporting().report(out, registry)

    def finished(self, row: dict[str, Any]) -> None:
        line = f"{row_label(row)}: {row['status']}"
        if row["status"] != "ok":  # one line however long: soft_wrap never breaks it
            self.console.print(
                f"vaebench: model {line}", markup=False, highlight=False, soft_wrap=True
            )
        elif not self.quiet:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)


def cell(row: dict[str, Any], col: Column) -> str:
    """A value as the schema formats it; a throughput figure carries its IQR."""
    text = col.format(row.get(col.key))
    spread = row.get(col.spread) if col.spread else None
    if text != MISSING and spread is not None:
        text += f" (IQR {100 * spread:.0f}%)"
    return text


def shown_identity(rows: list[dict[str, Any]]) -> list[str]:
    """The identity columns worth a column: a mode (precision, compile) only when some row
    runs in another than the default."""
    return [
        key
        for key in IDENTITY
        if key not in MODE_DEFAULTS
        or any(row.get(key, MODE_DEFAULTS[key]) != MODE_DEFAULTS[key] for row in rows)
    ]


def group_table(
    rows: list[dict[str, Any]],
    group: str,
    title: str,
    *,
    status: bool = False,
    only: Callable[[Column], bool] | None = None,
) -> Table:
    """The rows' columns of one schema group (``only`` those it accepts), with a header naming
    its unit."""
    keys = {k for row in rows for k, v in row.items() if not is_missing(v)}
    columns = [c for c in columns_of(group, keys) if only is None or only(c)]
    identity = shown_identity(rows)
    table = Table(title=title, title_justify="left")
    for key in (*identity, *(["status"] if status else [])):
        table.add_column(key)
    for col in columns:
        table.add_column(col.title, justify="right")
    for row in rows:
        names = [str(row[k]) for k in identity] + ([str(row["status"])] if status else [])
        table.add_row(*names, *(cell(row, c) for c in columns))
    return table


def plain_table(title: str, headers: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*row)
    return table


def print_run(rows: list[dict[str, Any]], config: Any, references: Sequence[Any] = ()) -> None:
    """The tables ``vaebench run`` prints after its last model (and a task's literature);
    with several seeds, one line per model: mean ± std (n) over its seeds."""
    from vaebench.seeds import several_seeds, summary_rows

    if several_seeds(rows):
        rows = summary_rows(rows)
    first, out = rows[0], stdout()
    out.print(
        group_table(
            rows,
            "quality",
            f"Quality on {first['dataset']} test split (nats per example, likelihood "
            f"{first['likelihood']}, K={config.iw_samples}; weights of the best validation epoch; "
            "'untrained' is before the first step)",
            status=True,
        )
    )
    out.print(
        group_table(
            rows,
            "samples",
            "Prior samples and latent space (FD: Frechet distance of classifier features, test "
            "images vs decoded prior samples; MMD: aggregate posterior vs prior)",
        )
    )
    if any(row.get("family") == "ae" for row in rows):
        out.print(
            "AE-family rows (ae, dae, sae) train without a prior: one row each per plugin, with "
            "prior 'normal', meaning their 'prior samples' are decoded N(0, I) draws."
        )
    note = ""
    if config.device == "cpu" and first["kernel_backend"] == "triton":
        note = (
            "; triton runs through its CPU interpreter here: a correctness path, not a speed figure"
        )
    out.print(
        group_table(
            rows,
            "throughput",
            f"Throughput on {config.device} ({first.get('timing_batch_size', '?')} examples per "
            f"call, median of repeats, kernel {first['kernel_backend']}{note})",
        )
    )
    if any(not is_missing(row.get("train_peak_mb")) for row in rows):
        out.print(
            group_table(
                rows,
                "memory",
                f"Peak memory on {config.device} (MiB above what was live before each call; "
                + (
                    "CUDA allocator)" if config.device == "cuda" else "CPU allocator, tensors only)"
                ),
            )
        )
    if any(not is_missing(row.get("best_train_batch_size")) for row in rows):
        out.print(
            group_table(
                rows,
                "curve",
                "Training step by batch size (samples/s and peak MiB; every phase in "
                "results.csv and the report)",
                only=lambda c: c.key.startswith(("train_", "best_")),
            )
        )
    if references:
        from vaebench.tasks import LITERATURE_HEADERS, literature_rows

        out.print(
            plain_table(
                f"{first.get('protocol')}: published figures (literature) beside this run's",
                list(LITERATURE_HEADERS),
                literature_rows(list(references), rows),
            )
        )
    out.print(f"results: {config.out}/results.csv")


def print_tasks(tasks: list[Any], as_json: bool) -> None:
    """``vaebench tasks``: each protocol, what it fixes, its files and reference figures."""
    if as_json:
        print(json.dumps([task.to_dict() for task in tasks], indent=2))
        return
    rows = [
        [
            task.id,
            task.description,
            ", ".join(f"{k}={_text(v)}" for k, v in task.protocol.items()),
            ", ".join(task.files.values()),
            str(len(task.references)),
            ", ".join(task.recipes) or "–",
        ]
        for task in tasks
    ]
    headers = ["task", "description", "protocol", "files (in --data-root)", "references", "recipes"]
    stdout().print(plain_table("Benchmark tasks (vaebench run --task NAME)", headers, rows))
    recipes = [
        [f"{task.name} --recipe {recipe.name}", recipe.description, _reproduces(task, recipe.name)]
        for task in tasks
        for recipe in task.recipes.values()
    ]
    if recipes:
        headers = ["run", "what it sets", "reproduces"]
        stdout().print(
            plain_table("Recipes (vaebench run --task NAME --recipe RECIPE)", headers, recipes)
        )


def _reproduces(task: Any, recipe: str) -> str:
    """The published figures a recipe reruns: literature, and a peer's reproduction."""
    from vaebench.schema import column

    found = []
    for ref in task.references:
        if ref.recipe == recipe:
            figure = f"{column(ref.metric).title} {ref.value:g}"
            if ref.reproduction is not None:
                figure += f" (reproduced: {ref.reproduction:g})"
            found.append(figure)
    return "; ".join(found) or "–"


def print_plugins(rows: list[dict[str, str]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    headers = ["kind", "name", "distribution", "version", "plugin"]
    if rows and "options" in rows[0]:
        headers.append("options")
    stdout().print(
        plain_table("vaebench components", headers, [[r[h] for h in headers] for r in rows])
    )


def print_cells(cells: list[Any], axes: list[str], title: str) -> None:
    """``vaebench sweep --dry-run``: the expanded cells."""
    rows = [[c.cell_id, *(json.dumps(c.axes[a]) for a in axes)] for c in cells]
    stdout().print(plain_table(title, ["cell", *axes], rows))


def print_comparison(result: Any, title: str, thresholds: str) -> None:
    """``vaebench compare``'s per-model deltas, then one line per regression."""
    frame = result.table
    headers = [str(h) for h in frame.columns]
    rows = [[_text(v) for v in values] for values in frame.itertuples(index=False)]
    stdout().print(plain_table(title, headers, rows))
    for name in result.only_in_base:
        print(f"only in base: {name}")
    for name in result.only_in_new:
        print(f"only in new: {name}")
    for line in result.notes:
        print(f"note: {line}")
    for line in result.regressions:
        print(f"REGRESSION {line}")
    if not result.regressions:
        print(f"no regression (thresholds: {thresholds})")


def _text(value: Any) -> str:
    return MISSING if value is None or value != value else str(value)
