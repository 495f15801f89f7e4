"""The argument contract every ``reparameterize_kl`` backend shares, in one place: the public
entry point and the Triton autograd wrapper both check it, so no backend ignores an argument.
"""

from __future__ import annotations

import torch


def check_inputs(
    mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None, seed: int | None, samples: int
) -> tuple[int, ...]:
    """The contract every backend shares (so none ignores an argument); returns z's shape."""
    if mu.shape != logvar.shape or mu.ndim != 2:
        raise ValueError(
            f"mu and logvar must both be (N, D); got {tuple(mu.shape)} and {tuple(logvar.shape)}"
        )
    if mu.dtype != logvar.dtype:
        raise ValueError(f"mu and logvar must share a dtype, got {mu.dtype} and {logvar.dtype}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    z_shape = tuple(mu.shape) if samples == 1 else (samples, *mu.shape)
    if eps is not None:
        if seed is not None:
            raise ValueError("seed draws the noise; eps supplies it: give one")
        if tuple(eps.shape) != z_shape:
            raise ValueError(f"eps must have shape {z_shape}, got {tuple(eps.shape)}")
    devices = {t.device for t in (mu, logvar, eps) if t is not None}
    if len(devices) > 1:
        raise ValueError(
            f"mu, logvar and eps must be on one device, got {sorted(map(str, devices))}"
        )
    return z_shape
