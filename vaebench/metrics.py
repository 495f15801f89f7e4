"""Test-split quality metrics, all in nats per example.

Each function takes a trained ``VAE`` and a tensor of examples and returns plain floats, so
the runner, the tests and the report share one definition of every number.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from vaebench.kernels import reparameterize_kl
from vaebench.model import VAE

ACTIVE_UNIT_THRESHOLD = 0.01
IW_BUDGET = 2**24  # decoder-output values per chunk of the IW bound, whatever K
IW_MAX_DECODES = 16384  # and decoder calls per chunk (the networks' activations scale with it)
# On the CPU a chunk's decoder outputs and the likelihood's passes over them stay in cache:
# 2^20 values (4 MiB fp32) ran the IW-NLL 2.2x faster than 2^24 on the 784-400-20 MLP
# (benchmarks/iw_nll_speed.py), the decoder's matmuls being as fast from 1024 decodes up;
# with vaebench.allocator's thresholds, 2^19 to 2^21 ran within the noise of 2^20 (AMD EPYC).
IW_CPU_BUDGET = 2**20
PROBE_MAX_TRAIN = 10_000  # training codes the linear probe fits on (a fixed-seed subsample)


def _batches(x: torch.Tensor, batch_size: int):
    for start in range(0, x.shape[0], batch_size):
        yield x[start : start + batch_size]


def decode_batch(model: VAE, x: torch.Tensor, most: int = 512) -> int:
    """Examples per evaluation forward: at most ``most``, and at most ``IW_BUDGET`` decoder
    outputs (a 256-bin categorical on 28x28 images would otherwise hold 512 x 256 x 784
    floats, 400 MB, per batch)."""
    values = math.prod(getattr(model, "param_shape", None) or x.shape[1:])
    return max(1, min(most, IW_BUDGET // values))


@torch.no_grad()
def elbo_terms(
    model: VAE, x: torch.Tensor, batch_size: int | None = None
) -> dict[str, float | list[float]]:
    """Negative ELBO, reconstruction NLL and KL (mean per example), plus KL per latent dimension.

    The reconstruction term is a one-sample estimate per example; ``kl_per_dim`` is the
    closed-form KL of q(z|x) to N(0, I) per unit, which shows which units carry information.
    """
    recon_sum = kl_sum = 0.0
    kl_dims = torch.zeros(model.latent_dim, dtype=torch.float64)
    for xb in _batches(x, batch_size or decode_batch(model, x)):
        terms = model.loss_terms(xb)
        recon_sum += terms.recon.double().sum().item()
        kl_sum += terms.kl.double().sum().item()
        mu, logvar = terms.mu.double(), terms.logvar.double()
        kl_dims += (0.5 * (mu.square() + logvar.exp() - logvar - 1)).sum(0).cpu()
    n = x.shape[0]
    return {
        "neg_elbo": (recon_sum + kl_sum) / n,
        "recon_nll": recon_sum / n,
        "kl": kl_sum / n,
        "kl_per_dim": (kl_dims / n).tolist(),
    }


@torch.no_grad()
def iw_nll(
    model: VAE,
    x: torch.Tensor,
    samples: int,
    on_passes: Callable[[int], None] | None = None,
) -> float:
    """Importance-weighted NLL estimate, -log (1/K) sum_k w_k (Burda et al., 2016), mean per example.

    With K = 1 it is the one-sample Monte Carlo negative ELBO; it tightens as K grows. Memory
    is bounded by ``IW_BUDGET`` decoder outputs whatever K (5000 as in the IWAE and VampPrior
    papers, or more): examples go in batches and samples in chunks, combined by a running
    log-sum-exp. Time is O(n K) decoder calls, the cost of the estimator itself;
    ``on_passes(count)`` is told after each chunk how many decoder passes it made (a progress
    bar of n K that moves even when one example's K samples take minutes).
    """
    values = math.prod(model.param_shape or x.shape[1:])
    budget = IW_BUDGET if x.device.type != "cpu" else IW_CPU_BUDGET
    decodes = max(1, min(IW_MAX_DECODES, budget // values))
    batch = max(1, decodes // samples)
    total = 0.0
    # each example encoded once, in blocks of whole batches (the decoder's batches stay as
    # large as the budget allows, and the noise goes to the same examples whatever the block)
    for xe in _batches(x, batch * max(1, decode_batch(model, x) // batch)):
        mu_e, logvar_e = model.encode(xe)
        for start in range(0, xe.shape[0], batch):
            xb = xe[start : start + batch]
            posterior = (mu_e[start : start + batch], logvar_e[start : start + batch])
            chunk = max(1, decodes // xb.shape[0])
            running = torch.full((xb.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
            for first in range(0, samples, chunk):
                drawn = min(chunk, samples - first)
                log_w = model.log_importance_weights(xb, drawn, posterior).double()
                running = torch.logaddexp(running, torch.logsumexp(log_w, dim=0))
                if on_passes is not None:
                    on_passes(drawn * xb.shape[0])
            total += -(running - math.log(samples)).sum().item()
    return total / x.shape[0]


@torch.no_grad()
def deterministic_recon_nll(model: VAE, x: torch.Tensor, batch_size: int | None = None) -> float:
    """-log p(x | z = E_q[z]) per example: the autoencoders' reconstruction term."""
    total = 0.0
    for xb in _batches(x, batch_size or decode_batch(model, x)):
        mu, _ = model.encode(xb)
        total += -model.likelihood.log_prob(model.decode(mu), xb).double().sum().item()
    return total / x.shape[0]


@torch.no_grad()
def posterior_samples(model: VAE, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """One z ~ q(z|x) per example: a draw from the aggregate posterior."""
    draws = []
    for xb in _batches(x, batch_size):
        mu, logvar = model.encode(xb)
        draws.append(reparameterize_kl(mu, logvar, backend=model.kernel_backend)[0].float())
    return torch.cat(draws)


@torch.no_grad()
def posterior_means(model: VAE, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    return torch.cat([model.encode(xb)[0].float().cpu() for xb in _batches(x, batch_size)])


def active_units(means: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Units whose posterior mean varies over the data, Var_x(E_q[z_j]) > threshold (Burda et al.)."""
    return int((means.double().var(dim=0, unbiased=False) > threshold).sum().item())


def probe_accuracy(
    train_means: torch.Tensor, y_train: torch.Tensor, test_means: torch.Tensor, y_test: torch.Tensor
) -> float:
    """Test accuracy of a logistic-regression probe fit on the training posterior means.

    The fit sees at most ``PROBE_MAX_TRAIN`` training codes (a fixed-seed subsample), so its
    cost stays bounded as the training split grows to 60,000; scoring is O(n_test).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if train_means.shape[0] > PROBE_MAX_TRAIN:
        pick = torch.randperm(train_means.shape[0], generator=torch.Generator().manual_seed(0))
        pick = pick[:PROBE_MAX_TRAIN]
        train_means, y_train = train_means[pick], y_train[pick]
    if len(np.unique(y_train.numpy())) < 2:
        return float("nan")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(train_means.numpy(), y_train.numpy())
    return float(probe.score(test_means.numpy(), y_test.numpy()))
