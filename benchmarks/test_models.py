"""pytest-benchmark regression checks for the built-in plugins and a full training step.

Sizes match the default run (digits, 8x8, latent 16, batch 64) so the figures line up with
``vaebench run``'s throughput table.
"""

from __future__ import annotations

import pytest
import torch

from vaebench.model import ModelSpec, build_model
from vaebench.registry import Registry

INPUT_SHAPE = (1, 8, 8)
LATENT = 16
BATCH = 64


@pytest.fixture(scope="module")
def registry() -> Registry:
    reg = Registry()
    reg.load_builtins()
    return reg


def batch(device) -> torch.Tensor:
    return torch.rand(BATCH, *INPUT_SHAPE, generator=torch.Generator().manual_seed(0)).to(device)


@pytest.mark.parametrize("family", ["conv", "mlp"])
@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_plugin_forward(benchmark, synchronized, device, registry, part, family):
    module = registry.get(part, family).factory(INPUT_SHAPE, LATENT).to(device).eval()
    x = batch(device) if part == "encoder" else torch.randn(BATCH, LATENT, device=device)
    benchmark.group = f"{part} forward"
    benchmark.extra_info.update(
        {
            "family": family,
            "batch": BATCH,
            "input_shape": list(INPUT_SHAPE),
            "latent_dim": LATENT,
            "device": str(device),
        }
    )

    def forward():
        with torch.no_grad():
            return module(x)

    benchmark(synchronized(forward))
    if benchmark.stats is not None:
        benchmark.extra_info["samples_per_s"] = BATCH / benchmark.stats.stats.median


@pytest.mark.parametrize("family", ["conv", "mlp"])
def test_training_step(benchmark, synchronized, device, registry, family):
    """Forward, backward and Adam step of the full VAE (encoder, reparam + KL, decoder, likelihood)."""
    torch.manual_seed(0)
    model = build_model(registry, ModelSpec(family, "normal", "bernoulli", INPUT_SHAPE, LATENT)).to(
        device
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = batch(device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(x).backward()
        optimizer.step()

    benchmark.group = "training step"
    benchmark.extra_info.update(
        {
            "family": family,
            "prior": "normal",
            "batch": BATCH,
            "device": str(device),
            "kernel_backend": model.kernel_backend,
        }
    )
    benchmark(synchronized(step))
    if benchmark.stats is not None:
        benchmark.extra_info["samples_per_s"] = BATCH / benchmark.stats.stats.median


MODES = [("bf16", "none"), ("fp16", "none"), ("fp32", "default"), ("bf16", "default")]


@pytest.mark.parametrize("family", ["conv", "mlp"])
@pytest.mark.parametrize("precision, compile_mode", MODES, ids=lambda m: str(m))
def test_training_step_mode(
    benchmark, synchronized, device, registry, family, precision, compile_mode
):
    """The training step above in another precision or compiled, through the runner's own
    ``TrainStep`` (autocast, gradient scaler, torch.compile); fp32 eager is
    ``test_training_step``, whose name stays as it was."""
    from vaebench.modes import Mode
    from vaebench.step import StepSettings, build_step

    torch.manual_seed(0)
    spec = ModelSpec(family, "normal", "bernoulli", INPUT_SHAPE, LATENT)
    mode = Mode(precision, compile_mode)
    model = mode.prepare(build_model(registry, spec).to(device))
    objective = registry.get("model", "vae").factory()
    step = build_step(model, objective, StepSettings(lr=1e-3), mode, torch.device(device))
    x = batch(device)
    step.precompile([x])  # compiling stays out of the timed rounds

    benchmark.group = "training step"
    benchmark.extra_info.update(
        {"family": family, "batch": BATCH, "device": str(device), "precision": precision,
         "compile": compile_mode, "compile_seconds": step.compile_seconds}
    )  # fmt: skip
    benchmark(synchronized(lambda: step(x)))
    if benchmark.stats is not None:
        benchmark.extra_info["samples_per_s"] = BATCH / benchmark.stats.stats.median
