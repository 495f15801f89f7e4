"""Built-in priors p(z).

``normal`` is N(0, I), whose KL the fused kernel computes in closed form. The others are
learnable (trained with the model) and use the Monte Carlo KL log q(z|x) - log p(z):
``mog`` a mixture of diagonal Gaussians, ``vamp`` the VampPrior (a mixture of the encoder's
posteriors at learned pseudo-inputs, Tomczak & Welling 2018), ``flow`` a masked
autoregressive flow on N(0, I) from zuko.
"""

from __future__ import annotations

import math

import torch
from torch import distributions as D
from torch import nn

LOG_2PI = math.log(2 * math.pi)


class StandardNormalPrior(nn.Module):
    """N(0, I): no parameters; a module only so it moves with the model between devices."""

    standard_normal = True

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z.float().pow(2) + LOG_2PI).sum(-1)

    def sample(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, device=self._anchor.device)


class MixtureOfGaussiansPrior(nn.Module):
    """sum_k pi_k N(z; m_k, diag(s_k^2)) with learnable weights, means and scales."""

    def __init__(self, latent_dim: int, components: int = 10) -> None:
        super().__init__()
        if int(components) < 1:
            raise ValueError(f"mog: components must be >= 1, got {components}")
        generator = torch.Generator().manual_seed(0)
        self.means = nn.Parameter(torch.randn(int(components), latent_dim, generator=generator))
        self.log_scales = nn.Parameter(torch.zeros(int(components), latent_dim))
        self.logits = nn.Parameter(torch.zeros(int(components)))

    def distribution(self) -> D.MixtureSameFamily:
        components = D.Independent(D.Normal(self.means, self.log_scales.exp()), 1)
        return D.MixtureSameFamily(D.Categorical(logits=self.logits), components)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.distribution().log_prob(z.float())

    def sample(self, n: int) -> torch.Tensor:
        return self.distribution().sample((n,))


def diagonal_normal_log_prob(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last axis, broadcasting."""
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


class VampPrior(nn.Module):
    """p(z) = (1/K) sum_k q(z | u_k): the encoder's own posteriors at K learned pseudo-inputs.

    Pseudo-inputs live in [0, 1] (a sigmoid of free parameters) and start from training
    examples when the context offers them. The encoder is shared with the model, not owned.
    """

    def __init__(
        self,
        latent_dim: int,
        *,
        input_shape: tuple[int, ...],
        encoder: nn.Module,
        examples: torch.Tensor | None = None,
        pseudo_inputs: int = 50,
    ) -> None:
        super().__init__()
        k = int(pseudo_inputs)
        if k < 1:
            raise ValueError(f"vamp: pseudo_inputs must be >= 1, got {pseudo_inputs}")
        generator = torch.Generator().manual_seed(0)
        if examples is not None and len(examples) > 0:
            start = examples[torch.arange(k) % len(examples)].float()
            start = start + 0.05 * torch.randn(start.shape, generator=generator)
        else:
            start = 0.5 + 0.05 * torch.randn((k, *input_shape), generator=generator)
        self.pseudo_logits = nn.Parameter(torch.logit(start.clamp(0.02, 0.98)))
        self._encoder = (encoder,)  # a tuple: not registered twice as a submodule

    def components(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._encoder[0](torch.sigmoid(self.pseudo_logits))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.components()
        per_component = diagonal_normal_log_prob(
            z.float()[:, None, :], mu[None].float(), logvar[None].float()
        )
        return torch.logsumexp(per_component, dim=1) - math.log(mu.shape[0])

    def sample(self, n: int) -> torch.Tensor:
        mu, logvar = self.components()
        pick = torch.randint(0, mu.shape[0], (n,), device=mu.device)
        return mu[pick] + torch.exp(0.5 * logvar[pick]) * torch.randn_like(mu[pick])


class FlowPrior(nn.Module):
    """A masked autoregressive flow (zuko.flows.MAF) whose base distribution is N(0, I)."""

    def __init__(self, latent_dim: int, transforms: int = 3, hidden: int = 64) -> None:
        super().__init__()
        import zuko

        self.flow = zuko.flows.MAF(
            features=latent_dim,
            transforms=int(transforms),
            hidden_features=(int(hidden), int(hidden)),
        )

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.flow().log_prob(z.float())

    def sample(self, n: int) -> torch.Tensor:
        return self.flow().sample((n,))
