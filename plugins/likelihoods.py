"""Built-in observation models p(x|z), all returning log-densities summed over the data, in nats.

``bernoulli``: logits, binary cross-entropy (the usual choice for data in [0, 1]).
``gaussian``: means with one global sigma, learned, or fixed with ``-L sigma=0.1`` (then the
NLL is a scaled MSE plus a constant). ``categorical``: a softmax over ``bins`` discretized
intensities per value (``-L bins=256``): cross-entropy on the bin of each value; the decoder
is built for ``param_shape`` = bins logits per value.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOG_2PI = math.log(2 * math.pi)


def _sum_over_data(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(-1)


class Bernoulli(nn.Module):
    def __init__(self, input_shape: tuple[int, ...]) -> None:
        super().__init__()

    def log_prob(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """sum x l - softplus(l): the negative binary cross-entropy with logits, in two
        passes where ``binary_cross_entropy_with_logits`` makes five (1.3x faster on the
        IW-NLL's large chunks; equal to it to float rounding, tested)."""
        logits = logits.float()
        return _sum_over_data(logits * x) - _sum_over_data(F.softplus(logits))

    def log_prob_samples(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``(B, S, ...)`` logits of S samples per example, ``(B, ...)`` x -> ``(B, S)``: the
        IW-NLL's layout, with x never copied per sample (the optional fast path of the
        contract). sum x l is ``vecdot`` with x broadcast over the samples: one fused pass,
        where ``bmm``'s batched matrix-vector product took 8x longer at 13 examples x 100
        samples x 784 (614 us against 77 us, AMD EPYC, 2 threads)."""
        b, s = logits.shape[:2]
        flat = logits.float().reshape(b, s, -1)
        dot = torch.linalg.vecdot(flat, x.float().reshape(b, 1, -1))
        return dot - F.softplus(flat).sum(-1)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


class Gaussian(nn.Module):
    """N(x; mean, sigma^2): sigma learned (one for all values) unless given."""

    def __init__(self, input_shape: tuple[int, ...], sigma: float | None = None) -> None:
        super().__init__()
        if sigma is not None and not float(sigma) > 0:
            raise ValueError(f"gaussian: sigma must be positive, got {sigma}")
        start = torch.tensor(math.log(0.1 if sigma is None else float(sigma)))
        if sigma is None:
            self.log_sigma = nn.Parameter(start)
        else:
            self.register_buffer("log_sigma", start)

    def log_prob(self, mean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mean = mean.float()
        log_sigma = self.log_sigma.clamp(min=-7.0)
        sq = ((x - mean) * torch.exp(-log_sigma)).pow(2)
        return -_sum_over_data(0.5 * sq + log_sigma + 0.5 * LOG_2PI)

    def mean(self, mean: torch.Tensor) -> torch.Tensor:
        return mean


class Categorical(nn.Module):
    """A softmax over ``bins`` levels per value; x in [0, 1] falls in bin round(x * (bins - 1))."""

    def __init__(self, input_shape: tuple[int, ...], bins: int = 256) -> None:
        super().__init__()
        if int(bins) < 2:
            raise ValueError(f"categorical: bins must be >= 2, got {bins}")
        self.bins = int(bins)
        self.input_shape = tuple(input_shape)
        self.register_buffer("levels", torch.linspace(0, 1, self.bins), persistent=False)

    def param_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (input_shape[0] * self.bins, *input_shape[1:])

    def _log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(
            logits.float().view(logits.shape[0], self.bins, *self.input_shape), dim=1
        )

    def log_prob(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        target = (x.clamp(0, 1) * (self.bins - 1)).round().long()
        target = target.expand(logits.shape[0], *target.shape[1:])
        return _sum_over_data(self._log_probs(logits).gather(1, target.unsqueeze(1)).squeeze(1))

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        probs = self._log_probs(logits).exp()
        return (probs * self.levels.view(1, -1, *([1] * len(self.input_shape)))).sum(1)
