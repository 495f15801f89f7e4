"""What a trained model looks like: reconstructions, prior samples and a latent interpolation.

Computed from a saved checkpoint, so reports can be drawn long after (and away from) the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaebench.checkpoints import load_checkpoint
from vaebench.model import build_model
from vaebench.registry import Registry

PRIOR_SAMPLES = 16
INTERPOLATION_STEPS = 10


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
