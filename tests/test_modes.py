"""Precision, compilation, CUDA graphs, batch-size curves and peak memory (``vaebench.modes``).

Each mode's quality is checked against the fp32 eager row of the same run (a stated
tolerance), the memory figure against allocations of known size, and the CUDA-only modes for
their clear error here (they run in the GPU session where one is lent).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch._inductor.config

from vaebench.config import RunConfig
from vaebench.errors import ConfigError
from vaebench.io import load_run
from vaebench.model import ModelSpec, build_model
from vaebench.modes import EAGER, Mode, peak_memory_mb
from vaebench.resolve import check_modes, resolve_config
from vaebench.runner import run
from vaebench.schema import row_label, row_stem
from vaebench.step import StepSettings, build_step
from vaebench.train import train

SMALL = {"n_train": 192, "n_test": 64, "n_valid": 64}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def small_config(tmp_path, **overrides) -> RunConfig:
    settings = dict(
        plugins=["mlp"],
        dataset="synthetic",
        dataset_options=SMALL,
        epochs=3,
        batch_size=32,
        iw_samples=8,
        timing_min_time=0.01,
        out=str(tmp_path / "run"),
    )
    settings.update(overrides)
    return RunConfig(**settings)


def test_peak_memory_counts_what_a_call_allocates_above_what_was_live():
    held = torch.empty(50, 2**20, dtype=torch.uint8)  # live before the call: not counted

    def call():
        a = torch.empty(10, 2**20, dtype=torch.uint8)
        b = torch.empty(5, 2**20, dtype=torch.uint8)
        del a  # 10 freed: live 5
        c = torch.empty(20, 2**20, dtype=torch.uint8)  # live 25: the peak
        del b, c

    assert peak_memory_mb(call, torch.device("cpu")) == pytest.approx(25, abs=0.01)
    assert peak_memory_mb(lambda: None, torch.device("cpu")) == 0
    del held


@pytest.mark.slow
def test_each_precision_trains_without_nan_and_stays_near_fp32_eager(registry, tmp_path):
    """bf16 and fp16 rows train, are finite, and their IW-NLL is within 3% of fp32 eager's;
    the delta columns are exactly the difference of the rows."""
    config = resolve_config(small_config(tmp_path, precision=["bf16", "fp32", "fp16"]), registry)
    rows = run(config, registry)
    assert [(r["precision"], r["compile"]) for r in rows] == [
        ("fp32", "none"),  # the reference runs first whatever the order asked
        ("bf16", "none"),
        ("fp16", "none"),
    ]
    reference = rows[0]
    assert "delta_iw_nll_vs_fp32_eager" not in reference
    for row in rows:
        assert row["status"] == "ok", row["status"]
        for key in ("neg_elbo", "iw_nll", "recon_nll", "kl", "train_samples_per_s"):
            assert math.isfinite(row[key]), (row_label(row), key)
        assert row["neg_elbo"] < row["neg_elbo_untrained"] - 1, "it must learn"
    for row in rows[1:]:
        assert abs(row["iw_nll"] - reference["iw_nll"]) < 0.03 * reference["iw_nll"]
        assert row["delta_iw_nll_vs_fp32_eager"] == row["iw_nll"] - reference["iw_nll"]
        assert row["delta_recon_nll_vs_fp32_eager"] == row["recon_nll"] - reference["recon_nll"]
    labels = {row_label(r) for r in rows}
    assert labels == {"vae:mlp/normal", "vae:mlp/normal [bf16]", "vae:mlp/normal [fp16]"}
    saved = load_run(Path(config.out))
    assert sorted(saved.history) == sorted(labels)
    assert len({r["checkpoint"] for r in rows}) == 3


@pytest.mark.slow
def test_compiled_rows_report_compile_time_apart_and_match_eager(registry, tmp_path):
    config = resolve_config(small_config(tmp_path, compile=["none", "default"], epochs=2), registry)
    # A cold compile: dynamo's in-memory and inductor's on-disk caches (of earlier tests'
    # same-shaped models) would make it take milliseconds.
    torch._dynamo.reset()
    with torch._inductor.config.patch(force_disable_caches=True):
        eager, compiled = run(config, registry)
    assert compiled["compile"] == "default" and compiled["status"] == "ok"
    assert "compile_seconds" not in eager or eager["compile_seconds"] is None
    assert compiled["compile_seconds"] > 0.5  # inductor on the CPU takes seconds
    # Compiling happens before the training clock starts: the loop itself is not slower
    # by the compile time.
    assert compiled["train_seconds"] < compiled["compile_seconds"]
    assert abs(compiled["delta_iw_nll_vs_fp32_eager"]) < 0.03 * eager["iw_nll"]
    assert row_label(compiled) == "vae:mlp/normal [compile=default]"


@pytest.mark.slow
def test_training_does_not_compile_inside_the_clock(registry):
    """Precompiling covers the full and the short last batch, the KL warm-up's changing step
    and the validation batches (eval mode, no gradients): the loop never compiles."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    spec = ModelSpec("mlp", "normal", "bernoulli", (1, 4, 4), 3)
    mode = Mode(compile="default")
    model = mode.prepare(build_model(registry, spec))
    x = torch.rand(40, 1, 4, 4)
    objective = registry.get("model", "vae").factory(kl_warmup=4)
    compiled = []

    def frames() -> int:
        return sum(counters["frames"].values())

    outcome = train(
        model,
        x,
        objective=objective,
        epochs=2,
        batch_size=16,  # 16, 16, then a short batch of 8
        settings=StepSettings(lr=1e-3),
        seed=0,
        x_valid=torch.rand(12, 1, 4, 4),
        mode=mode,
        on_step=lambda: compiled.append(frames()),
    )
    assert outcome.status == "ok" and outcome.compile_seconds > 0
    assert outcome.history[-1]["valid_neg_elbo"] > 0
    assert len(set(compiled)) == 1 and frames() == compiled[0], "compiled inside the clock"


def test_low_precision_covers_the_networks_alone(registry):
    """bf16 runs the decoder in bf16 and hands fp32 on; a layer outside the VAE (the metrics'
    classifier, the MMD's matmuls) stays fp32: no autocast is left around them."""
    spec = ModelSpec("mlp", "normal", "bernoulli", (1, 4, 4), 3)
    model = Mode("bf16").prepare(build_model(registry, spec))
    dtypes = []
    model.decoder.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    x = torch.rand(8, 1, 4, 4)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        params = model.decode(mu)
        outside = torch.nn.Linear(3, 2)(mu)
    assert dtypes == [torch.bfloat16], "the decoder ran in bf16"
    assert mu.dtype == logvar.dtype == params.dtype == outside.dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")


def test_metrics_of_a_bf16_row_run_in_fp32(registry, tmp_path, monkeypatch):
    import vaebench.evaluate as evaluate

    seen = []
    real = evaluate.sample_quality

    def recording(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "sample_quality", recording)
    config = resolve_config(small_config(tmp_path, precision=["bf16"], epochs=1), registry)
    (row,) = run(config, registry)
    assert row["status"] == "ok" and seen == [False]
    # A bf16-rounded confidence would have at most 8 significant bits.
    assert float(torch.tensor(row["sample_confidence"]).bfloat16()) != row["sample_confidence"]


def test_fp16_steps_through_a_gradient_scaler(registry):
    torch.manual_seed(0)
    mode = Mode("fp16")
    model = mode.prepare(
        build_model(registry, ModelSpec("mlp", "normal", "bernoulli", (1, 4, 4), 3))
    )
    objective = registry.get("model", "vae").factory()
    step = build_step(model, objective, StepSettings(lr=1e-2), mode, torch.device("cpu"))
    before = [p.detach().clone() for p in model.parameters()]
    scale = step.scaler.get_scale()
    loss, _ = step(torch.rand(16, 1, 4, 4))
    assert torch.isfinite(loss)
    assert step.scaler.get_scale() in (scale, scale / 2)  # updated (halved on an inf step)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.slow
def test_batch_size_curves_and_memory_that_grows_with_the_batch(registry, tmp_path):
    config = small_config(tmp_path, timing_batch_sizes=[16, 256, 2048], epochs=1)
    (row,) = run(resolve_config(config, registry), registry)
    assert row["status"] == "ok"
    for phase in ("train", "encode", "decode"):
        speeds = [row[f"{phase}_samples_per_s_at_{b}"] for b in (16, 256, 2048)]
        peaks = [row[f"{phase}_peak_mb_at_{b}"] for b in (16, 256, 2048)]
        assert all(s > 0 for s in speeds), phase
        assert 0 < peaks[0] < peaks[1] < peaks[2], (phase, peaks)
    speeds = {b: row[f"train_samples_per_s_at_{b}"] for b in (16, 256, 2048)}
    speeds[row["timing_batch_size"]] = row["train_samples_per_s"]
    assert row["best_train_batch_size"] == max(speeds, key=speeds.get)
    # The run's own timing batch is timed too, with its memory per phase and for evaluation.
    assert row["timing_batch_size"] == 32
    for key in ("train_peak_mb", "encode_peak_mb", "decode_peak_mb", "eval_peak_mb"):
        assert row[key] > 0, key
    written = json.loads((tmp_path / "run" / "results.json").read_text())[0]
    assert written["train_samples_per_s_at_2048"] == pytest.approx(speeds[2048])
    from vaebench.present.report import make_report

    html, md = make_report([tmp_path / "run"], tmp_path / "report.html", registry)
    text = html.read_text()
    assert '<section id="memory">' in text and '<section id="batch-curves">' in text
    assert "batch_curves.png" in md.read_text()
    assert "train samples/s @2048" in text


def test_cuda_only_modes_are_config_errors_on_the_cpu(registry, tmp_path):
    for overrides, message in (
        ({"precision": ["tf32"]}, "tf32 is a CUDA matmul mode"),
        ({"cuda_graphs": True}, "--cuda-graphs captures the training step on a CUDA device"),
    ):
        with pytest.raises(ConfigError, match=message):
            resolve_config(small_config(tmp_path, device="cpu", **overrides), registry)
    with pytest.raises(ConfigError, match="freezes the KL weight"):
        check_modes(RunConfig(cuda_graphs=True, model_options={"kl_warmup": 2}), "cuda")
    if torch.cuda.is_available():
        check_modes(RunConfig(cuda_graphs=True, precision=["bf16", "fp16"]), "cuda")  # allowed
        with pytest.raises(ConfigError, match="captures CUDA graphs itself"):
            check_modes(RunConfig(cuda_graphs=True, compile=["reduce-overhead"]), "cuda")


def test_mode_labels_and_stems_name_only_what_is_not_default():
    row = {"model": "vae", "plugin": "mlp", "prior": "normal", "seed": 1}
    assert row_label(row) == "vae:mlp/normal"  # a row from before modes existed
    row.update(precision="fp32", compile="none")
    assert row_label(row) == "vae:mlp/normal"
    row.update(precision="bf16", compile="max-autotune")
    assert row_label(row, seeded=True) == "vae:mlp/normal [bf16, compile=max-autotune] seed 1"
    assert row_stem(row) == "vae-mlp__normal__bf16__compile_max-autotune"
    assert EAGER.is_reference and not Mode("bf16").is_reference


def test_old_results_read_as_fp32_eager(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    row = {"model": "vae", "plugin": "mlp", "prior": "normal", "status": "ok", "iw_nll": 1.0}
    (folder / "results.json").write_text(json.dumps([row]))
    loaded = load_run(folder).results.iloc[0]
    assert (loaded["precision"], loaded["compile"]) == ("fp32", "none")


@needs_cuda
def test_cuda_graph_training_learns_like_eager(registry, tmp_path):
    base = small_config(tmp_path, device="cuda", epochs=4, out=str(tmp_path / "eager"))
    (eager,) = run(resolve_config(base, registry), registry)
    graphed_config = small_config(tmp_path, device="cuda", epochs=4, cuda_graphs=True,
                                  precision=["fp32", "bf16", "fp16"],
                                  out=str(tmp_path / "graphs"))  # fmt: skip
    for graphed in run(resolve_config(graphed_config, registry), registry):
        assert graphed["status"] == "ok" and graphed["cuda_graphs"] is True
        assert graphed["neg_elbo"] == pytest.approx(eager["neg_elbo"], rel=0.05)
        assert 0 < graphed["train_device_busy"] <= 1.05


def test_a_curve_batch_too_large_for_memory_is_skipped_not_fatal(registry, tmp_path, monkeypatch):
    """A batch this machine cannot hold is skipped at run time (one no device could hold is
    refused before training: vaebench.workload, lifted here to reach the run-time path)."""
    from vaebench import workload

    monkeypatch.setattr(workload, "MOST_BATCH_BYTES", float("inf"))
    config = small_config(tmp_path, timing_batch_sizes=[16, 10**12], epochs=1)
    (row,) = run(resolve_config(config, registry), registry)
    assert row["status"] == "ok" and row["checkpoint"]
    assert row["timing_out_of_memory"] == str(10**12)
    assert load_run(tmp_path / "run").results.iloc[0]["timing_out_of_memory"] == str(10**12)
    assert (
        row["train_samples_per_s_at_16"] > 0 and "train_samples_per_s_at_1000000000000" not in row
    )
    speeds = {16: row["train_samples_per_s_at_16"], 32: row["train_samples_per_s"]}
    assert row["best_train_batch_size"] == max(speeds, key=speeds.get)  # the run's batch too


def test_a_sweep_from_before_the_modes_still_reads_and_aggregates(tmp_path):
    """The committed example sweep has no precision/compile columns: its cells read as
    fp32 eager on resume and re-aggregation, and its report keeps the model names."""
    import shutil

    from tests.helpers import REPO
    from vaebench.io import read_rows
    from vaebench.present.sweep_report import _read

    copy = tmp_path / "sweep"
    shutil.copytree(REPO / "examples" / "sweep-digits", copy)
    for results in copy.glob("cells/*/run/results.json"):
        rows = read_rows(results)
        assert {(r["precision"], r["compile"]) for r in rows} == {("fp32", "none")}
    summary = _read(copy, "summary.csv")
    assert set(summary["precision"]) == {"fp32"} and set(summary["compile"]) == {"none"}
