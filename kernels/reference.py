"""The definition of correct: reparameterization + KL to N(0, I) in plain PyTorch.

    z      = mu + exp(logvar / 2) * eps
    kl     = 0.5 * sum_j (mu_j^2 + exp(logvar_j) - logvar_j - 1)        per row, fp32
    log_q  = sum_j log N(z_j; mu_j, exp(logvar_j)) = -0.5 * sum_j (eps_j^2 + logvar_j + log 2 pi)

Arithmetic is done in fp32 (or fp64 for fp64 inputs); ``z`` comes back in the input dtype.
IEEE semantics are kept on purpose, no clamping, and every backend must match them:
logvar = +inf gives kl = NaN (exp(logvar) - logvar is inf - inf) and z = +-inf (NaN where
eps = 0); logvar = -inf gives kl = +inf and z = mu; logvar = 80 overflows z to inf in fp16
and bf16 only where |std * eps| exceeds the dtype's range; a NaN input gives NaN in its row's
kl and its element of z.
"""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def reparameterize_kl_reference(
    mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor, *, return_log_q: bool = False
) -> tuple[torch.Tensor, ...]:
    """``eps`` is ``(N, D)`` or ``(S, N, D)``; returns ``(z, kl)`` or ``(z, kl, log_q)``."""
    cdt = _compute_dtype(mu.dtype)
    mu_c, logvar_c, eps_c = mu.to(cdt), logvar.to(cdt), eps.to(cdt)
    z = (mu_c + torch.exp(0.5 * logvar_c) * eps_c).to(mu.dtype)
    kl = 0.5 * (mu_c.square() + torch.exp(logvar_c) - logvar_c - 1).sum(-1)
    if not return_log_q:
        return z, kl
    log_q = -0.5 * (eps_c.square() + logvar_c + LOG_2PI).sum(-1)
    return z, kl, log_q
