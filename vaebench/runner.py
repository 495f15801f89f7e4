"""A run, top to bottom: resolve the context once (data, device, backend, likelihood,
classifier), then ``run_one`` per (model, plugin, prior): build, train, evaluate, time, save.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import shutil
import traceback
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vaebench import metrics
from vaebench.checkpoints import REPORT_EXAMPLES, model_views, save_checkpoint
from vaebench.config import RunConfig, row_settings
from vaebench.data import Dataset, binarized, load_path, sample_binary, with_validation
from vaebench.errors import ConfigError, DataError
from vaebench.formats import sha256_file
from vaebench.generative import (
    FeatureClassifier,
    interpolation_smoothness,
    load_or_train_classifier,
    mmd,
    sample_quality,
)
from vaebench.io import (
    atomic_write_text,
    check_new_run_dir,
    environment,
    write_json,
    write_results,
)
from vaebench.kernels import resolve_backend, triton_available
from vaebench.model import VAE, ModelSpec, Objective, build_model
from vaebench.modes import EAGER, Mode, peak_memory_mb
from vaebench.options import call_factory, check_option_keys
from vaebench.registry import Registry
from vaebench.resolve import is_path
from vaebench.schema import columns_of, metric_columns, row_label, row_stem
from vaebench.step import StepSettings
from vaebench.timing import Timing, measure_model, measure_reparam_kl, out_of_memory
from vaebench.tracking import ModelRecord, Trackers
from vaebench.train import train, watched_key

MAX_TIMING_BATCH = 256
EXAMPLES_FOR_PRIORS = 512  # training inputs offered to priors that start from data (VampPrior)


class Reporter:
    """What the runner tells the user interface (this one stays silent; the CLI draws bars)."""

    def progress(self, description: str, total: int) -> AbstractContextManager[Any]:
        """A bar for ``total`` units of work (training steps, examples of the IW-NLL)."""
        return nullcontext()

    def advance(self, amount: int = 1) -> None:
        pass

    def finished(self, row: dict[str, Any]) -> None:
        pass

    def report(self, out: Path, registry: Registry) -> list[Path]:
        """Files drawn from the finished run for its trackers (a report). The runner draws
        none itself: a caller that wants one (the CLI, a sweep cell) makes it here."""
        return []


def timed_backends(selected: str, device: torch.device) -> list[str]:
    """Backends whose reparameterization + KL time the run reports beside the models'.

    On CUDA every backend (the comparison the fused kernel exists for); on the CPU the one in
    use and the torch reference, since compiling takes longer than a whole default run.
    """
    if device.type == "cuda":
        candidates = ["torch", "compile", "triton"] if triton_available() else ["torch", "compile"]
        return list(dict.fromkeys([selected, *candidates]))
    return list(dict.fromkeys([selected, "torch"]))


def load_dataset(config: RunConfig, registry: Registry) -> Dataset:
    """The run's data with its three splits, binarized as asked."""
    try:
        return _load_dataset(config, registry)
    except MemoryError:
        source = f"task {config.task} in {config.data_root}" if config.task else config.dataset
        raise DataError(f"{source}: the data does not fit in memory") from None


def _load_dataset(config: RunConfig, registry: Registry) -> Dataset:
    if config.task is not None:
        from vaebench.tasks import get_task
        from vaebench.tasks.load import load_task_data

        dataset = load_task_data(get_task(registry, config.task), Path(config.data_root))
    elif is_path(config.dataset, registry):
        dataset = load_path(config.dataset, config.dataset_options)
    else:
        dataset = named_dataset(config, registry)
    dataset = with_validation(dataset, config.valid_fraction)
    return binarized(dataset, config.binarize)


def named_dataset(config: RunConfig, registry: Registry) -> Dataset:
    try:  # its option keys were checked with the config (RunConfig.check_option_keys)
        dataset = call_factory(
            registry.get("dataset", config.dataset),
            options=config.dataset_options,
            flag="-D",
            seed=config.seed,
        )
    except MemoryError:
        raise DataError(
            f"dataset '{config.dataset}' with {config.dataset_options} does not fit in memory"
        ) from None
    if not isinstance(dataset, Dataset):
        raise DataError(
            f"dataset '{config.dataset}' returned {type(dataset).__name__}, not vaebench.data.Dataset"
        )
    return dataset


def data_digests(dataset: Dataset) -> dict[str, str]:
    """sha256 of every file the data came from: two runs can be checked to have read the
    same bytes (``environment.json``; the row carries a digest of these digests)."""
    return {path: sha256_file(Path(path)) for path in dataset.files}


def combined_digest(digests: dict[str, str]) -> str:
    if not digests:
        return ""
    text = "".join(f"{Path(p).name} {d}\n" for p, d in sorted(digests.items()))
    return hashlib.sha256(text.encode()).hexdigest()


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
    config: RunConfig, registry: Registry, reporter: Reporter | None = None
) -> list[dict[str, Any]]:
    """Train and measure every model of a resolved ``config``; returns the result rows.

    Rows are written after each model, so an interrupted run keeps every finished model.
    """
    reporter = reporter or Reporter()
    check_new_run_dir(Path(config.out), overwrite=config.overwrite)
    trackers = Trackers.build(config.track, registry, out=Path(config.out), uri=config.tracking_uri)
    try:  # bad data, options or sizes: nothing written yet
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
    if config.overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config.to_dict())
    write_json(
        out / "environment.json", {**environment(config.device), "data_files": context.data_files}
    )
    if config.task is not None:
        from vaebench.tasks import get_task

        write_json(out / "task.json", get_task(registry, config.task).to_dict())
    trackers.start(out.name, config.to_dict())
    rows: list[dict[str, Any]] = []
    histories: dict[str, list[dict[str, float]]] = {}
    references: dict[tuple[Any, ...], dict[str, Any]] = {}  # fp32 eager rows by model and seed
    for seed in config.seed_list():
        for name, objective, plugin, prior, mode in context.grid():
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
            reporter.finished(row)
            record = model_record(row, history or [], out, registry, context.seeded)
            trackers.log_model(record)
    if trackers.active:
        finish_trackers(trackers, out, registry, reporter)
    return rows


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
    config, out = context.config, context.out
    seed = config.seed if seed is None else seed
    row: dict[str, Any] = {
        "model": name,
        "plugin": plugin,
        "prior": prior,
        "precision": mode.precision,
        "compile": mode.compile,
        "cuda_graphs": mode.cuda_graphs,
        "dataset": context.dataset.name,
        "likelihood": context.likelihood,
        "family": "vae" if objective.variational else "ae",
        **row_settings(config),
        "seed": seed,
        "kernel_backend": context.kernel_backend,
        "layout": context.dataset.layout,
        **context.dataset.sizes(),
        "data_sha256": combined_digest(context.data_files),
    }
    history = None
    try:
        torch.manual_seed(seed)
        spec = ModelSpec(
            plugin,
            prior,
            context.likelihood,
            context.dataset.input_shape,
            config.latent_dim,
            config.prior_options,
            config.likelihood_options,
        )
        examples = context.dataset.x_train[:EXAMPLES_FOR_PRIORS]
        model = build_model(
            context.registry, spec, kernel_backend=config.kernel, examples=examples
        ).to(context.device)
        row["parameters"] = sum(p.numel() for p in model.parameters())
        mode.prepare(model)
        row.update(untrained(model, objective, context.x_test))
        total_steps = config.epochs * context.steps_per_epoch
        with reporter.progress(f"training {row_label(row, context.seeded)}", total_steps):
            outcome = train(
                model,
                context.x_train,
                objective=objective,
                epochs=config.epochs,
                batch_size=config.batch_size,
                settings=StepSettings.of(config),
                seed=seed,
                x_valid=context.x_valid,
                patience=config.patience,
                batch_transform=sample_binary if config.binarize == "dynamic" else None,
                on_step=reporter.advance,
                mode=mode,
            )
        history = outcome.history
        row["train_seconds"] = outcome.seconds
        row["status"] = outcome.status
        row["epochs_run"] = outcome.epochs_run
        row["best_epoch"] = outcome.best_epoch
        if mode.compiled:  # timing adds its own first calls below
            row["compile_seconds"] = outcome.compile_seconds
        if outcome.best_epoch is not None:
            watched = watched_key(objective)
            row[watched] = outcome.history[outcome.best_epoch - 1][watched]
        if not outcome.diverged:
            quality: dict[str, Any] = {}

            def evaluation() -> None:
                quality.update(evaluate(model, objective, context, reporter, seed))

            row["eval_peak_mb"] = peak_memory_mb(evaluation, context.device)
            row.update(quality)
            timed = throughput(model, objective, context, mode)
            if mode.compiled:  # training's compile time and timing's first calls
                timed["compile_seconds"] += row["compile_seconds"]
            row.update(timed)
            path = out / "checkpoints" / f"{row_stem(row, context.seeded)}.pt"
            save_checkpoint(path, model, spec, context.dataset.x_test[:REPORT_EXAMPLES])
            row["checkpoint"] = str(path.relative_to(out))
            for backend, timing in context.reparam_timings.items():
                row[f"reparam_kl_{backend}_samples_per_s"] = timing.samples_per_s
                row[f"reparam_kl_{backend}_spread"] = timing.relative_spread
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a broken plugin or model fails alone (sys.exit() too)
        row["status"] = f"failed: {_one_line(exc)}"
        stem = row_stem(row, context.seeded)
        atomic_write_text(out / "errors" / f"{stem}.txt", traceback.format_exc())
    return row, history


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
    try:  # a VampPrior needs an encoder; a broken encoder fails its own models later
        encoder = registry.get("encoder", config.plugins[0]).factory(shape, config.latent_dim)
    except Exception:
        encoder = None
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


@torch.no_grad()
def untrained(model: VAE, objective: Objective, x_test: torch.Tensor) -> dict[str, float]:
    """The same network before its first step: what training must beat."""
    model.eval()
    if objective.variational:
        return {"neg_elbo_untrained": metrics.elbo_terms(model, x_test)["neg_elbo"]}
    return {"recon_nll_untrained": metrics.deterministic_recon_nll(model, x_test)}


@torch.no_grad()
def evaluate(
    model: VAE,
    objective: Objective,
    context: RunContext,
    reporter: Reporter | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Test-split metrics. ELBO columns only for the VAE family (AE rows leave them empty)."""
    reporter = reporter or Reporter()
    config, dataset, classifier = context.config, context.dataset, context.classifier
    x_train, x_test = context.x_train, context.x_test
    model.eval()
    torch.manual_seed((config.seed if seed is None else seed) + 1)
    test_means = metrics.posterior_means(model, x_test)
    result: dict[str, Any] = {
        "active_units": metrics.active_units(test_means),
        "probe_accuracy": float("nan"),
    }
    if objective.variational:
        terms = metrics.elbo_terms(model, x_test)
        label = f"IW-NLL, K={config.iw_samples}, test examples"
        with reporter.progress(label, x_test.shape[0]):
            iw = metrics.iw_nll(model, x_test, config.iw_samples, on_batch=reporter.advance)
        bits = math.prod(dataset.input_shape) * math.log(2)  # nats per example -> bits per value
        result.update(
            neg_elbo=terms["neg_elbo"],
            recon_nll=terms["recon_nll"],
            kl=terms["kl"],
            iw_nll=iw,
            elbo_gap=terms["neg_elbo"] - iw,
            kl_per_dim=terms["kl_per_dim"],
            bpd=iw / bits,
            neg_elbo_bpd=terms["neg_elbo"] / bits,
        )
        codes = metrics.posterior_samples(model, x_test)
    else:
        result["recon_nll"] = metrics.deterministic_recon_nll(model, x_test)
        codes = test_means.to(x_test.device)
    if dataset.has_labels:
        train_means = metrics.posterior_means(model, x_train)
        result["probe_accuracy"] = metrics.probe_accuracy(
            train_means, dataset.y_train, test_means, dataset.y_test
        )
    prior_codes = model.prior.sample(len(x_test)).float()
    result["latent_mmd"] = mmd(codes.cpu(), prior_codes.cpu())

    def decode_mean(z: torch.Tensor) -> torch.Tensor:
        return model.likelihood.mean(model.decode(z))

    result.update(interpolation_smoothness(decode_mean, test_means.to(x_test.device)))
    if classifier is not None:
        network, accuracy = classifier
        result.update(sample_quality(network, x_test, decode_mean(prior_codes)))
        result["classifier_test_accuracy"] = accuracy
    return result


def throughput(
    model: VAE, objective: Objective, context: RunContext, mode: Mode = EAGER
) -> dict[str, Any]:
    """Train/encode/decode throughput and peak memory at the run's timing batch, and at each
    ``--timing-batch-sizes`` batch (the curve and its best training batch size)."""
    config = context.config
    default = context.timing_batch.shape[0]
    curve = list(config.timing_batch_sizes)
    timings = measure_model(
        model,
        objective,
        context.x_train,
        [default, *curve],
        settings=StepSettings.of(config),
        min_run_time=config.timing_min_time,
        mode=mode,
    )
    result: dict[str, Any] = {"timing_batch_size": default}
    if not math.isnan(timings.device_busy):  # measured on CUDA only
        result["train_device_busy"] = timings.device_busy
    if mode.compiled:
        result["compile_seconds"] = timings.compile_seconds
    for phase, figure in timings.figures[default].items():
        result[f"{phase}_samples_per_s"] = figure.timing.samples_per_s
        result[f"{phase}_spread"] = figure.timing.relative_spread
        result[f"{phase}_timed_runs"] = figure.timing.runs
        result[f"{phase}_peak_mb"] = figure.peak_mb
    for size in curve:
        for phase, figure in timings.figures.get(size, {}).items():
            result[f"{phase}_samples_per_s_at_{size}"] = figure.timing.samples_per_s
            result[f"{phase}_peak_mb_at_{size}"] = figure.peak_mb
    if timings.out_of_memory:
        result["timing_out_of_memory"] = ",".join(map(str, timings.out_of_memory))
    if curve:  # among every size timed, the run's own included
        speed = {size: f["train"].timing.samples_per_s for size, f in timings.figures.items()}
        result["best_train_batch_size"] = max(speed, key=speed.get)
    return result
