"""Built-in observation models: Bernoulli (logits) and Gaussian (learned global scale)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vaebench import hookimpl

LOG_2PI = math.log(2 * math.pi)


def _sum_over_data(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(-1)


class Bernoulli(nn.Module):
    """-log p(x|z) is binary cross-entropy with logits; valid for 0/1 data, the usual choice for [0, 1]."""

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        super().__init__()

    def log_prob(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return -_sum_over_data(
            F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
        )

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


class Gaussian(nn.Module):
    """N(x; mean, sigma^2) with one learned log-sigma shared by all pixels."""

    def __init__(self, input_shape: tuple[int, ...], init_log_sigma: float = math.log(0.1)) -> None:
        super().__init__()
        self.log_sigma = nn.Parameter(torch.tensor(float(init_log_sigma)))

    def log_prob(self, mean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mean = mean.float()
        log_sigma = self.log_sigma.clamp(min=-7.0)
        sq = ((x - mean) * torch.exp(-log_sigma)).pow(2)
        return -_sum_over_data(0.5 * sq + log_sigma + 0.5 * LOG_2PI)

    def mean(self, mean: torch.Tensor) -> torch.Tensor:
        return mean


@hookimpl
def vaebench_register_likelihoods(register):
    register("bernoulli", Bernoulli)
    register("gaussian", Gaussian)
