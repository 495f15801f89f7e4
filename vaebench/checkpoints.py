"""Small per-model checkpoints, and the pictures drawn from them.

A checkpoint holds the state dict, the spec to rebuild the model and a few test examples, so
``vaebench report`` can draw reconstructions, prior samples and interpolations long after
(and away from) the run. Loaded with ``weights_only=True``: a checkpoint can hold tensors and plain
containers only, never code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaebench.errors import VaebenchError
from vaebench.io import atomic_torch_save
from vaebench.model import VAE, ModelSpec, build_model
from vaebench.registry import Registry

FORMAT = 1
REPORT_EXAMPLES = 8
PRIOR_SAMPLES = 16
INTERPOLATION_STEPS = 10


def save_checkpoint(path: Path, model: VAE, spec: ModelSpec, examples: torch.Tensor) -> None:
    """Atomic like the result files: a crash never leaves a truncated checkpoint."""
    payload = {
        "format": FORMAT,
        "spec": dataclasses.asdict(spec),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "examples": examples.detach().cpu().clone(),  # a view would save its whole split
    }
    atomic_torch_save(path, payload)


def load_checkpoint(path: Path) -> tuple[ModelSpec, dict[str, torch.Tensor], torch.Tensor]:
    try:
        payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VaebenchError(
            f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise VaebenchError(f"{path}: not a vaebench checkpoint of format {FORMAT}")
    spec = payload["spec"]
    spec = ModelSpec(**{**spec, "input_shape": tuple(spec["input_shape"])})
    return spec, payload["state_dict"], payload["examples"]


@dataclass
class ModelViews:
    originals: np.ndarray  # (B, *shape) test examples
    reconstructions: np.ndarray  # likelihood mean of the decoded posterior mean
    samples: np.ndarray  # likelihood mean of decoded prior samples
    interpolation: np.ndarray  # decoded straight line between the first two examples' codes


@torch.no_grad()
def model_views(registry: Registry, checkpoint: Path, *, seed: int = 0) -> ModelViews:
    spec, state, examples = load_checkpoint(checkpoint)
    model = build_model(registry, spec, kernel_backend="torch")
    model.load_state_dict(state)
    model.eval()

    def show(z: torch.Tensor) -> np.ndarray:
        return model.likelihood.mean(model.decode(z)).float().numpy()

    mu, _ = model.encode(examples)
    with torch.random.fork_rng(devices=[]):  # fixed samples, the caller's RNG left alone
        torch.manual_seed(seed)
        prior_z = model.prior.sample(PRIOR_SAMPLES)
    t = torch.linspace(0, 1, INTERPOLATION_STEPS)[:, None]
    line = (1 - t) * mu[0] + t * mu[min(1, len(mu) - 1)]
    return ModelViews(examples.float().numpy(), show(mu), show(prior_z.float()), show(line))
