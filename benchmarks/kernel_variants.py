"""The Triton kernel's variants that benchmarks compare, kept out of the production op.

The public ``reparameterize_kl`` and the custom op ``torch.ops.vaebench.reparam_kl`` take what
a user passes (mu, logvar, eps, seed, samples, log_q). How the noise is kept for the backward,
which Philox stream draws it, whether Box-Muller uses the GPU's approximate sin/cos and the
tile sizes are benchmark questions: this entry point runs them eagerly through the same
kernels and autograd function (``vaebench.kernels.reparam_kl.Variant`` says what each does).
"""

from __future__ import annotations

import torch

from vaebench.kernels.contract import check_inputs
from vaebench.kernels.reparam_kl import Variant, apply, check_dtype


def reparameterize_kl_variant(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    eps: torch.Tensor | None = None,
    seed: int | None = None,
    samples: int = 1,
    return_log_q: bool = False,
    noise: str = "regenerate",
    rng: str = "philox",
    fast_math: bool = False,
    tiles: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, ...]:
    """``reparameterize_kl(..., backend="triton")`` with one variant; the defaults are the op.

    The variants only vary drawn noise, so they refuse ``eps``; they run eagerly only.
    """
    check_inputs(mu, logvar, eps, seed, samples)
    variant = Variant(noise, rng, fast_math, tiles)
    variant.check(injected=eps is not None)
    check_dtype(mu)
    z, kl, log_q = apply(mu, logvar, eps, seed, samples, return_log_q, variant)
    return (z, kl, log_q) if return_log_q else (z, kl)
