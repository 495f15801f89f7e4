"""A run, top to bottom: resolve the context once (data, device, backend, likelihood,
classifier), then ``run_one`` per (model, plugin, prior): build, train, evaluate, time, save.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vaebench import allocator
from vaebench.checkpoints import REPORT_EXAMPLES, model_views, save_checkpoint
from vaebench.config import RunConfig, row_settings
from vaebench.data import Dataset, sample_binary
from vaebench.errors import ConfigError
from vaebench.evaluate import evaluate, untrained
from vaebench.generative import (
    FeatureClassifier,
    load_or_train_classifier,
)
from vaebench.io import (
    atomic_write_text,
    check_new_run_dir,
    environment,
    read_json,
    write_json,
    write_results,
)
from vaebench.kernels import resolve_backend, triton_available
from vaebench.loading import combined_digest, data_digests, load_dataset
from vaebench.model import VAE, ModelSpec, Objective, build_family, build_model
from vaebench.modes import EAGER, Mode, peak_memory_mb
from vaebench.options import call_factory, check_option_keys
from vaebench.registry import Registry
from vaebench.reporting import Reporter
from vaebench.schema import columns_of, metric_columns, row_label, row_stem
from vaebench.step import StepSettings
from vaebench.timing import Timing, measure_reparam_kl, out_of_memory, throughput
from vaebench.tracking import ModelRecord, Trackers
from vaebench.train import TrainOutcome, train, watched_key
from vaebench.workload import check_workload

MAX_TIMING_BATCH = 256
EXAMPLES_FOR_PRIORS = 512  # training inputs offered to priors that start from data (VampPrior)


def timed_backends(selected: str, device: torch.device) -> list[str]:
    """Backends whose reparameterization + KL time the run reports beside the models'.

    On CUDA every backend (the comparison the fused kernel exists for); on the CPU the one in
    use and the torch reference, since compiling takes longer than a whole default run.
    """
    if device.type == "cuda":
        candidates = ["torch", "compile", "triton"] if triton_available() else ["torch", "compile"]
        return list(dict.fromkeys([selected, *candidates]))
    return list(dict.fromkeys([selected, "torch"]))


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]


@dataclass
class RunContext:
    """What every model of a run shares, resolved once: data, device, backend, likelihood."""

    config: RunConfig
    registry: Registry
    out: Path
    dataset: Dataset
    likelihood: str
    device: torch.device
    kernel_backend: str
    x_train: torch.Tensor
    x_valid: torch.Tensor
    x_test: torch.Tensor
    timing_batch: torch.Tensor
    steps_per_epoch: int
    classifier: tuple[FeatureClassifier, float] | None
    reparam_timings: dict[str, Timing]
    data_files: dict[str, str]

    @classmethod
    def resolve(cls, config: RunConfig, registry: Registry) -> RunContext:
        """Load and check everything; bad data or options fail here, before any file is written."""
        dataset = load_dataset(config, registry)
        likelihood = config.likelihood
        if likelihood == "auto":  # Bernoulli for [0, 1] data, Gaussian otherwise
            likelihood = "bernoulli" if dataset.unit_interval else "gaussian"
        check_options(config, registry, dataset, likelihood)
        check_workload(
            config, len(dataset.x_train), len(dataset.x_test), math.prod(dataset.input_shape)
        )
        device = torch.device(config.device)
        kernel_backend = resolve_backend(config.kernel, device)
        x_train, x_valid, x_test = (
            dataset.x_train.to(device),
            dataset.x_valid.to(device),
            dataset.x_test.to(device),
        )
        timing_batch = x_train[: min(config.batch_size, MAX_TIMING_BATCH)]
        classifier = load_or_train_classifier(dataset) if dataset.has_labels else None
        reparam = {
            backend: measure_reparam_kl(
                backend,
                rows=timing_batch.shape[0],
                latent_dim=config.latent_dim,
                device=device,
                min_run_time=config.timing_min_time,
            )
            for backend in timed_backends(kernel_backend, device)
        }
        steps = math.ceil(x_train.shape[0] / config.batch_size)
        fields = (dataset, likelihood, device, kernel_backend, x_train, x_valid, x_test)
        return cls(
            config,
            registry,
            Path(config.out),
            *fields,
            timing_batch,
            steps,
            classifier,
            reparam,
            data_digests(dataset),
        )

    @property
    def seeded(self) -> bool:
        """Several seeds: labels and file names carry the seed."""
        return len(self.config.seed_list()) > 1

    def objective(self, name: str) -> Objective:
        """The objective ``name`` with its ``-M`` options (checked when the config resolved)."""
        component = self.registry.get("model", name)
        options = self.config.model_options
        return call_factory(
            component, options=options, flag="-M", steps_per_epoch=self.steps_per_epoch
        )

    def grid(self):
        """(model name, objective, plugin, prior, mode) for every combination to run.

        The AE family trains without a prior: each AE-family model runs once per plugin, with
        prior ``normal``, which only says where its "prior samples" are drawn (N(0, I)).
        Each model runs in every (precision, compile) mode, fp32 eager first.
        """
        config = self.config
        for name in config.models:
            objective = self.objective(name)
            priors = config.priors if objective.variational else ["normal"]
            for plugin, prior in itertools.product(config.plugins, priors):
                for precision, compile_mode in config.modes():
                    mode = Mode(precision, compile_mode, config.cuda_graphs)
                    yield name, objective, plugin, prior, mode


def run(
    config: RunConfig,
    registry: Registry,
    reporter: Reporter | None = None,
    *,
    resume: bool = False,
) -> list[dict[str, Any]]:
    """Train and measure every model of a resolved ``config``; returns the result rows.

    Rows are written after each model, so an interrupted run keeps every finished model, and
    each model's training state after each epoch (``training/<model>.pt``, removed once its
    row is written). ``resume``: continue the run already in ``config.out``: finished models
    keep their rows, an interrupted one continues from its last completed epoch. Sets this
    process's malloc thresholds for good (``vaebench.allocator``; ``VAEBENCH_MALLOC=system``
    leaves them).
    """
    reporter = reporter or Reporter()
    allocator.keep_freed_memory()  # in this process, whichever executor started it
    if not resume:
        check_new_run_dir(Path(config.out), overwrite=config.overwrite)
    trackers = Trackers.build(config.track, registry, out=Path(config.out), uri=config.tracking_uri)
    context = open_run(config, registry, resume=resume)
    out = context.out
    trackers.start(out.name, config.to_dict())
    finished = finished_rows(out, context.seeded) if resume else {}
    if finished and all(label in finished for label in planned_labels(context)):
        return list(finished.values())  # nothing to resume: the finished run stays as it is
    rows: list[dict[str, Any]] = []
    histories: dict[str, list[dict[str, float]]] = read_json(out / "history.json", {}) or {}
    references: dict[tuple[Any, ...], dict[str, Any]] = {}  # fp32 eager rows by model and seed
    for seed in config.seed_list():
        for name, objective, plugin, prior, mode in context.grid():
            identity = start_row(context, name, objective, plugin, prior, seed, mode)
            label = row_label(identity, context.seeded)
            if label in finished:
                row, history = finished[label], None
            else:
                with mode.numerics():
                    row, history = run_one(
                        context, name, objective, plugin, prior, reporter, seed, mode
                    )
            same_model = (name, plugin, prior, seed)
            if mode.is_reference:
                references[same_model] = row
            elif same_model in references:
                row.update(quality_deltas(row, references[same_model]))
            rows.append(row)
            if history is not None:
                histories[row_label(row, context.seeded)] = history
            write_results(out, rows)
            write_json(out / "history.json", histories)
            drop_training_state(training_state(context, row))
            reporter.finished(row)
            if label not in finished:
                trackers.log_model(model_record(row, history or [], out, registry, context.seeded))
    if trackers.active:
        finish_trackers(trackers, out, registry, reporter)
    return rows


def planned_labels(context: RunContext) -> list[str]:
    """The label of every row the run's config asks for."""
    return [
        row_label(start_row(context, name, objective, plugin, prior, seed, mode), context.seeded)
        for seed in context.config.seed_list()
        for name, objective, plugin, prior, mode in context.grid()
    ]


def finished_rows(out: Path, seeded: bool) -> dict[str, dict[str, Any]]:
    """The rows a resumed run keeps, by label: every model that reached a row (ok, diverged
    or failed) is finished; only models without one train."""
    rows = read_json(out / "results.json", []) or []
    return {row_label(row, seeded): row for row in rows}


def training_state(context: RunContext, row: dict[str, Any]) -> Path:
    """Where a model's training state is kept between epochs (for ``--resume``)."""
    return context.out / "training" / f"{row_stem(row, context.seeded)}.pt"


def drop_training_state(path: Path) -> None:
    """A finished model's training state is no longer needed (its folder goes when empty)."""
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def open_run(config: RunConfig, registry: Registry, *, resume: bool = False) -> RunContext:
    """The run's context, then its folder with the config, environment and task: bad data,
    options or sizes fail before anything is written. A resumed run keeps the files it has."""
    try:
        context = RunContext.resolve(config, registry)
    except (MemoryError, RuntimeError) as exc:
        if not out_of_memory(exc):
            raise
        raise ConfigError(
            f"the run does not fit in memory (data {config.dataset}, --latent-dim "
            f"{config.latent_dim}, --batch-size {config.batch_size}: {_one_line(exc)[:120]}); "
            "use smaller sizes"
        ) from None
    out = context.out
    if resume:
        return context
    if config.overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config.to_dict())
    environment_record = {**environment(config.device), "data_files": context.data_files}
    write_json(out / "environment.json", environment_record)
    if config.task is not None:
        from vaebench.tasks import get_task

        write_json(out / "task.json", get_task(registry, config.task).to_dict())
    return context


def model_record(
    row: dict[str, Any],
    history: list[dict[str, float]],
    out: Path,
    registry: Registry,
    seeded: bool = False,
) -> ModelRecord:
    """What trackers are told about one finished model: read from its row, nothing else."""
    checkpoint = out / row["checkpoint"] if row.get("checkpoint") else None
    return ModelRecord(
        label=row_label(row, seeded),
        stem=row_stem(row, seeded),
        status=row["status"],
        settings={c.key: row[c.key] for g in ("identity", "setting") for c in columns_of(g, row)},
        metrics={
            c.key: float(row[c.key])
            for c in metric_columns(row)
            if isinstance(row[c.key], (int, float)) and math.isfinite(row[c.key])
        },
        history=history,
        checkpoint=checkpoint,
        views=None if checkpoint is None else lambda: model_views(registry, checkpoint),
    )


def finish_trackers(trackers: Trackers, out: Path, registry: Registry, reporter: Reporter) -> None:
    """The run's files, and what the reporter draws from them, handed to the trackers."""
    try:
        drawn = reporter.report(out, registry)
    except Exception as exc:  # the trackers get the files there are
        trackers.warn(f"vaebench: warning: no report for the trackers ({_one_line(exc)})")
        drawn = []
    names = ("results.csv", "results.json", "config.json", "environment.json")
    trackers.finish([*(out / name for name in names), *drawn])


def quality_deltas(row: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    """What a mode costs in nats: this row's NLLs minus those of its fp32 eager twin."""
    deltas = {}
    for key in ("iw_nll", "recon_nll"):
        mine, theirs = row.get(key), reference.get(key)
        if isinstance(mine, float) and isinstance(theirs, float):
            deltas[f"delta_{key}_vs_fp32_eager"] = mine - theirs
    return deltas


def run_one(
    context: RunContext,
    name: str,
    objective: Objective,
    plugin: str,
    prior: str,
    reporter: Reporter,
    seed: int | None = None,
    mode: Mode = EAGER,
) -> tuple[dict[str, Any], list[dict[str, float]] | None]:
    """Build, train, evaluate, time and save one model; a failure stays in its own row.

    A failing model gets a one-line status in its row and its full traceback in
    ``errors/<model>.txt``; the other models still run.
    """
    seed = context.config.seed if seed is None else seed
    row = start_row(context, name, objective, plugin, prior, seed, mode)
    history = None
    try:
        torch.manual_seed(seed)
        model, spec = build(context, row, mode)
        outcome = train_stage(context, model, objective, row, reporter, mode)
        history = outcome.history
        if not outcome.diverged:
            row.update(evaluate_stage(context, model, objective, reporter, seed))
            row.update(time_stage(context, model, objective, mode, row.get("compile_seconds")))
            save_stage(context, model, spec, row)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a broken plugin or model fails alone (sys.exit() too)
        row["status"] = f"failed: {_one_line(exc)}"
        stem = row_stem(row, context.seeded)
        atomic_write_text(context.out / "errors" / f"{stem}.txt", traceback.format_exc())
    return row, history


def start_row(
    context: RunContext,
    name: str,
    objective: Objective,
    plugin: str,
    prior: str,
    seed: int,
    mode: Mode,
) -> dict[str, Any]:
    """The row's identity and settings, known before the model exists (a failed row has them)."""
    return {
        "model": name,
        "plugin": plugin,
        "prior": prior,
        "precision": mode.precision,
        "compile": mode.compile,
        "cuda_graphs": mode.cuda_graphs,
        "dataset": context.dataset.name,
        "likelihood": context.likelihood,
        "family": "vae" if objective.variational else "ae",
        **row_settings(context.config),
        "seed": seed,
        "kernel_backend": context.kernel_backend,
        "layout": context.dataset.layout,
        **context.dataset.sizes(),
        "data_sha256": combined_digest(context.data_files),
    }


def build(context: RunContext, row: dict[str, Any], mode: Mode) -> tuple[VAE, ModelSpec]:
    """The model from its plugins, on the run's device, in its mode."""
    config = context.config
    spec = ModelSpec(
        row["plugin"],
        row["prior"],
        context.likelihood,
        context.dataset.input_shape,
        config.latent_dim,
        config.prior_options,
        config.likelihood_options,
        config.arch_options,
    )
    examples = context.dataset.x_train[:EXAMPLES_FOR_PRIORS]
    model = build_model(context.registry, spec, kernel_backend=config.kernel, examples=examples)
    model = model.to(context.device)
    row["parameters"] = sum(p.numel() for p in model.parameters())
    mode.prepare(model)
    return model, spec


def train_stage(
    context: RunContext,
    model: VAE,
    objective: Objective,
    row: dict[str, Any],
    reporter: Reporter,
    mode: Mode,
) -> TrainOutcome:
    """The untrained figure, then training; the row gets its time, status and best epoch."""
    config = context.config
    row.update(untrained(model, objective, context.x_test))
    total_steps = config.epochs * context.steps_per_epoch
    with reporter.progress(f"training {row_label(row, context.seeded)}", total_steps):
        outcome = train(
            model,
            context.x_train,
            objective=objective,
            epochs=config.epochs,
            batch_size=config.batch_size,
            settings=StepSettings.of(config, context.registry),
            seed=row["seed"],
            x_valid=context.x_valid,
            patience=config.patience,
            batch_transform=sample_binary if config.binarize == "dynamic" else None,
            on_step=reporter.advance,
            mode=mode,
            state_path=training_state(context, row),
        )
    row.update(
        train_seconds=outcome.seconds, valid_seconds=outcome.valid_seconds, status=outcome.status
    )
    row.update(epochs_run=outcome.epochs_run, best_epoch=outcome.best_epoch)
    if mode.compiled:  # timing adds its own first calls
        row["compile_seconds"] = outcome.compile_seconds
    if outcome.best_epoch is not None:
        watched = watched_key(objective)
        row[watched] = outcome.history[outcome.best_epoch - 1][watched]
    return outcome


def evaluate_stage(
    context: RunContext, model: VAE, objective: Objective, reporter: Reporter, seed: int
) -> dict[str, Any]:
    """Test-split metrics and the evaluation's peak memory."""
    quality: dict[str, Any] = {}

    def evaluation() -> None:
        iw_samples = context.config.iw_samples
        quality.update(
            evaluate(model, objective, context, iw_samples=iw_samples, seed=seed, reporter=reporter)
        )

    peak = peak_memory_mb(evaluation, context.device)
    return {"eval_peak_mb": peak, **quality}


def time_stage(
    context: RunContext,
    model: VAE,
    objective: Objective,
    mode: Mode,
    training_compile: float | None,
) -> dict[str, Any]:
    """Throughput columns (the trained step, timed), and the run's reparam+KL timings."""
    config = context.config
    timed = throughput(
        model,
        objective,
        context.x_train,
        batch=context.timing_batch.shape[0],
        curve=config.timing_batch_sizes,
        settings=StepSettings.of(config, context.registry),
        min_run_time=config.timing_min_time,
        mode=mode,
    )
    if mode.compiled:  # training's compile time and timing's first calls
        timed["compile_seconds"] += training_compile or 0.0
    for backend, timing in context.reparam_timings.items():
        timed[f"reparam_kl_{backend}_samples_per_s"] = timing.samples_per_s
        timed[f"reparam_kl_{backend}_spread"] = timing.relative_spread
    return timed


def save_stage(context: RunContext, model: VAE, spec: ModelSpec, row: dict[str, Any]) -> None:
    """The checkpoint, with the test examples the report draws from it."""
    out = context.out
    path = out / "checkpoints" / f"{row_stem(row, context.seeded)}.pt"
    save_checkpoint(path, model, spec, context.dataset.x_test[:REPORT_EXAMPLES])
    row["checkpoint"] = str(path.relative_to(out))


def check_options(config: RunConfig, registry: Registry, dataset: Dataset, likelihood: str) -> None:
    """The likelihood and every prior built once, so a bad ``-L``/``-P`` value stops the run
    before training, not each model after. Option keys were checked with the config, except
    for a likelihood that only the data chose (``auto``), checked here."""
    shape = dataset.input_shape
    component = registry.get("likelihood", likelihood)
    if config.likelihood == "auto":
        check_option_keys([component], config.likelihood_options, "-L", 1)
    call_factory(component, shape, options=config.likelihood_options, flag="-L")
    priors = [registry.get("prior", prior) for prior in config.priors]
    encoder = None
    for plugin in config.plugins:  # a bad -A value stops the run here, like -L and -P
        try:
            built, _ = build_family(
                registry, plugin, shape, shape, config.latent_dim, config.arch_options
            )
        except ConfigError:
            raise
        except Exception:  # a broken family fails its own models later, with a status
            continue
        encoder = encoder or built  # a VampPrior needs an encoder
    context = {"input_shape": shape, "encoder": encoder, "examples": dataset.x_train[:8]}
    for component in priors:
        try:
            call_factory(
                component, config.latent_dim, options=config.prior_options, flag="-P", **context
            )
        except ConfigError:
            raise
        except Exception:  # a prior that cannot be built fails its own models, with a status
            pass
