"""The runner's small parts, each against a hand-made answer: the one-line error text, which
kernel backends are timed, the data digests, what a mode costs in nats, the objective's
options, the out-of-memory messages, and what the trackers are told about a model.
"""

from __future__ import annotations

import hashlib
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vaebench import loading, runner, timing
from vaebench.config import RunConfig
from vaebench.data import Dataset
from vaebench.errors import ConfigError, DataError
from vaebench.modes import Mode
from vaebench.present.report import Reporting
from vaebench.resolve import resolve_config


def test_one_line_joins_lines_and_caps_the_length():
    assert runner._one_line(ValueError("first\nsecond")) == "ValueError: first second"
    text = runner._one_line(RuntimeError("x" * 500))
    assert len(text) == 300 and text.startswith("RuntimeError: xxx")


def test_timed_backends(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert runner.timed_backends("triton", cpu) == ["triton", "torch"]
    assert runner.timed_backends("torch", cpu) == ["torch"]
    monkeypatch.setattr(runner, "triton_available", lambda: True)
    assert runner.timed_backends("torch", cuda) == ["torch", "compile", "triton"]
    assert runner.timed_backends("triton", cuda) == ["triton", "torch", "compile"]
    monkeypatch.setattr(runner, "triton_available", lambda: False)
    assert runner.timed_backends("compile", cuda) == ["compile", "torch"]


def test_digests_name_each_file_by_its_bytes(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "sub" / "b.npz"
    b.parent.mkdir()
    a.write_bytes(b"alpha")
    b.write_bytes(b"beta")
    x = torch.rand(4, 2)
    digests = loading.data_digests(Dataset("d", x, x, files=(str(b), str(a))))
    assert digests == {
        str(b): hashlib.sha256(b"beta").hexdigest(),
        str(a): hashlib.sha256(b"alpha").hexdigest(),
    }
    text = f"a.npz {digests[str(a)]}\nb.npz {digests[str(b)]}\n"  # sorted by path, named
    assert loading.combined_digest(digests) == hashlib.sha256(text.encode()).hexdigest()
    assert loading.combined_digest({}) == ""


def test_quality_deltas_are_this_row_minus_its_reference():
    row = {"iw_nll": 90.5, "recon_nll": 60.25, "kl": 3.0}
    reference = {"iw_nll": 90.0, "recon_nll": 61.0, "kl": 2.0}
    assert runner.quality_deltas(row, reference) == {
        "delta_iw_nll_vs_fp32_eager": 0.5,
        "delta_recon_nll_vs_fp32_eager": -0.75,
    }
    assert runner.quality_deltas({"iw_nll": 90.5, "recon_nll": None}, reference) == {
        "delta_iw_nll_vs_fp32_eager": 0.5
    }
    assert runner.quality_deltas(row, {"iw_nll": None}) == {}


class Context:
    """What ``objective`` reads of a run context."""

    objective = runner.RunContext.objective

    def __init__(self, config: RunConfig, steps: int, registry) -> None:
        self.config, self.steps_per_epoch, self.registry = config, steps, registry


def test_objective_options_reach_each_objective_and_warmup_epochs_become_steps(registry):
    options = {"beta": 0.5, "kl_warmup": 3, "corruption": 0.2, "sparsity": 0.01, "iwae_samples": 7}
    context = Context(RunConfig(model_options=options), 11, registry)
    vae = context.objective("vae")
    assert (vae.beta, vae.warmup) == (0.5, 33)
    assert context.objective("iwae").samples == 7
    assert context.objective("dae").corruption == 0.2
    assert context.objective("sae").sparsity == 0.01
    assert context.objective("ae").corruption == 0 and context.objective("ae").sparsity == 0
    defaults = Context(RunConfig(), 11, registry)
    assert (defaults.objective("vae").beta, defaults.objective("vae").warmup) == (1.0, 0)
    assert defaults.objective("dae").corruption == 0.3 and defaults.objective("iwae").samples == 5


def test_data_that_does_not_fit_in_memory_is_named(monkeypatch, registry):
    def full(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(loading, "_load_dataset", full)
    with pytest.raises(DataError) as caught:
        loading.load_dataset(RunConfig(dataset="digits"), registry)
    assert str(caught.value) == "digits: the data does not fit in memory"
    config = RunConfig(task="mnist-static", data_root="/data")
    with pytest.raises(DataError) as caught:
        loading.load_dataset(config, registry)
    assert str(caught.value) == "task mnist-static in /data: the data does not fit in memory"


def test_a_dataset_plugin_must_return_a_dataset(registry, monkeypatch):
    monkeypatch.setattr(loading, "call_factory", lambda *a, **k: [1, 2])
    with pytest.raises(DataError) as caught:
        loading.named_dataset(RunConfig(dataset="digits"), registry)
    assert str(caught.value) == "dataset 'digits' returned list, not vaebench.data.Dataset"

    def full(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(loading, "call_factory", full)
    with pytest.raises(DataError) as caught:
        loading.named_dataset(RunConfig(dataset="synthetic", dataset_options={"n": 9}), registry)
    assert str(caught.value) == "dataset 'synthetic' with {'n': 9} does not fit in memory"


def test_model_record_reads_the_row(tmp_path, registry):
    row = {
        "model": "vae",
        "plugin": "mlp",
        "prior": "normal",
        "precision": "fp32",
        "compile": "none",
        "seed": 3,
        "status": "ok",
        "latent_dim": 8,
        "iw_nll": 90.5,
        "neg_elbo": math.nan,
        "kl": 4,
        "checkpoint": "checkpoints/vae-mlp-normal.pt",
    }
    history = [{"epoch": 1, "loss": 2.0}]
    record = runner.model_record(row, history, tmp_path, registry, seeded=True)
    assert record.label == "vae:mlp/normal seed 3" and record.status == "ok"
    assert record.settings["latent_dim"] == 8 and record.settings["plugin"] == "mlp"
    assert record.metrics == {"iw_nll": 90.5, "kl": 4.0}  # finite numbers only
    assert record.history == history
    assert record.checkpoint == tmp_path / "checkpoints/vae-mlp-normal.pt"
    assert record.views is not None
    plain = runner.model_record({**row, "checkpoint": None}, [], tmp_path, registry)
    assert plain.label == "vae:mlp/normal" and plain.checkpoint is None and plain.views is None


def test_a_dataset_factory_that_rejects_its_options_names_the_flag(registry, monkeypatch):
    from types import SimpleNamespace

    def fussy(seed: int = 0, size: int = 1):
        raise ValueError("size must be even")

    component = SimpleNamespace(kind="dataset", name="fussy", factory=fussy)
    monkeypatch.setattr(registry, "get", lambda kind, name: component)
    with pytest.raises(ConfigError) as caught:
        loading.named_dataset(RunConfig(dataset="fussy", dataset_options={"size": 3}), registry)
    assert str(caught.value) == "-D: dataset 'fussy' rejected {'size': 3}: size must be even"


TINY = {
    "dataset": "synthetic",
    "dataset_options": {"n_train": 48, "n_test": 16, "n_valid": 8},
    "epochs": 1,
    "batch_size": 16,
    "latent_dim": 4,
    "iw_samples": 2,
    "timing_min_time": 0.005,
}


def tiny_run(tmp_path, registry, reporter=None, **settings) -> list[dict]:
    config = resolve_config(RunConfig(out=str(tmp_path / "run"), **{**TINY, **settings}), registry)
    return runner.run(config, registry, reporter)


@pytest.mark.slow
def test_a_second_precision_row_carries_its_cost_in_nats(tmp_path, registry):
    fp32, bf16 = tiny_run(tmp_path, registry, precision=["fp32", "bf16"])
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert "delta_iw_nll_vs_fp32_eager" not in fp32 or fp32["delta_iw_nll_vs_fp32_eager"] is None
    for key in ("iw_nll", "recon_nll"):
        assert bf16[f"delta_{key}_vs_fp32_eager"] == bf16[key] - fp32[key]


@pytest.mark.slow
def test_ae_family_rows_use_the_normal_prior_once(tmp_path, registry):
    rows = tiny_run(tmp_path, registry, models=["ae", "vae"], priors=["normal", "mog"])
    assert [(r["model"], r["prior"], r["family"]) for r in rows] == [
        ("ae", "normal", "ae"),
        ("vae", "normal", "vae"),
        ("vae", "mog", "vae"),
    ]


class Spy(runner.Reporter):
    def __init__(self) -> None:
        self.bars: list[tuple[str, int]] = []

    def progress(self, description, total):
        self.bars.append((description, total))
        return super().progress(description, total)


@pytest.mark.slow
def test_the_run_context_and_files(tmp_path, registry, monkeypatch):
    sampled = []
    monkeypatch.setattr(runner, "sample_binary", lambda b: sampled.append(1) or b)
    spy = Spy()
    row = tiny_run(tmp_path, registry, spy, seeds=[0, 1])[0]
    assert sampled == []  # only dynamic binarization samples the training batches
    assert ("training vae:mlp/normal seed 0", 3) in spy.bars  # 48 / 16 steps, the seed named
    assert row["likelihood"] == "bernoulli" and row["sample_confidence"] is not None
    assert row["reparam_kl_torch_samples_per_s"] > 0
    environment = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert environment["data_files"] == {}  # a generated dataset reads no file
    dynamic = tiny_run(tmp_path / "dynamic", registry, binarize="dynamic")
    assert len(sampled) == 3 and dynamic[0]["status"] == "ok"


def test_real_valued_data_gets_a_gaussian_and_files_their_digest(tmp_path, registry):
    path = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.normal(size=(40, 6)), x_test=rng.normal(size=(10, 6)))
    row = tiny_run(tmp_path, registry, dataset=str(path), dataset_options={})[0]
    assert row["likelihood"] == "gaussian" and row["status"] == "ok"
    environment = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert environment["data_files"] == {str(path): hashlib.sha256(path.read_bytes()).hexdigest()}
    assert row["data_sha256"] == loading.combined_digest(environment["data_files"])


def test_data_file_options_reach_the_loader(tmp_path, registry):
    config = RunConfig(dataset=str(tmp_path / "x.npz"), dataset_options={"bogus": 1})
    with pytest.raises(DataError, match=r"^-D bogus: a data file accepts only layout"):
        loading.load_dataset(config, registry)


def test_a_run_too_large_for_memory_is_one_line(tmp_path, registry, monkeypatch):
    def too_big(config, registry):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory:\nyou tried 9 TB")

    monkeypatch.setattr(runner.RunContext, "resolve", too_big)
    with pytest.raises(ConfigError) as caught:
        tiny_run(tmp_path, registry)
    assert str(caught.value) == (
        "the run does not fit in memory (data synthetic, --latent-dim 4, --batch-size 16: "
        "RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried 9 TB); "
        "use smaller sizes"
    )
    assert not (tmp_path / "run").exists()  # nothing written


def test_overwrite_replaces_the_folder_whole(tmp_path, registry):
    tiny_run(tmp_path, registry)
    stale = tmp_path / "run" / "stale.txt"
    stale.write_text("from before")
    tiny_run(tmp_path, registry, overwrite=True)
    assert not stale.exists() and (tmp_path / "run" / "results.json").is_file()


def digits_like() -> Dataset:
    x = torch.rand(20, 1, 4, 4)
    return Dataset("d", x, x[:4])


def test_likelihood_and_prior_options_are_tried_before_training(registry):
    check = runner.check_options
    data = digits_like()
    with pytest.raises(ConfigError, match=r"^-L"):  # auto chose bernoulli: sigma is no option
        check(RunConfig(likelihood_options={"sigma": 0.1}), registry, data, "bernoulli")
    check(
        RunConfig(likelihood="gaussian", likelihood_options={"sigma": 0.1}),
        registry,
        data,
        "gaussian",
    )
    with pytest.raises(ConfigError, match=r"^-L: likelihood 'gaussian' rejected \{'sigma': -1\}"):
        check(
            RunConfig(likelihood="gaussian", likelihood_options={"sigma": -1}),
            registry,
            data,
            "gaussian",
        )
    with pytest.raises(ConfigError, match=r"^-P: prior 'mog' rejected \{'components': 0\}"):
        check(
            RunConfig(priors=["mog"], prior_options={"components": 0}), registry, data, "bernoulli"
        )
    # a VampPrior is built from the encoder and the examples it is handed
    check(
        RunConfig(priors=["vamp"], prior_options={"pseudo_inputs": 3}), registry, data, "bernoulli"
    )


def test_throughput_columns_from_the_timings(monkeypatch):

    from vaebench.timing import ModelTimings, PhaseFigure, Timing

    def figures(size, seconds):
        return {
            p: PhaseFigure(Timing(seconds, 0, 0, 3, size), 2.5)
            for p in ("train", "encode", "decode")
        }

    timings = ModelTimings(
        figures={16: figures(16, 0.01), 64: figures(64, 0.02)}, out_of_memory=[512, 1024]
    )
    monkeypatch.setattr(timing, "measure_model", lambda *a, **k: timings)
    result = timing.throughput(None, None, None, batch=16, curve=[64, 512, 1024], min_run_time=1)
    assert result["timing_batch_size"] == 16 and result["train_samples_per_s"] == 1600
    assert result["train_peak_mb"] == 2.5 and result["decode_timed_runs"] == 3
    assert result["train_samples_per_s_at_64"] == 3200 and result["encode_peak_mb_at_64"] == 2.5
    assert result["timing_out_of_memory"] == "512,1024"
    assert result["best_train_batch_size"] == 64
    assert "train_device_busy" not in result and "compile_seconds" not in result


def test_a_model_is_built_trained_evaluated_and_timed_with_the_runs_settings(
    tmp_path, registry, monkeypatch
):
    """What run_one hands each stage, recorded by spies around the real functions, and the
    row it fills from their results. A compiled mode runs eagerly here (compiling on 2 CPU
    cores takes minutes); its compile seconds are planted: 1.5 s in training, 0.25 s in timing."""
    seen: dict[str, dict] = {}
    monkeypatch.setattr(Mode, "prepare", lambda mode, model: model)

    def spy(name, real, **planted):
        def wrapper(*args, **kwargs):
            seen[name] = {"args": args, **kwargs}
            if "mode" in kwargs:
                kwargs["mode"] = runner.EAGER
            result = real(*args, **kwargs)
            for key, value in planted.items():
                setattr(result, key, value)
            seen[name]["result"] = result
            return result

        monkeypatch.setattr(timing if name == "measure_model" else runner, name, wrapper)

    spy("build_model", runner.build_model)
    spy("train", runner.train, compile_seconds=1.5)
    spy("evaluate", runner.evaluate)
    spy("measure_model", timing.measure_model, compile_seconds=0.25)
    spy("measure_reparam_kl", runner.measure_reparam_kl)
    reporter = Spy()
    settings = {"epochs": 2, "patience": 1, "seeds": [5], "compile": ["default"], "kernel": "torch"}
    settings |= {"priors": ["mog"], "prior_options": {"components": 3}}
    settings |= {"likelihood": "gaussian", "likelihood_options": {"sigma": 0.5}}
    (row,) = tiny_run(tmp_path, registry, reporter, **settings)
    assert row["status"] == "ok" and row["seed"] == 5 and row["compile"] == "default"
    assert row["cuda_graphs"] is False and row["precision"] == "fp32"
    assert seen["measure_reparam_kl"]["rows"] == 16  # the timing batch: --batch-size rows
    environment = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert environment["device"] == "cpu"
    spec = seen["build_model"]["args"][1]
    assert (spec.prior, spec.prior_options, spec.latent_dim) == ("mog", {"components": 3}, 4)
    assert (spec.likelihood, spec.likelihood_options) == ("gaussian", {"sigma": 0.5})
    assert seen["build_model"]["kernel_backend"] == "torch"
    examples = seen["build_model"]["examples"]
    assert examples.shape == (48, 1, 8, 8)  # every training example: fewer than the cap
    fit = seen["train"]
    assert (fit["patience"], fit["seed"], fit["epochs"], fit["mode"].compile) == (
        1,
        5,
        2,
        "default",
    )
    assert fit["on_step"] == reporter.advance and fit["x_valid"].shape[0] == 8
    assert seen["evaluate"]["reporter"] is reporter and seen["evaluate"]["seed"] == 5
    assert seen["evaluate"]["iw_samples"] == 2
    assert seen["measure_model"]["mode"].compile == "default"
    assert row["compile_seconds"] == 1.75  # training's and timing's, both outside the figures
    assert row["train_seconds"] > 0 and row["epochs_run"] in (1, 2)
    (history,) = json.loads((tmp_path / "run" / "history.json").read_text()).values()
    assert row["valid_neg_elbo"] == min(epoch["valid_neg_elbo"] for epoch in history)
    assert row["best_epoch"] == 1 + [e["valid_neg_elbo"] for e in history].index(
        row["valid_neg_elbo"]
    )
    checkpoint = tmp_path / "run" / row["checkpoint"]
    assert checkpoint.parent == tmp_path / "run" / "checkpoints" and checkpoint.is_file()
    model = seen["build_model"]["result"]
    assert row["parameters"] == sum(p.numel() for p in model.parameters()) > 0
    for phase in ("train", "encode", "decode", "reparam_kl_torch"):
        assert math.isfinite(row[f"{phase}_spread"]) and row[f"{phase}_spread"] >= 0


class RecordingTrackers:
    """Trackers that note every call: what a tracker plugin is told, and in which order."""

    def __init__(self) -> None:
        self.built, self.calls, self.active = {}, [], {"recording": object()}

    def start(self, name, settings):
        self.calls.append(("start", name, settings["seeds"]))

    def log_model(self, record):
        self.calls.append(("model", record.label, record.stem, record.checkpoint.is_file()))

    def warn(self, message):
        self.calls.append(("warn", message))

    def finish(self, paths):
        self.calls.append(("finish", [p.name for p in paths if p.is_file()]))


def test_trackers_are_built_with_the_uri_and_told_the_run_the_models_and_its_files(
    tmp_path, registry, monkeypatch
):
    trackers = RecordingTrackers()

    def build(names, registry, *, out, uri):
        trackers.built.update(names=names, out=out, uri=uri)
        return trackers

    monkeypatch.setattr(runner.Trackers, "build", build)
    uri = str(tmp_path / "store")
    tiny_run(tmp_path, registry, Reporting(), seeds=[0, 1], track=["mlflow"], tracking_uri=uri)
    assert trackers.built == {"names": ["mlflow"], "out": tmp_path / "run", "uri": uri}
    labels = [call[1:] for call in trackers.calls if call[0] == "model"]
    assert labels == [
        ("vae:mlp/normal seed 0", "vae-mlp__normal__seed0", True),
        ("vae:mlp/normal seed 1", "vae-mlp__normal__seed1", True),
    ]
    assert trackers.calls[0] == ("start", "run", [0, 1])
    assert trackers.calls[-1] == (
        "finish",
        ["results.csv", "results.json", "config.json", "environment.json", "report.html"],
    )
    assert not [call for call in trackers.calls if call[0] == "warn"]  # the report was made
    report = (tmp_path / "run" / "report.html").read_text()
    assert "cannot redraw" not in report  # its pictures too: the run's registry redraws them


def test_the_runner_draws_no_report_unless_its_caller_asks(tmp_path, registry):
    trackers = RecordingTrackers()
    (tmp_path / "results.csv").write_text("x\n1\n")
    runner.finish_trackers(trackers, tmp_path, registry, runner.Reporter())
    assert trackers.calls == [("finish", ["results.csv"])]
    assert not (tmp_path / "report.html").exists()


def test_a_report_that_fails_is_a_warning_to_the_trackers_not_a_failed_run(
    tmp_path, registry, monkeypatch
):
    import vaebench.present.report as report

    def broken(*args):
        raise ValueError("no fonts\nat all")

    monkeypatch.setattr(report, "make_report", broken)
    trackers = RecordingTrackers()
    (tmp_path / "results.csv").write_text("x\n1\n")
    runner.finish_trackers(trackers, tmp_path, registry, Reporting())
    assert trackers.calls == [
        ("warn", "vaebench: warning: no report for the trackers (ValueError: no fonts at all)"),
        ("finish", ["results.csv"]),
    ]


@pytest.mark.slow
def test_a_task_run_reads_the_tasks_files_and_writes_its_definition(
    static_mnist_root, tmp_path, registry
):
    from vaebench.tasks import get_task

    settings = {k: v for k, v in TINY.items() if k not in ("dataset", "dataset_options")}
    settings |= {"task": "static-mnist", "data_root": str(static_mnist_root), "patience": 0}
    config = resolve_config(RunConfig(out=str(tmp_path / "run"), **settings), registry)
    (row,) = runner.run(config, registry)
    assert (row["n_train"], row["n_valid"], row["n_test"]) == (60, 20, 30)
    written = json.loads((tmp_path / "run" / "task.json").read_text())
    assert written == json.loads(json.dumps(get_task(registry, "static-mnist").to_dict()))


def test_the_options_check_builds_each_component_as_the_run_will(registry, monkeypatch):
    """check_options builds the likelihood with the data's shape and each prior with the
    latent size, the first encoder and the first training examples, as a model would get."""
    data = digits_like()
    check = runner.check_options
    # auto chose a Gaussian: its own options are accepted, by name
    check(RunConfig(likelihood_options={"sigma": 0.1}), registry, data, "gaussian")
    # a likelihood that reads the shape it is built for
    config = RunConfig(likelihood="dlogistic", likelihood_options={"mixtures": 2})
    check(config, registry, data, "dlogistic")
    seen = {}

    def recorder(latent_dim, *, input_shape, encoder, examples, scale=1.0):
        seen.update(latent=latent_dim, shape=input_shape, encoder=encoder, examples=examples)
        return object()

    real_get = registry.get
    component = SimpleNamespace(kind="prior", name="recorder", factory=recorder)
    monkeypatch.setattr(
        registry,
        "get",
        lambda kind, name: component if name == "recorder" else real_get(kind, name),
    )
    config = RunConfig(priors=["recorder"], prior_options={"scale": 2.0}, latent_dim=3)
    check(config, registry, data, "bernoulli")
    assert seen["latent"] == 3 and seen["shape"] == (1, 4, 4)
    assert torch.equal(seen["examples"], data.x_train[:8])
    mu, logvar = seen["encoder"](data.x_train[:2])  # the run's first encoder, for this data
    assert mu.shape == logvar.shape == (2, 3)


def test_throughput_of_a_compiled_cuda_row_and_a_best_batch_that_is_not_the_largest(monkeypatch):
    from vaebench.timing import ModelTimings, PhaseFigure, Timing

    def figures(size, seconds):
        timing = Timing(seconds, seconds * 0.9, seconds * 1.2, 5, size)  # a 30 % spread
        return {p: PhaseFigure(timing, 1.0) for p in ("train", "encode", "decode")}

    timings = ModelTimings(
        figures={16: figures(16, 0.001), 64: figures(64, 0.02)},  # 16000/s beats 3200/s
        compile_seconds=0.5,
        device_busy=0.8,
    )
    seen = {}
    monkeypatch.setattr(timing, "measure_model", lambda *a, **k: seen.update(k) or timings)
    compiled = Mode(compile="default")
    result = timing.throughput(
        None, None, None, batch=16, curve=[64], min_run_time=1, mode=compiled
    )
    assert seen["mode"] is compiled
    assert result["train_device_busy"] == 0.8 and result["compile_seconds"] == 0.5
    assert result["train_spread"] == pytest.approx(0.3) and result["decode_timed_runs"] == 5
    assert result["best_train_batch_size"] == 16


def test_a_named_dataset_is_generated_from_the_runs_seed(registry):
    def first(seed):
        config = RunConfig(**{**TINY, "seed": seed})
        return loading.named_dataset(config, registry).x_train[:4]

    assert torch.equal(first(3), first(3)) and not torch.equal(first(3), first(0))


def test_an_out_of_memory_message_is_cut_at_120_characters(tmp_path, registry, monkeypatch):
    text = "DefaultCPUAllocator: can't allocate memory: " + "9" * 200

    def too_big(config, registry):
        raise RuntimeError(text)

    monkeypatch.setattr(runner.RunContext, "resolve", too_big)
    with pytest.raises(ConfigError) as caught:
        tiny_run(tmp_path, registry)
    assert f"16: {f'RuntimeError: {text}'[:120]}); use smaller sizes" in str(caught.value)


def test_a_model_that_fails_keeps_its_traceback_and_leaves_no_history(
    tmp_path, registry, monkeypatch
):
    real = runner.build_model

    def broken_for_conv(registry, spec, **kwargs):
        if spec.plugin == "conv":
            raise RuntimeError("conv is broken\nhere")
        return real(registry, spec, **kwargs)

    monkeypatch.setattr(runner, "build_model", broken_for_conv)
    rows = tiny_run(tmp_path, registry, plugins=["mlp", "conv"], seeds=[0, 1], epochs=1)
    assert [r["status"] for r in rows] == ["ok", "failed: RuntimeError: conv is broken here"] * 2
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "errors").iterdir()) == [
        "vae-conv__normal__seed0.txt",
        "vae-conv__normal__seed1.txt",
    ]
    assert "conv is broken" in (run / "errors" / "vae-conv__normal__seed1.txt").read_text()
    history = json.loads((run / "history.json").read_text())
    assert list(history) == ["vae:mlp/normal seed 0", "vae:mlp/normal seed 1"]
