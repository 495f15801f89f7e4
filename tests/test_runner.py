"""The runner: files and columns, learning, divergence and failures kept per model."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from torch import nn

import vaebench
from tests.helpers import NaNAfter
from vaebench import allocator
from vaebench.config import RunConfig
from vaebench.plugins.mlp import MLPDecoder, MLPEncoder
from vaebench.registry import Owner, Registry
from vaebench.resolve import resolve_config
from vaebench.runner import run
from vaebench.schema import column as declared
from vaebench.schema import ordered_keys

FAST = {
    "dataset": "synthetic",
    "dataset_options": {"n_train": 96, "n_test": 32},
    "iw_samples": 8,
    "timing_min_time": 0.01,
}


class TestPlugins:
    @vaebench.hookimpl
    def vaebench_register_encoders(self, register):
        register("nanny", NaNAfter)
        register("explodes", self.explode)

    @vaebench.hookimpl
    def vaebench_register_decoders(self, register):
        register("nanny", MLPDecoder)
        register("explodes", MLPDecoder)

    @staticmethod
    def explode(input_shape, latent_dim):
        raise RuntimeError("cannot build this encoder")


@pytest.fixture
def test_registry(registry: Registry) -> Registry:
    registry.add_plugin(TestPlugins(), Owner("tests", "0", "tests"))
    return registry


@pytest.mark.slow
def test_run_writes_every_contract_column_and_learns(registry, tmp_path, monkeypatch):
    monkeypatch.setattr(allocator, "_state", None)  # as in a new process: the run sets malloc
    config = resolve_config(
        RunConfig(plugins=["mlp", "conv"], epochs=8, out=str(tmp_path), **FAST), registry
    )
    rows = run(config, registry)
    frame = pd.read_csv(tmp_path / "results.csv")
    undeclared = [key for key in frame.columns if declared(key) is None]
    assert not undeclared, (
        f"columns written by a run but not declared in vaebench.schema: {undeclared}"
    )
    assert list(frame.columns) == ordered_keys(frame.columns)  # declaration order
    assert list(frame["plugin"]) == ["mlp", "conv"] and (frame["status"] == "ok").all()
    for column in (
        "neg_elbo",
        "iw_nll",
        "train_samples_per_s",
        "encode_samples_per_s",
        "decode_samples_per_s",
    ):
        assert frame[column].notna().all() and (frame[column] > 0).all(), column
    # Learned something: far better than the same network untrained.
    assert (frame["neg_elbo"] < frame["neg_elbo_untrained"] - 5).all()
    assert (frame["elbo_gap"] > -0.5).all()
    assert frame["probe_accuracy"].between(0, 1).all()
    per_bit = 8 * 8 * math.log(2)  # synthetic 8x8 images: 64 values per example
    assert (frame["bpd"] - frame["iw_nll"] / per_bit).abs().max() < 1e-9
    assert (frame["neg_elbo_bpd"] - frame["neg_elbo"] / per_bit).abs().max() < 1e-9
    records = json.loads((tmp_path / "results.json").read_text())
    assert [r["plugin"] for r in records] == ["mlp", "conv"]
    assert len(records[0]["kl_per_dim"]) == config.latent_dim
    assert math.isclose(sum(records[0]["kl_per_dim"]), records[0]["kl"], rel_tol=0.05, abs_tol=0.05)
    resolved = json.loads((tmp_path / "config.json").read_text())
    assert resolved["device"] == "cpu" and resolved["plugins"] == ["mlp", "conv"]
    env = json.loads((tmp_path / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and env["device_name"]
    assert env["malloc"] == allocator.keep_freed_memory()  # set by the run, not by this line
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["vae:mlp/normal"]) == 8
    assert rows[0]["status"] == "ok"


def test_divergence_and_failure_are_recorded_and_others_still_run(test_registry, tmp_path):
    config = resolve_config(
        RunConfig(plugins=["nanny", "explodes", "mlp"], epochs=2, out=str(tmp_path), **FAST),
        test_registry,
    )
    run(config, test_registry)
    frame = pd.read_csv(tmp_path / "results.csv").set_index("plugin")
    assert frame.loc["nanny", "status"] == "diverged at step 3"
    assert math.isnan(frame.loc["nanny", "neg_elbo"])
    assert frame.loc["explodes", "status"].startswith(
        "failed: RuntimeError: cannot build this encoder"
    )
    assert frame.loc["mlp", "status"] == "ok" and frame.loc["mlp", "neg_elbo"] > 0
    trace = (tmp_path / "errors" / "vae-explodes__normal.txt").read_text()
    assert trace.startswith("Traceback") and "cannot build this encoder" in trace
    assert sorted(p.name for p in (tmp_path / "errors").iterdir()) == ["vae-explodes__normal.txt"]


def test_interrupted_run_keeps_finished_models(registry, tmp_path, monkeypatch):
    import vaebench.runner as runner

    config = resolve_config(
        RunConfig(plugins=["mlp", "conv"], epochs=1, out=str(tmp_path), **FAST), registry
    )
    real_train = runner.train

    def train_then_interrupt(model, *args, **kwargs):
        if isinstance(model.encoder, registry.get("encoder", "conv").factory):
            raise KeyboardInterrupt
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(runner, "train", train_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(config, registry)
    frame = pd.read_csv(tmp_path / "results.csv")
    assert list(frame["plugin"]) == ["mlp"] and frame.loc[0, "status"] == "ok"
    assert not list(tmp_path.glob(".*.tmp")), "no temporary files left behind"


class WrongShapes:
    """An encoder with one latent too many, and a decoder of the wrong output shape."""

    @vaebench.hookimpl
    def vaebench_register_encoders(self, register):
        register("skewed", lambda shape, latent: MLPEncoder(shape, latent + 1))
        register("flat", MLPEncoder)

    @vaebench.hookimpl
    def vaebench_register_decoders(self, register):
        register("skewed", MLPDecoder)
        register("flat", lambda shape, latent: nn.Linear(latent, 3))


def test_plugins_returning_wrong_shapes_fail_with_a_clear_status(registry, tmp_path):
    registry.add_plugin(WrongShapes(), Owner("tests", "0", "wrong"))
    config = resolve_config(
        RunConfig(plugins=["skewed", "flat", "mlp"], epochs=1, out=str(tmp_path), **FAST), registry
    )
    run(config, registry)
    frame = pd.read_csv(tmp_path / "results.csv").set_index("plugin")
    assert "encoder returned mu" in frame.loc["skewed", "status"]
    assert "decoder returned shape (" in frame.loc["flat", "status"]
    assert frame.loc["mlp", "status"] == "ok"
