"""The model family: every objective with every prior trains without NaN; AE rows leave ELBO columns empty."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from vaebench.config import RunConfig
from vaebench.model import ModelSpec, build_model
from vaebench.options import call_factory
from vaebench.plugins.objectives import AutoEncoderObjective, IWAEObjective, VAEObjective
from vaebench.resolve import resolve_config
from vaebench.runner import run
from vaebench.step import StepSettings
from vaebench.train import train

SHAPE = (1, 6, 6)


def data(n=64):
    return torch.rand(n, *SHAPE)


@pytest.mark.parametrize("objective", ["vae", "iwae", "ae", "dae", "sae"])
@pytest.mark.parametrize("prior", ["normal", "mog", "vamp", "flow"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "categorical"])
def test_every_combination_trains_a_few_steps(registry, objective, prior, likelihood):
    torch.manual_seed(0)
    spec = ModelSpec(
        "mlp",
        prior,
        likelihood,
        SHAPE,
        4,
        {"components": 3, "pseudo_inputs": 5},
        {"bins": 8} if likelihood == "categorical" else {},
    )
    x = data()
    model = build_model(registry, spec, kernel_backend="torch", examples=x[:10])
    options = {"beta": 1.0, "kl_warmup": 2, "corruption": 0.3, "sparsity": 0.05, "iwae_samples": 3}
    obj = call_factory(registry.get("model", objective), options=options, flag="-M")
    before = [p.detach().clone() for p in model.parameters()]
    outcome = train(
        model, x, objective=obj, epochs=2, batch_size=16, settings=StepSettings(lr=1e-3), seed=0
    )
    assert outcome.status == "ok" and outcome.steps == 8
    assert all(math.isfinite(e["loss"]) for e in outcome.history)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_vae_objective_warmup_and_beta(registry):
    objective = VAEObjective(beta=4.0, kl_warmup_steps=4)
    assert [objective.kl_weight(s) for s in range(6)] == [1.0, 2.0, 3.0, 4.0, 4.0, 4.0]
    model = build_model(
        registry, ModelSpec("mlp", "normal", "bernoulli", SHAPE, 4), kernel_backend="torch"
    )
    x = data(8)
    torch.manual_seed(1)
    loss, terms = VAEObjective(beta=0.5).loss(model, x, 0)
    torch.testing.assert_close(loss, (terms["recon"] + 0.5 * terms["kl"]).mean())


def test_iwae_objective_is_the_importance_weighted_bound(registry):
    model = build_model(
        registry, ModelSpec("mlp", "normal", "bernoulli", SHAPE, 4), kernel_backend="torch"
    )
    x = data(8)
    torch.manual_seed(2)
    loss, _ = IWAEObjective(iwae_samples=6).loss(model, x, 0)
    torch.manual_seed(2)
    log_w = model.log_importance_weights(x, 6)
    torch.testing.assert_close(loss, -(torch.logsumexp(log_w, 0) - math.log(6)).mean())


def test_autoencoders_are_deterministic_and_denoising_corrupts(registry):
    model = build_model(
        registry, ModelSpec("mlp", "normal", "bernoulli", SHAPE, 4), kernel_backend="torch"
    )
    x = data(8)
    ae = AutoEncoderObjective()
    assert torch.equal(ae.loss(model, x, 0)[0], ae.loss(model, x, 0)[0]), "an AE has no sampling"
    seen = []
    model.encoder.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    AutoEncoderObjective(corruption=0.5).loss(model, torch.ones(4, *SHAPE), 0)
    zeroed = (seen[-1] == 0).float().mean().item()
    assert 0.35 < zeroed < 0.65
    sparse_loss, terms = AutoEncoderObjective(sparsity=2.0).loss(model, x, 0)
    code = model.encode(x)[0]
    torch.testing.assert_close(sparse_loss, (terms["recon"] + 2.0 * code.abs().sum(-1)).mean())


def test_run_with_both_families_follows_the_prior_rule(registry, tmp_path):
    config = resolve_config(
        RunConfig(
            plugins=["mlp"],
            models=["ae", "vae"],
            priors=["normal", "mog"],
            epochs=2,
            dataset="synthetic",
            dataset_options={"n_train": 96, "n_test": 40},
            iw_samples=4,
            timing_min_time=0.01,
            out=str(tmp_path),
        ),
        registry,
    )
    run(config, registry)
    frame = pd.read_csv(tmp_path / "results.csv")
    assert list(zip(frame["model"], frame["prior"], strict=True)) == [
        ("ae", "normal"),
        ("vae", "normal"),
        ("vae", "mog"),
    ]
    ae = frame[frame["model"] == "ae"].iloc[0]
    for column in ("neg_elbo", "kl", "iw_nll", "elbo_gap"):
        assert math.isnan(ae[column]), f"AE rows leave {column} empty, not zero"
    assert ae["recon_nll"] > 0 and ae["family"] == "ae"
    for column in (
        "sample_fd",
        "sample_confidence",
        "latent_mmd",
        "interp_path_ratio",
        "interp_max_jump",
    ):
        assert frame[column].notna().all(), column
    assert (frame["status"] == "ok").all()


def test_a_tasks_suggested_objective_options_merge_with_the_users(registry, tmp_path):
    """static-mnist suggests -M kl_warmup=100: the user's -M keys join it, an objective that
    does not declare it drops it, and a key the user gives that no objective takes stops."""
    from vaebench.errors import ConfigError
    from vaebench.resolve import resolve_config

    def resolved(**settings):
        config = RunConfig(task="static-mnist", data_root=str(tmp_path), **settings)
        return resolve_config(config, registry).model_options

    assert resolved() == {"kl_warmup": 100}
    assert resolved(model_options={"beta": 2.0}, given=["model_options"]) == {
        "kl_warmup": 100,
        "beta": 2.0,
    }
    given = {"model_options": {"kl_warmup": 5}, "given": ["model_options"]}
    assert resolved(**given) == {"kl_warmup": 5}
    assert resolved(models=["ae"]) == {}
    with pytest.raises(ConfigError, match="-M kl_warmup: not an option of model 'ae'"):
        resolved(models=["ae"], **given)


def test_familiar_flags_and_sweep_keys_are_aliases_of_model_options(registry, tmp_path):
    import argparse

    from vaebench.config import add_run_flags, from_args
    from vaebench.sweep import expand, load_sweep

    parser = argparse.ArgumentParser()
    add_run_flags(parser)
    args = parser.parse_args(["--beta", "0.5", "-M", "kl_warmup=3", "--iwae-samples", "7"])
    config = from_args(args)
    assert config.model_options == {"kl_warmup": 3, "beta": 0.5, "iwae_samples": 7}
    assert "model_options" in config.given
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        '[fixed]\nepochs = 1\nmodel = "vae,iwae"\nkl_warmup = 2\nmodel_options = { iwae_samples = 3 }\n'
        "[axes]\nbeta = [0.5, 2.0]\n"
    )
    cells = expand(load_sweep(sweep), registry)
    assert [c.axes for c in cells] == [{"beta": 0.5}, {"beta": 2.0}]
    assert cells[1].settings["model_options"] == {"kl_warmup": 2, "iwae_samples": 3, "beta": 2.0}
    sweep.write_text("[fixed]\nbeta = 1.0\n[axes]\nbeta = [0.5, 2.0]\n")
    from vaebench.errors import ConfigError

    with pytest.raises(ConfigError, match="'beta' is both fixed and an axis"):
        load_sweep(sweep)
