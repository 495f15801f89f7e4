"""The report's first screen: what was run where, which model is best per metric and by how
much (with the 95 % interval and Welch's p when there are seeds), and a task's published
figures beside this run's; then the per-run measurements that are not a model's.

Reads run folders only; every figure is formatted by its schema column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vaebench.io import Run
from vaebench.present.render import Section, Table
from vaebench.schema import MISSING, Column, column, is_missing, per_run_columns, row_label
from vaebench.seeds import by_model, difference, mean, mean_std, values
from vaebench.tasks import recipe_name, references_of

# What the first screen ranks, in order: the likelihood bound (bits/dim where the task's
# literature reports it), the ELBO, the training speed; recon for runs of the AE family only.
FIRST_SCREEN = ("iw_nll", "neg_elbo", "train_samples_per_s")
# The environment facts beside the per-run timings (all of environment.json stays in the
# configuration section).
ENVIRONMENT = (
    "device",
    "device_name",
    "torch_threads",
    "malloc",
    "torch",
    "triton",
    "cuda",
    "git_commit",
)


@dataclass(eq=False)  # a model is itself, not its contents: two runs may hold equal rows
class Model:
    """One model of one run, over its seeds."""

    label: str
    rows: list[Mapping[str, Any]]

    @property
    def finished(self) -> bool:
        return all(r.get("status") == "ok" for r in self.rows)

    @property
    def status(self) -> str:
        """``ok``; the one row's status; or ``ok k/n`` and the first failure across seeds."""
        if self.finished:
            return "ok"
        if len(self.rows) == 1:
            return str(self.rows[0].get("status"))
        done = sum(r.get("status") == "ok" for r in self.rows)
        failed = next(r for r in self.rows if r.get("status") != "ok")
        return f"ok {done}/{len(self.rows)}; seed {failed.get('seed')}: {failed.get('status')}"


def models_of(runs: list[Run]) -> list[Model]:
    found = []
    for run in runs:
        for group in by_model(run.results.to_dict("records")).values():
            label = row_label(group[0])
            found.append(Model(f"{run.name}: {label}" if len(runs) > 1 else label, group))
    return found


def headline_columns(runs: list[Run], models: list[Model]) -> list[Column]:
    """The first screen's metrics that this comparison measured."""

    def measured(key: str) -> bool:
        return any(values(m.rows, key) for m in models)

    keys = list(FIRST_SCREEN)
    cited = {ref.metric for run in runs for ref in _references(run)}
    for nats, bits in (("iw_nll", "bpd"), ("neg_elbo", "neg_elbo_bpd")):
        if bits in cited and measured(bits):  # the literature's unit, where it was measured
            keys[keys.index(nats)] = bits
    keys = [k for k in keys if measured(k)]
    if not any(column(k).group == "quality" for k in keys) and measured("recon_nll"):
        keys.insert(0, "recon_nll")  # the AE family has no bound: its reconstruction
    return [column(k) for k in keys]


def _signed(col: Column, value: float) -> str:
    return format(value, "+" + (col.fmt or "g"))


def _p(p: float) -> str:
    return MISSING if math.isnan(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def ranking(col: Column, models: list[Model]) -> list[tuple[Model, list[float]]]:
    """Models with a figure for ``col``, best first (by the mean over seeds)."""
    scored = [(m, values(m.rows, col.key)) for m in models]
    scored = [(m, xs) for m, xs in scored if xs]
    return sorted(scored, key=lambda s: mean(s[1]), reverse=col.better == "higher")


def _gap(col: Column, value: float) -> str:
    """A difference in the column's format, with two significant digits where that format
    would round it to zero."""
    text = _signed(col, value)
    return text if value == 0 or any(ch in "123456789" for ch in text) else f"{value:+.2g}"


def versus_best(col: Column, best: list[float], xs: list[float]) -> str:
    """This model's difference to the best (relative too for speeds); with seeds on both
    sides, Welch's 95 % interval and p."""
    diff = difference(best, xs)
    text = _gap(col, diff.delta)
    if col.group == "throughput":
        text += f" ({diff.delta / mean(best):+.0%})"
    if diff.has_error_bars:
        text += f" [{_gap(col, diff.low)}, {_gap(col, diff.high)}] p {_p(diff.p)}"
    elif len(best) > 1 or len(xs) > 1:  # seeds on one side only
        text += " (one seed on a side: no interval)"
    return text


def summary_table(cols: list[Column], models: list[Model]) -> tuple[Table, list[str]]:
    """A row per model (ordered by the first metric), per metric its value and its difference
    to that metric's best model (every model tied with it marked best); and the lead
    sentences."""
    ranked = {col.key: ranking(col, models) for col in cols}
    scored = {col.key: {id(m): xs for m, xs in ranked[col.key]} for col in cols}
    order = [m for m, _ in ranked[cols[0].key]]
    order += [m for m in models if m not in order and any(scored[c.key].get(id(m)) for c in cols)]
    headers = ["model"]
    for col in cols:
        headers += [col.title, "this − best"]
    rows, best = [], set()
    for r, model in enumerate(order):
        line = [model.label]
        for c, col in enumerate(cols):
            xs = scored[col.key].get(id(model))
            top = ranked[col.key][0][1] if xs else []  # a model with a figure: a best exists
            if not xs:
                line += [MISSING, ""]
            elif mean(xs) == mean(top):
                line += [mean_std(col, xs), "best"]
                best.add((r, 1 + 2 * c))
            else:
                line += [mean_std(col, xs), versus_best(col, top, xs)]
        rows.append(line)
    return Table(headers, rows, best, text_columns=1), [_lead(col, ranked[col.key]) for col in cols]


def _lead(col: Column, ranked: list[tuple[Model, list[float]]]) -> str:
    (top, top_xs), unit = ranked[0], f" {col.unit}" if col.unit else ""
    text = f"{col.header}: {top.label} ({col.format(mean(top_xs))}{unit})"
    if len(ranked) == 1:
        return text
    second, second_xs = ranked[1]
    diff = difference(top_xs, second_xs)
    if col.group == "throughput":  # a speed: as a ratio, the table giving the difference
        text += f", {mean(top_xs) / mean(second_xs):.2f}x {second.label}"
    else:
        text += f", {_gap(col, abs(diff.delta))[1:]}{unit} ahead of {second.label}"
    if diff.has_error_bars:
        sure = "significant" if diff.p < 0.05 else "not significant"
        text += f" (p {_p(diff.p)}, {sure} at 0.05)"
    return text


def run_line(run: Run, several: bool) -> str:
    """Data, task, device and software of a run, in one line."""
    rows = run.results.to_dict("records")
    first = next((r for r in rows if r.get("status") == "ok"), rows[0] if rows else {})

    def count(key: str) -> str:
        value = first.get(key)
        return (
            f"{int(value):,}" if isinstance(value, (int, float)) and math.isfinite(value) else "?"
        )

    env = run.environment
    data = f"data {first.get('dataset', '?')} ({count('n_train')} train / {count('n_valid')} "
    data += f"valid / {count('n_test')} test)"
    task = run.task.get("name")
    if task:
        data += f", task {task}@{run.task.get('version')}"
    recipes = sorted({recipe_name(r) for r in rows} - {""})
    if recipes:
        data += f", recipe {', '.join(recipes)}"
    device = str(env.get("device", "?"))
    if env.get("device_name"):
        device += f" ({env['device_name']}, {env.get('torch_threads', '?')} threads)"
    seeds = [str(x) for x in sorted({r.get("seed") for r in rows}, key=_seed_order)]
    n_models = len(by_model(rows))
    text = (
        f"{data} · device {device} · torch {env.get('torch', '?')} · "
        f"{n_models} model{'s' if n_models != 1 else ''}, "
        f"seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds) or '?'}"
    )
    return f"{run.name}: {text}" if several else text[0].upper() + text[1:]


def _seed_order(seed: Any) -> tuple[int, float, str]:
    """Numbers in numeric order (2 before 10), anything else after, as text."""
    number = isinstance(seed, (int, float)) and not isinstance(seed, bool)
    return (0, float(seed), "") if number and math.isfinite(seed) else (1, 0.0, str(seed))


def _references(run: Run) -> list:
    return references_of(run.task, str(run.path / "task.json")) if run.task else []


def published_table(runs: list[Run]) -> Table | str | None:
    """Literature, a published reproduction and this run side by side, for the references
    whose recipe a model of this run ran; a sentence when a task run ran none of them."""
    headers = ["figure", "published model", "this run's model", "literature", "reproduction",
               "this run", "vs literature", "vs reproduction"]  # fmt: skip
    lines = []
    tasks = []
    for run in runs:
        refs = _references(run)
        if not refs:
            continue
        tasks.append(run)
        for ref in refs:
            col = column(ref.metric)
            for group in by_model(run.results.to_dict("records")).values():
                if not ref.recipe or recipe_name(group[0]) != ref.recipe:
                    continue
                xs = values(group, ref.metric)
                if not xs:
                    continue
                mine = mean(xs)
                repro = ref.reproduction
                k = f", K = {ref.samples}" if ref.samples else ""
                name = (
                    f"{run.name}: {row_label(group[0])}" if len(runs) > 1 else row_label(group[0])
                )
                lines.append(
                    [f"{col.title}{k}", f"{ref.model}, {ref.architecture} (recipe {ref.recipe})", name,
                     col.format(ref.value), MISSING if repro is None else col.format(repro),
                     mean_std(col, xs), _signed(col, mine - ref.value),
                     MISSING if repro is None else _signed(col, mine - repro)]
                )  # fmt: skip
    if lines:
        return Table(headers, lines, text_columns=3)
    if tasks:
        return (
            "No model of this run ran a reference's recipe (--recipe NAME), so no published "
            "figure is its counterpart; the task's figures are in the Literature section."
        )
    return None


def summary_section(runs: list[Run]) -> Section:
    """The first section of a run report."""
    models = models_of(runs)
    section = Section("summary", "Summary")
    section.blocks += [run_line(run, len(runs) > 1) for run in runs]
    cols = headline_columns(runs, models)
    if cols:
        table, lead = summary_table(cols, models)
        seeded = any(len(values(m.rows, c.key)) > 1 for m in models for c in cols)
        section.blocks.append(
            "Best per metric. "
            + "; ".join(lead)
            + "."
            + (
                " Differences are of means over seeds, with Welch's 95 % interval and p."
                if seeded
                else " One seed per model: differences carry no error bars (--seeds 0,1,2 adds them)."
            )
        )
        section.blocks.append(table)
    else:
        section.blocks.append("No model finished: nothing to rank.")
    unfinished = [m for m in models if not m.finished]
    if unfinished:
        section.blocks.append(
            "Not finished: " + "; ".join(f"{m.label} ({m.status})" for m in unfinished) + "."
        )
    published = published_table(runs)
    if published is not None:
        section.blocks.append(published)
    return section


def per_run_section(runs: list[Run]) -> Section:
    """Figures measured once per run (the reparameterization + KL backends alone) and the
    environment, each once, not repeated in every model's row."""
    section = Section("per-run", "Per-run measurements and environment")
    keys = [k for run in runs for k in run.results.columns]
    cols = per_run_columns(keys)
    if cols:
        rows = []
        for run in runs:
            records = run.results.to_dict("records")
            # a model that diverged or failed before timing has none of the run's figures
            records = [r for r in records if r.get("status") == "ok"] or records
            seen: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
            for record in records:
                seen.setdefault(tuple(c.format(record.get(c.key)) for c in cols), []).append(record)
            for cells, alike in seen.items():
                labels = ", ".join(row_label(r, True) for r in alike)
                where = run.name if len(seen) == 1 else f"{run.name} ({labels})"
                first = alike[0]
                shape = f"{first.get('timing_batch_size', '?')} x {first.get('latent_dim', '?')}"
                rows.append([where, shape, *cells])
        section.blocks += [
            "reparameterize_kl forward + backward alone (noise drawn, KL summed), fp32, at the "
            "run's timing batch x latent size, once per run for each backend it timed; median "
            "samples/s and IQR / median of the repeats.",
            Table(["run", "batch x latent", *(c.title for c in cols)], rows, text_columns=2),
        ]
    env_rows = [[run.name, *(_text(run.environment.get(k)) for k in ENVIRONMENT)] for run in runs]
    section.blocks.append(Table(["run", *ENVIRONMENT], env_rows, text_columns=len(ENVIRONMENT) + 1))
    return section


def _text(value: Any) -> str:
    return MISSING if is_missing(value) else str(value)
