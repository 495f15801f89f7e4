"""Optimizers and learning-rate schedules as plugins: AdamNormGrad against a float64 hand
computation, every built-in optimizer built from a config with its options, the settings'
checks, each built-in schedule's rates through ``train()`` against closed forms, and the
command line end to end (history, one-line errors, contradiction warnings).
"""

from __future__ import annotations

import functools
import io
import json
import math

import numpy as np
import pytest
import torch

from tests.helpers import FAST_CLI, Recorded, run_cli, tiny_vae
from vaebench.config import RunConfig, parse_pairs
from vaebench.errors import ConfigError
from vaebench.modes import EAGER
from vaebench.plugins.optimizers import AdamNormGrad
from vaebench.step import StepSettings, build_optimizer, build_schedule
from vaebench.train import train

# -- AdamNormGrad against a hand computation ---------------------------------------------------


def adam_normgrad_reference(
    params, grads, *, lr, betas, eps, weight_decay, norm_eps, decay_first=False
):
    """Float64 by hand: per tensor g / (||g||_2 + norm_eps), plus weight_decay * p, then
    Adam with bias correction: p -= lr * m_hat / (sqrt(v_hat) + eps). ``decay_first``: the
    decay added before normalizing instead (a wrong order, to show the test tells them apart)."""
    b1, b2 = betas
    params = [np.array(p, dtype=np.float64) for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            g = np.asarray(g, dtype=np.float64)
            if decay_first:
                g = g + weight_decay * params[i]
                g = g / (np.sqrt((g**2).sum()) + norm_eps)
            else:
                g = g / (np.sqrt((g**2).sum()) + norm_eps) + weight_decay * params[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g**2
            m_hat, v_hat = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
            params[i] = params[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return params


def largest_gap(a, b) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


START = [[0.5, -1.0, 2.0], [[0.3, -0.2], [0.1, 0.4]]]
GRADS = [  # two steps, two tensors of very different gradient scales
    [[0.3, -4.0, 1.0], [[200.0, 50.0], [-10.0, 30.0]]],
    [[-0.2, 1.0, 3.0], [[-1.0, 80.0], [40.0, -5.0]]],
]


def run_optimizer(optimizer_cls, grads=GRADS, **options):
    params = [torch.nn.Parameter(torch.tensor(p, dtype=torch.float64)) for p in START]
    optimizer = optimizer_cls(params, **options)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
    return [p.detach().numpy() for p in params], optimizer


def assert_all_close(got, want, **tol):
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, **tol)


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_two_adam_normgrad_steps_equal_the_hand_computation(weight_decay):
    options = {"lr": 0.1, "betas": (0.8, 0.95), "eps": 1e-3, "weight_decay": weight_decay}
    got, _ = run_optimizer(AdamNormGrad, **options)
    want = adam_normgrad_reference(START, GRADS, norm_eps=1e-7, **options)
    assert_all_close(got, want, rtol=1e-12, atol=1e-14)
    # The comparison can tell: plain Adam (no normalization) lands elsewhere.
    plain, _ = run_optimizer(torch.optim.Adam, **options)
    assert largest_gap(plain, want) > 1e-3


def test_weight_decay_is_added_after_the_normalization():
    options = {"lr": 0.1, "betas": (0.8, 0.95), "eps": 1e-3, "weight_decay": 0.5}
    got, _ = run_optimizer(AdamNormGrad, **options)
    after = adam_normgrad_reference(START, GRADS, norm_eps=1e-7, **options)
    before = adam_normgrad_reference(START, GRADS, norm_eps=1e-7, decay_first=True, **options)
    without = adam_normgrad_reference(START, GRADS, norm_eps=1e-7, **options | {"weight_decay": 0})
    assert largest_gap(before, after) > 1e-3 and largest_gap(without, after) > 1e-3
    assert_all_close(got, after, rtol=1e-12, atol=1e-14)


def test_each_tensor_is_normalized_by_its_own_norm():
    """Gradients 1e-10 and 1e3 in scale: both tensors move by lr on the first step. Plain
    Adam moves the tiny one by about lr * 1e-10 / (1e-10 + eps); one norm over all tensors
    would leave it at about lr * 1e-13 / (1e-13 + eps)."""
    lr = 0.01
    a = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(3, 2, dtype=torch.float64))
    optimizer = AdamNormGrad([a, b], lr=lr)
    a.grad = 1e-10 * torch.tensor([1.0, -2.0, 3.0, 0.5], dtype=torch.float64)
    b.grad = 1e3 * torch.tensor([[1.0, 2.0], [-3.0, 1.0], [0.5, -0.1]], dtype=torch.float64)
    sign_a, sign_b = -a.grad.sign(), -b.grad.sign()
    optimizer.step()
    for p, sign in ((a, sign_a), (b, sign_b)):
        moved = p.detach()
        assert torch.allclose(moved, lr * sign, rtol=1e-4, atol=0), moved
    plain = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    adam = torch.optim.Adam([plain], lr=lr)
    plain.grad = 1e-10 * torch.tensor([1.0, -2.0, 3.0, 0.5], dtype=torch.float64)
    adam.step()
    assert plain.abs().max() < 0.1 * lr  # what normalizing per tensor changes


def test_norm_eps_is_an_option_of_each_param_group():
    options = {"lr": 0.05, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.0}
    got, optimizer = run_optimizer(AdamNormGrad, norm_eps=1.0, **options)
    assert optimizer.param_groups[0]["norm_eps"] == 1.0
    want = adam_normgrad_reference(START, GRADS, norm_eps=1.0, **options)
    assert_all_close(got, want, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="norm_eps must be > 0"):
        AdamNormGrad([torch.nn.Parameter(torch.zeros(1))], norm_eps=0)


def test_state_dict_round_trip_continues_identically():
    """A second optimizer loaded from the first's state dict (a resumed run) takes the
    same next step, norm_eps included (the loaded one was built with the default)."""
    options = {"lr": 0.05, "betas": (0.8, 0.9), "weight_decay": 0.1}
    params, first = run_optimizer(AdamNormGrad, grads=GRADS[:1], norm_eps=0.5, **options)
    buffer = io.BytesIO()  # through a file, as a training state is saved and loaded
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    twins = [torch.nn.Parameter(torch.tensor(p)) for p in params]
    second = AdamNormGrad(twins, **options)
    second.load_state_dict(saved)
    originals = [p for group in first.param_groups for p in group["params"]]
    for p, q, g in zip(originals, twins, GRADS[1], strict=True):
        p.grad = torch.tensor(g, dtype=torch.float64)
        q.grad = torch.tensor(g, dtype=torch.float64)
    first.step()
    second.step()
    for p, q in zip(originals, twins, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    want = adam_normgrad_reference(START, GRADS, norm_eps=0.5, eps=1e-8, **options)
    assert_all_close([q.detach().numpy() for q in twins], want, rtol=1e-12, atol=1e-14)


def test_a_closure_is_evaluated_and_its_gradients_normalized():
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    optimizer = AdamNormGrad([p], lr=0.1)

    def closure():
        optimizer.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    assert optimizer.step(closure).item() == 25.0
    torch.testing.assert_close(p.grad, torch.tensor([0.6, 0.8], dtype=torch.float64))


def test_a_parameter_group_added_later_is_normalized_too():
    a = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    optimizer = AdamNormGrad([a], lr=0.1)
    optimizer.add_param_group({"params": [b]})
    a.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)
    b.grad = torch.tensor([3e-9, 4e-9], dtype=torch.float64)
    optimizer.step()
    torch.testing.assert_close(b.detach(), a.detach())


# -- every built-in optimizer from a config ---------------------------------------------------


EXPECTED = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adamax": torch.optim.Adamax,
    "rmsprop": torch.optim.RMSprop,
    "sgd": torch.optim.SGD,
    "adamnormgrad": AdamNormGrad,
}


def optimizer_for(registry, **config):
    settings = StepSettings.of(RunConfig(**config), registry)
    return build_optimizer(torch.nn.Linear(3, 2), settings, EAGER), settings


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_builtin_optimizer_builds_as_its_class_at_the_runs_lr(registry, name):
    optimizer, settings = optimizer_for(registry, optimizer=name, lr=0.0123)
    assert type(optimizer) is EXPECTED[name]
    assert settings.optimizer is registry.get("optimizer", name)
    assert [g["lr"] for g in optimizer.param_groups] == [0.0123]
    assert sum(p.numel() for p in optimizer.param_groups[0]["params"]) == 8
    settings.check(epochs=3)


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("rmsprop", {"centered": True, "alpha": 0.9}, {"centered": True, "alpha": 0.9}),
        ("sgd", {"momentum": 0.9, "nesterov": True}, {"momentum": 0.9, "nesterov": True}),
        ("adamw", {"weight_decay": 0.05, "amsgrad": True}, {"weight_decay": 0.05, "amsgrad": True}),
        ("adam", {"betas": [0.5, 0.6], "eps": 1e-4}, {"betas": (0.5, 0.6), "eps": 1e-4}),
        ("adamax", {"betas": [0.7, 0.8]}, {"betas": (0.7, 0.8)}),
        (
            "adamnormgrad",
            {"betas": [0.5, 0.6], "norm_eps": 1e-3},
            {"betas": (0.5, 0.6), "norm_eps": 1e-3},
        ),
    ],
)
def test_optimizer_options_reach_the_param_groups(registry, name, options, expected):
    optimizer, settings = optimizer_for(registry, optimizer=name, optimizer_options=options)
    settings.check(epochs=2)
    group = optimizer.param_groups[0]
    for key, value in expected.items():
        assert group[key] == value, key
        assert type(group[key]) is type(value), key  # a list of betas became a tuple


def test_betas_from_the_command_line_are_a_tuple(registry):
    options = parse_pairs(["betas=0.5,0.75"])
    assert options == {"betas": [0.5, 0.75]}
    optimizer, _ = optimizer_for(registry, optimizer="adam", optimizer_options=options)
    assert optimizer.param_groups[0]["betas"] == (0.5, 0.75)


def test_no_optimizer_component_is_adam():
    optimizer = build_optimizer(torch.nn.Linear(2, 2), StepSettings(lr=0.3), EAGER)
    assert type(optimizer) is torch.optim.Adam and optimizer.param_groups[0]["lr"] == 0.3


# -- the settings' checks -------------------------------------------------------------------


def settings_of(registry, **config) -> StepSettings:
    return StepSettings.of(RunConfig(**config), registry)


def test_an_unknown_optimizer_key_names_the_flag_and_the_accepted_keys(registry):
    settings = settings_of(registry, optimizer="sgd", optimizer_options={"colour": 1})
    with pytest.raises(ConfigError) as caught:
        settings.check(epochs=2)
    message = str(caught.value)
    assert message.startswith("-O colour: not an option of optimizer 'sgd'; accepted: ")
    accepted = message.split("accepted: ")[1].split(", ")
    assert {"momentum", "dampening", "weight_decay", "nesterov"} <= set(accepted)
    assert "lr" not in accepted and "capturable" not in accepted  # set by the core


def test_lr_is_its_own_flag_not_an_option(registry):
    settings = settings_of(registry, optimizer="adam", optimizer_options={"lr": 1})
    with pytest.raises(ConfigError, match=r"^-O lr: not an option of optimizer 'adam'"):
        settings.check(epochs=2)


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"optimizer": "adam", "optimizer_options": {"betas": [2.0, 0.9]}}, "-O: optimizer 'adam' rejected"),
        ({"optimizer": "sgd", "optimizer_options": {"momentum": -1}}, "-O: optimizer 'sgd' rejected"),
        ({"optimizer": "adamnormgrad", "optimizer_options": {"norm_eps": 0}}, "norm_eps must be > 0"),
        ({"lr_schedule": "exponential", "schedule_options": {"gamma": "fast"}}, "^-S"),
        ({"lr_schedule": "cosine", "schedule_options": {"T_max": -2}}, "T_max must be >= 1"),
        ({"lr_schedule": "multistep", "schedule_options": {"colour": 1}}, "-S colour: not an option of schedule 'multistep'"),
    ],
)  # fmt: skip
def test_a_bad_value_or_key_is_a_config_error(registry, config, needle):
    with pytest.raises(ConfigError, match=needle):
        settings_of(registry, **config).check(epochs=3)


@pytest.mark.parametrize("name", ["adam", "adamw", "adamax", "rmsprop", "adamnormgrad"])
def test_cuda_graphs_accept_a_capturable_optimizer(registry, name):
    settings_of(registry, optimizer=name).check(epochs=2, mode_graphs=True)


def test_cuda_graphs_refuse_an_optimizer_without_a_capturable_step(registry):
    with pytest.raises(ConfigError, match="capturable") as caught:
        settings_of(registry, optimizer="sgd").check(epochs=2, mode_graphs=True)
    assert "'sgd'" in str(caught.value)
    settings_of(registry, optimizer="sgd").check(epochs=2)  # fine without graphs


def test_cuda_graphs_refuse_a_schedule(registry):
    settings = settings_of(registry, lr_schedule="exponential", schedule_options={"gamma": 0.5})
    with pytest.raises(ConfigError, match="--lr-schedule"):
        settings.check(epochs=2, mode_graphs=True)
    settings.check(epochs=2)


# -- schedules through the training loop --------------------------------------------------------


X_TRAIN = torch.bernoulli(torch.full((4, 1, 3, 4), 0.5), generator=torch.Generator().manual_seed(0))


def rates(registry, schedule: str, options: dict, epochs: int, lr: float = 1e-3, **kwargs):
    settings = StepSettings(
        lr=lr, lr_schedule=registry.get("schedule", schedule), schedule_options=options
    )
    settings.check(epochs)
    outcome = train(
        tiny_vae(),
        X_TRAIN,
        objective=Recorded(),
        epochs=epochs,
        batch_size=4,
        settings=settings,
        seed=0,
        **kwargs,
    )
    assert [h["epoch"] for h in outcome.history] == list(range(1, epochs + 1))
    return [h["lr"] for h in outcome.history], outcome


def test_multistep_on_the_iwae_stages(registry):
    """IWAE's schedule: 3^i epochs at 1e-3 * 10^(-i/7), stages ending at 1, 4, 13 (and 40)."""
    lrs, _ = rates(
        registry, "multistep", {"milestones": [1, 4, 13], "gamma": 10 ** (-1 / 7)}, epochs=14
    )
    stage = [0] + [1] * 3 + [2] * 9 + [3]  # epoch 1; 2-4; 5-13; 14
    assert lrs == pytest.approx([1e-3 * 10 ** (-i / 7) for i in stage], rel=1e-12, abs=0)


def test_exponential_halves_every_epoch(registry):
    lrs, _ = rates(registry, "exponential", {"gamma": 0.5}, epochs=5, lr=0.08)
    assert lrs == pytest.approx([0.08, 0.04, 0.02, 0.01, 0.005], rel=1e-12, abs=0)


def cosine_closed_form(lr, eta_min, T, epochs):
    return [eta_min + (lr - eta_min) * (1 + math.cos(math.pi * (e - 1) / T)) / 2 for e in range(1, epochs + 1)]  # fmt: skip


def test_cosine_anneals_over_the_runs_epochs_by_default(registry):
    lrs, _ = rates(registry, "cosine", {"eta_min": 1e-4}, epochs=6)
    assert lrs == pytest.approx(cosine_closed_form(1e-3, 1e-4, 6, 6), rel=1e-9, abs=1e-15)
    assert lrs[0] == 1e-3 and lrs[-1] < 2e-4  # nearly annealed by the last epoch


def test_cosine_t_max_overrides_the_runs_length(registry):
    lrs, _ = rates(registry, "cosine", {"T_max": 10}, epochs=4)
    assert lrs == pytest.approx(cosine_closed_form(1e-3, 0.0, 10, 4), rel=1e-9, abs=1e-15)


class ScriptedValidation(Recorded):
    """Training loss as ``Recorded``; in eval mode (validation), the figure scripted for the
    step count (one step per epoch here, so step N is the end of epoch N)."""

    def __init__(self, figures: dict[int, float]) -> None:
        self.figures = figures

    def loss(self, model, x, step):
        if model.training:
            return super().loss(model, x, step)
        value = torch.full((x.shape[0],), self.figures[step], dtype=torch.float32)
        return value.mean(), {"recon": value, "kl": 0 * value}


def test_plateau_is_stepped_on_the_validation_figure_and_only_lowers(registry, monkeypatch):
    seen = []
    real = torch.optim.lr_scheduler.ReduceLROnPlateau.step

    @functools.wraps(real)
    def spy(self, metrics, epoch=None):
        seen.append(float(metrics))
        return real(self, metrics, epoch)

    monkeypatch.setattr(torch.optim.lr_scheduler.ReduceLROnPlateau, "step", spy)
    figures = {1: 5.0, 2: 4.0, 3: 6.0, 4: 3.0, 5: 7.0, 6: 7.0}
    settings = StepSettings(
        lr=0.1,
        lr_schedule=registry.get("schedule", "plateau"),
        schedule_options={"factor": 0.5, "patience": 0},
    )
    outcome = train(
        tiny_vae(),
        X_TRAIN,
        objective=ScriptedValidation(figures),
        epochs=6,
        batch_size=4,
        settings=settings,
        seed=0,
        x_valid=X_TRAIN[:2],
    )
    history = outcome.history
    assert [h["valid_neg_elbo"] for h in history] == list(figures.values())
    assert seen == [h["valid_neg_elbo"] for h in history]
    # By hand: worse than the best after epochs 3, 5 and 6 -> halved for epochs 4, 6 (and 7).
    assert [h["lr"] for h in history] == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025]
    # The training loss is the same every epoch: stepped on it, the rate would halve sooner.
    assert len({h["loss"] for h in history}) == 1


def test_plateau_without_a_validation_split_is_refused(registry):
    with pytest.raises(ValueError, match="validation split"):
        rates(registry, "plateau", {"factor": 0.5}, epochs=2)


def test_a_single_milestone_is_a_list_of_one(registry):
    options = parse_pairs(["milestones=3", "gamma=0.1"])
    assert options == {"milestones": 3, "gamma": 0.1}
    schedule = build_schedule(
        torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0),
        StepSettings(lr_schedule=registry.get("schedule", "multistep"), schedule_options=options),
        epochs=5,
    )
    assert list(schedule.milestones) == [3]
    lrs, _ = rates(registry, "multistep", options, epochs=5, lr=0.5)
    assert lrs == pytest.approx([0.5, 0.5, 0.5, 0.05, 0.05], rel=1e-12, abs=0)


def test_without_a_schedule_the_rate_is_constant(registry):
    outcome = train(
        tiny_vae(), X_TRAIN, objective=Recorded(), epochs=3, batch_size=4,
        settings=StepSettings(lr=0.07), seed=0,
    )  # fmt: skip
    assert [h["lr"] for h in outcome.history] == [0.07] * 3


# -- the command line end to end ---------------------------------------------------------------


def test_sgd_with_a_multistep_schedule_end_to_end(vaebench_cli, tmp_path):
    out = tmp_path / "run"
    done = vaebench_cli(
        "run", "--plugins", "mlp", *FAST_CLI, "--lr", "0.004",
        "--optimizer", "sgd", "-O", "momentum=0.9",
        "--lr-schedule", "multistep", "-S", "milestones=1", "-S", "gamma=0.5",
        "--out", str(out), "-q",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (history,) = json.loads((out / "history.json").read_text()).values()
    assert [h["lr"] for h in history] == pytest.approx([0.004, 0.002], rel=1e-12)
    (row,) = json.loads((out / "results.json").read_text())
    assert row["status"] == "ok"
    assert (row["optimizer"], row["optimizer_options"]) == ("sgd", "momentum=0.9")
    assert (row["lr_schedule"], row["schedule_options"]) == ("multistep", "milestones=1 gamma=0.5")
    config = json.loads((out / "config.json").read_text())
    assert config["optimizer_options"] == {"momentum": 0.9}
    assert config["schedule_options"] == {"milestones": 1, "gamma": 0.5}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--optimizer", "nosuch"],
            "unknown optimizer 'nosuch'; available: adam, adamax, adamnormgrad, adamw, rmsprop, sgd",
        ),
        (
            ["--lr-schedule", "nosuch"],
            "unknown schedule 'nosuch'; available: cosine, exponential, multistep, plateau",
        ),
        (["-O", "colour=1"], "-O colour: not an option of optimizer 'adam'; accepted: betas"),
        (["-O", "lr=0.1"], "-O lr: not an option of optimizer 'adam'"),
        (["-O", "betas=2,0.9"], "-O: optimizer 'adam' rejected"),
        (["--lr-schedule", "plateau", "-S", "milestones=2"], "-S milestones: not an option of schedule 'plateau'"),
    ],
)  # fmt: skip
def test_a_bad_optimizer_or_schedule_exits_2_in_one_line(vaebench_cli, tmp_path, args, needle):
    out = tmp_path / "run"
    done = vaebench_cli("run", "--plugins", "mlp", *FAST_CLI, *args, "--out", str(out))
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("vaebench: error: ") and needle in line
    assert not out.exists()


def test_a_schedule_option_without_a_schedule_is_refused(vaebench_cli, tmp_path):
    out = tmp_path / "run"
    done = vaebench_cli(
        "run", "--plugins", "mlp", *FAST_CLI, "--lr-schedule", "none", "-S", "milestones=1",
        "--out", str(out), "-q",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("vaebench: error: -S milestones")
    assert not out.exists()


def test_a_contradiction_is_warned_about_and_recorded_in_the_row(vaebench_cli, tmp_path):
    out = tmp_path / "run"
    done = vaebench_cli(
        "run", "--plugins", "mlp", *FAST_CLI, "--model", "vae", "-M", "kl_warmup=5",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = "-M kl_warmup=5 is longer than --epochs 2: the model never trains on the full ELBO"
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert warnings == [f"vaebench: warning: {text}"]
    (row,) = json.loads((out / "results.json").read_text())
    assert row["warnings"] == text
    assert json.loads((out / "config.json").read_text())["warnings"] == text


def test_a_late_milestone_list_is_a_contradiction():
    from vaebench.resolve import contradictions

    config = RunConfig(
        lr_schedule="multistep", schedule_options={"milestones": [1, 2, 5]}, epochs=2
    )
    assert contradictions(config) == (
        "-S milestones 2,5 fall at or after --epochs 2: those rate changes never happen"
    )
    config = RunConfig(lr_schedule="multistep", schedule_options={"milestones": [1]}, epochs=2)
    assert contradictions(config) == ""


def test_a_single_late_milestone_is_a_contradiction_too():
    from vaebench.resolve import contradictions

    config = RunConfig(lr_schedule="multistep", schedule_options={"milestones": 5}, epochs=2)
    assert "milestones 5 fall at or after --epochs 2" in contradictions(config)


@pytest.mark.parametrize(
    "modes",
    [
        ("--precision", "fp32,bf16,fp16"),
        pytest.param(("--compile", "default"), marks=pytest.mark.slow),
    ],
)
def test_optimizer_plugins_and_schedules_run_in_every_mode_the_cpu_has(tmp_path, modes):
    """AdamNormGrad, a schedule and clipping in each precision (fp16: after the scaler
    unscales) and compiled: every row trains, and every row's rates follow the schedule."""
    out = tmp_path / "run"
    result = run_cli(
        "run", *FAST_CLI, "--optimizer", "adamnormgrad", "--lr-schedule", "exponential",
        "-S", "gamma=0.5", "--grad-clip", "1.0", *modes, "--out", str(out), "-q",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "results.json").read_text())
    assert rows and all(r["status"] == "ok" for r in rows)
    histories = json.loads((out / "history.json").read_text())
    assert len(histories) == len(rows)
    for history in histories.values():
        assert [h["lr"] for h in history] == pytest.approx([2e-3, 1e-3])
