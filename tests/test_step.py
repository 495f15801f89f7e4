"""The one training-step factory: gradient clipping against a hand-clipped reference, on the
eager and fp16 paths, and training and timing stepping through the same factory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vaebench import step as step_module
from vaebench.config import RunConfig, from_args
from vaebench.modes import Mode
from vaebench.step import StepSettings, build_step
from vaebench.timing import measure_model
from vaebench.train import train


class Squares:
    """Loss = mean of squared outputs: large gradients, known in closed form."""

    variational = False

    def loss(self, model, x, step):
        out = model(x.flatten(1))
        return (out**2).sum(1).mean() * 100, {"recon": (out**2).sum(1)}


def linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(3, 2)


def reference_step(model: nn.Module, x: torch.Tensor, clip: float, lr: float) -> list[torch.Tensor]:
    """Adam one step on gradients clipped by hand, in float64."""
    twin = nn.Linear(3, 2).double()
    twin.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    loss = (twin(x.double()) ** 2).sum(1).mean() * 100
    loss.backward()
    norm = torch.sqrt(sum((p.grad**2).sum() for p in twin.parameters()))
    for p in twin.parameters():
        p.grad *= min(1.0, clip / (float(norm) + 1e-6))
    torch.optim.Adam(twin.parameters(), lr=lr).step()
    return [p.detach() for p in twin.parameters()]


@pytest.mark.parametrize("clip", [0.5, 3.0])
def test_clipped_step_matches_a_step_on_hand_clipped_gradients(clip):
    model, x = linear(), torch.randn(8, 3)
    step = build_step(
        model, Squares(), StepSettings(lr=0.1, grad_clip=clip), Mode(), torch.device("cpu")
    )
    expected = reference_step(model, x, clip, 0.1)
    for _ in range(1):
        step(x)
    total = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
    assert float(total) == pytest.approx(clip, rel=1e-4)  # the gradients were far above clip
    for got, want in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_no_clip_leaves_the_gradients_as_they_are():
    model, x = linear(), torch.randn(8, 3)
    twin = linear()
    ((twin(x) ** 2).sum(1).mean() * 100).backward()
    build_step(model, Squares(), StepSettings(lr=0.1), Mode(), torch.device("cpu"))(x)
    for got, want in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(got.grad, want.grad)


def test_fp16_clips_the_unscaled_gradients():
    """Under a gradient scaler the norm is taken after unscaling: clipping a scaled gradient
    would leave the step ~65536 times too small."""
    model, x = linear(), torch.randn(8, 3)
    settings = StepSettings(lr=0.1, grad_clip=0.5)
    step = build_step(model, Squares(), settings, Mode("fp16"), torch.device("cpu"))
    assert step.scaler is not None and step.scaler.get_scale() > 1
    expected = reference_step(model, x, 0.5, 0.1)
    step(x)
    total = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
    assert float(total) == pytest.approx(0.5, rel=1e-3)
    for got, want in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_training_and_timing_step_through_the_same_factory(monkeypatch):
    """The timed step is the trained step: both clip when the settings say so."""
    calls = []
    real = torch.nn.utils.clip_grad_norm_

    def counting(parameters, max_norm, *args, **kwargs):
        calls.append(max_norm)
        return real(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", counting)
    built = []
    monkeypatch.setattr(step_module, "TrainStep", _spy(step_module.TrainStep, built))
    settings = StepSettings(lr=0.01, grad_clip=0.25)
    x = torch.randn(12, 3)
    outcome = train(
        linear(), x, objective=Squares(), epochs=1, batch_size=4, settings=settings, seed=0
    )
    assert outcome.steps == 3 and calls == [0.25] * 3 and len(built) == 1
    calls.clear()

    class WithCodec(nn.Linear):  # timing also encodes and decodes
        def encode(self, x):
            return self(x.flatten(1)), None

        def decode(self, z):
            return z

    torch.manual_seed(0)
    measure_model(WithCodec(3, 2), Squares(), x, [4], settings=settings, min_run_time=0.01)
    assert calls and set(calls) == {0.25} and len(built) == 2


def _spy(cls, built):
    class Spy(cls):
        def __init__(self, *args, **kwargs):
            built.append(self)
            super().__init__(*args, **kwargs)

    return Spy


def test_the_step_settings_come_from_the_config_by_name():
    from vaebench.registry import load_registry

    registry = load_registry(entry_points=False)
    config = RunConfig(lr=0.5, grad_clip=2.0, optimizer="sgd", optimizer_options={"momentum": 0.9})
    settings = StepSettings.of(config, registry)
    assert (settings.lr, settings.grad_clip) == (0.5, 2.0)
    assert settings.optimizer == registry.get("optimizer", "sgd")
    assert settings.optimizer_options == {"momentum": 0.9}
    assert settings.lr_schedule is None  # "none"
    assert RunConfig().grad_clip == 0.0


def test_grad_clip_flag_is_parsed_and_bounded():
    import argparse

    from vaebench.config import add_run_flags
    from vaebench.errors import ConfigError

    parser = argparse.ArgumentParser()
    add_run_flags(parser)
    assert from_args(parser.parse_args(["--grad-clip", "0.5"])).grad_clip == 0.5
    with pytest.raises(ConfigError, match="--grad-clip: must be >= 0"):
        from_args(parser.parse_args(["--grad-clip", "-1"]))
