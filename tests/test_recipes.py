"""Recipes: each literature figure of a task carries every setting that produced it, checked
here against the values its source gives, applied under the user's flags, and run end to end
on small files in the published format."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from tests.helpers import run_cli, write_amat
from vaebench.config import RunConfig
from vaebench.errors import ConfigError
from vaebench.registry import load_registry
from vaebench.tasks import get_task

REGISTRY = load_registry(entry_points=False)
TASK = get_task(REGISTRY, "static-mnist")
PYTHAE_MILESTONES = [200, 350, 500, 750, 1000]  # vae.py / vamp.py, MultiStepLR

# The sources' values, written out by hand from the code (see docs/recipes.md).
SOURCES = {
    "pythae-vae": {
        "arch_options": {"hidden": 400, "activation": "relu"},
        "latent_dim": 40, "optimizer": "adam", "lr": 1e-4, "batch_size": 100, "epochs": 500,
        "iw_samples": 200, "lr_schedule": "multistep", "milestones": PYTHAE_MILESTONES,
        "gamma": 10 ** (-1 / 5), "models": ["vae"], "priors": ["normal"],
    },
    "pythae-vamp": {
        "arch_options": {"hidden": [300, 300], "gated": True, "activation": "none",
                         "init": "he", "logvar_min": -6.0, "logvar_max": 2.0},
        "latent_dim": 40, "optimizer": "rmsprop", "lr": 1e-4, "batch_size": 100,
        "epochs": 2000, "iw_samples": 5000, "lr_schedule": "multistep",
        "milestones": PYTHAE_MILESTONES, "gamma": 10 ** (-1 / 5), "models": ["vae"],
        "priors": ["vamp"], "kl_warmup": 100, "pseudo_inputs": 500,
    },
    **{
        name: {
            "arch_options": {"hidden": [200, 200], "activation": "tanh", "init": "glorot"},
            "latent_dim": 50, "optimizer": "adam", "betas": [0.99, 0.999], "eps": 1e-4,
            "lr": 1e-3, "batch_size": 20, "epochs": sum(3**i for i in range(8)),
            "iw_samples": 5000, "lr_schedule": "multistep",
            # stage i (3^i epochs) ends at epoch sum_{j<=i} 3^j; the rate drops after it
            "milestones": [sum(3**j for j in range(i + 1)) for i in range(7)],
            "gamma": 10 ** (-1 / 7), "models": [model],
        }
        for name, model in (("iwae-vae-k1", "vae"), ("iwae-k5", "iwae"), ("iwae-k50", "iwae"))
    },
}  # fmt: skip


def _applied(recipe: str, **flags) -> RunConfig:
    """The config a run would have, resolved as the CLI resolves it (no data is read)."""
    from vaebench.resolve import resolve_config

    config = RunConfig(
        task="static-mnist", recipe=recipe, data_root="/nowhere", out="/nowhere/out", **flags,
        given=sorted(["task", "recipe", "data_root", *flags]),
    )  # fmt: skip
    return resolve_config(config, REGISTRY)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_a_recipe_sets_what_its_source_gives(name):
    want, config = SOURCES[name], _applied(name)
    for key in ("latent_dim", "optimizer", "batch_size", "epochs", "iw_samples", "lr_schedule"):
        assert getattr(config, key) == want[key], key
    assert config.models == want["models"]
    assert math.isclose(config.lr, want["lr"])
    for key, value in want["arch_options"].items():
        assert config.arch_options[key] == value, key
    assert config.schedule_options["milestones"] == want["milestones"]
    assert math.isclose(config.schedule_options["gamma"], want["gamma"], rel_tol=1e-12)
    assert config.patience == 0  # the sources keep the best epoch but never stop early
    if "betas" in want:
        assert config.optimizer_options == {"betas": want["betas"], "eps": want["eps"]}
    assert config.model_options.get("kl_warmup", 0) == want.get("kl_warmup", 0)
    if "pseudo_inputs" in want:
        assert config.priors == want["priors"]
        assert config.prior_options == {"pseudo_inputs": want["pseudo_inputs"]}
    assert TASK.recipes[name].source and TASK.recipes[name].unconfirmed


def test_the_iwae_schedule_is_the_papers():
    """lr 1e-3 * 10^(-i/7) during stage i of 3^i epochs: the multistep milestones and gamma
    reproduce it epoch by epoch (closed form against the scheduler)."""
    import torch

    config = _applied("iwae-k50")
    p = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([p], lr=config.lr)
    schedule = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, config.schedule_options["milestones"], config.schedule_options["gamma"]
    )
    stage_of, epoch = [], 0
    for i in range(8):
        stage_of += [i] * 3**i
    for epoch in range(1, config.epochs + 1):
        expected = 1e-3 * 10 ** (-stage_of[epoch - 1] / 7)
        assert math.isclose(optimizer.param_groups[0]["lr"], expected, rel_tol=1e-9), epoch
        optimizer.step()
        schedule.step()
    assert epoch == 3280


def test_flags_override_a_recipe_and_the_row_says_which():
    config = _applied("pythae-vae", lr=3e-4, latent_dim=40)
    assert config.lr == 3e-4
    assert config.recipe_run == "pythae-vae (modified: lr)"  # latent_dim: same value
    assert config.protocol == "static-mnist@1 (modified: epochs, iw_samples, patience)"
    untouched = _applied("pythae-vae")
    assert untouched.recipe_run == "pythae-vae"


def test_an_option_flag_merges_into_the_recipes_options_key_by_key():
    config = _applied("pythae-vamp", arch_options={"hidden": [64, 64]})
    assert config.arch_options["hidden"] == [64, 64]
    assert config.arch_options["gated"] is True  # the recipe's other keys stay
    assert config.recipe_run == "pythae-vamp (modified: arch_options)"


def test_a_recipe_overrides_the_tasks_suggestions():
    """The task suggests a 100-epoch KL warm-up; pythae's VAE has none."""
    assert TASK.defaults["kl_warmup" if "kl_warmup" in TASK.defaults else "model_options"]
    assert _applied("pythae-vae").model_options["kl_warmup"] == 0


def test_an_unknown_recipe_names_those_there_are():
    with pytest.raises(ConfigError, match="has no such recipe; it has pythae-vae, pythae-vamp"):
        _applied("nosuch")


def test_a_recipe_without_a_task_is_refused_in_one_line():
    result = run_cli("run", "--recipe", "pythae-vae")
    assert result.returncode == 2
    assert "add --task NAME" in result.stderr and result.stderr.count("\n") == 1


def test_a_task_file_whose_reference_names_a_missing_recipe_is_refused(tmp_path):
    from pathlib import Path

    from vaebench.tasks import task_from_file

    text = Path(TASK.source).read_text()
    path = tmp_path / "t.toml"
    path.write_text(text.replace('recipe = "iwae-k5"', 'recipe = "iwae-k6"'))
    with pytest.raises(ConfigError, match="names recipe 'iwae-k6', not defined"):
        task_from_file(path)
    bad = text.replace("[recipes.iwae-k50.settings]", "[recipes.iwae-k50.settings]\nepoch = 3")
    path.write_text(bad)
    with pytest.raises(
        ConfigError, match=r"\[recipes.iwae-k50\] settings: unknown setting 'epoch'"
    ):
        task_from_file(path)


def test_vaebench_tasks_lists_the_recipes():
    result = run_cli("tasks")
    assert result.returncode == 0
    for name in SOURCES:
        assert f"--recipe {name}" in result.stdout
    assert "reproduced: 89.78" in result.stdout


@pytest.fixture(scope="module")
def static_mnist_root(tmp_path_factory):
    """The three published file names, in the published format, with a few images each."""
    root = tmp_path_factory.mktemp("data") / "binarized_mnist"
    root.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("valid", 20), ("test", 20)):
        write_amat(root / f"binarized_mnist_{split}.amat", rng.random((n, 784)) < 0.13)
    return root.parent


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_recipe_runs_end_to_end(tmp_path, static_mnist_root, name):
    out = tmp_path / "run"
    small = ("--epochs", "2", "--iw-samples", "3", "--timing-min-time", "0.01")
    if name == "pythae-vamp":
        small += ("-P", "pseudo_inputs=10")
    result = run_cli(
        "run", "--task", "static-mnist", "--recipe", name, "--data-root", str(static_mnist_root),
        *small, "--out", str(out), "-q",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (row,) = json.loads((out / "results.json").read_text())
    assert row["status"] == "ok" and math.isfinite(row["iw_nll"])
    assert row["recipe_run"].startswith(name + " (modified: epochs, iw_samples")
    history = next(iter(json.loads((out / "history.json").read_text()).values()))
    assert history[0]["lr"] == pytest.approx(SOURCES[name]["lr"])
    if name.startswith("iwae"):  # the first stage is one epoch: the rate drops after it
        assert history[1]["lr"] == pytest.approx(1e-3 * 10 ** (-1 / 7))
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] == name


def test_the_literature_table_puts_literature_reproduction_and_this_run_side_by_side():
    from vaebench.tasks import literature_rows

    row = {"status": "ok", "iw_nll": 90.0, "recipe_run": "pythae-vae", "model": "vae",
           "plugin": "mlp", "prior": "normal", "precision": "fp32", "compile": "none",
           "latent_dim": 40, "iw_samples": 200, "protocol": "static-mnist@1"}  # fmt: skip
    lines = literature_rows(list(TASK.references), [row])
    mine = [line for line in lines if "pythae-vae" in line[-1] or line[0] == "reproduction"]
    literature = next(x for x in lines if x[0] == "literature" and "[recipe pythae-vae]" in x[-1])
    reproduction = next(x for x in lines if x[0] == "reproduction" and x[5] == "89.78")
    assert literature[6] == "+0.10" and reproduction[6] == "+0.22"  # 90 - 89.9, 90 - 89.78
    assert any(line[0] == "this run" for line in mine)
    other = next(x for x in lines if x[0] == "literature" and "[recipe iwae-k5]" in x[-1])
    assert other[6] == ""  # this run did not run that recipe: no difference shown


def test_a_reference_reproduction_needs_its_source():
    from vaebench.tasks import Reference

    base = {"model": "vae", "architecture": "a", "metric": "iw_nll", "value": 1.0, "source": "s"}
    with pytest.raises(ValueError, match="reproduction needs its reproduction_source"):
        Reference(**base, reproduction=1.0)
    assert dataclasses.replace(Reference(**base), note="x").reproduction is None
