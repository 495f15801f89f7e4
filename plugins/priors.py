"""Built-in priors. ``normal`` is N(0, I), whose KL the fused kernel computes in closed form."""

from __future__ import annotations

import math

import torch
from torch import nn

from vaebench import hookimpl

LOG_2PI = math.log(2 * math.pi)


class StandardNormalPrior(nn.Module):
    """N(0, I): no parameters; a module only so it moves with the model between devices."""

    standard_normal = True

    def __init__(self, latent_dim: int, **context) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z.float().pow(2) + LOG_2PI).sum(-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=self._anchor.device)

    def kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, exp(logvar)) || N(0, I)) per row."""
        return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(-1)


@hookimpl
def vaebench_register_priors(register):
    register("normal", StandardNormalPrior)
