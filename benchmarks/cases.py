"""Shared definitions for the reparameterize_kl benchmarks: sizes, inputs and minimal bytes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vaebench.kernels import reparameterize_kl

# (N, D): from a training batch up to ~1e8 elements, where the op is bandwidth-bound.
GPU_SIZES: tuple[tuple[int, int], ...] = ((4096, 64), (65536, 128), (262144, 256), (1048576, 96))
CPU_SIZES: tuple[tuple[int, int], ...] = ((4096, 64), (65536, 128))
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# (label, backend, keyword arguments): a variant's arguments go to the internal entry point
# ``benchmarks.kernel_variants.reparameterize_kl_variant`` (triton only), the rest to the public ``reparameterize_kl``.
VARIANTS: tuple[tuple[str, str, dict], ...] = (
    ("torch", "torch", {}),
    ("compile", "compile", {}),
    ("triton", "triton", {}),
    ("triton-store-noise", "triton", {"noise": "store"}),
    ("triton-recover-noise", "triton", {"noise": "recover"}),
    ("triton-philox4", "triton", {"rng": "philox4"}),
)


def minimal_bytes(n: int, d: int, dtype: torch.dtype, direction: str) -> int:
    """Bytes a perfect implementation must move, with the noise drawn in-kernel.

    forward: read mu, logvar; write z and kl (fp32). backward: read mu, logvar, grad_z,
    grad_kl; write grad_mu, grad_logvar.
    """
    elem = torch.empty((), dtype=dtype).element_size()
    forward = 3 * n * d * elem + 4 * n
    backward = 5 * n * d * elem + 4 * n
    return {"forward": forward, "backward": backward, "fwd+bwd": forward + backward}[direction]


@dataclass
class Case:
    n: int
    d: int
    dtype: torch.dtype
    device: torch.device

    def make(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random inputs and upstream gradients (never zeros: they hide unwritten outputs)."""
        gen = torch.Generator(device=self.device).manual_seed(0)
        shape = (self.n, self.d)
        mu = torch.randn(shape, generator=gen, device=self.device).to(self.dtype).requires_grad_()
        logvar = (
            (0.5 * torch.randn(shape, generator=gen, device=self.device))
            .to(self.dtype)
            .requires_grad_()
        )
        grad_z = torch.randn(shape, generator=gen, device=self.device).to(self.dtype)
        grad_kl = torch.randn(self.n, generator=gen, device=self.device)
        return mu, logvar, grad_z, grad_kl


def make_step(case: Case, backend: str, direction: str, **kwargs) -> Callable[[], object]:
    """A closure running one forward (no autograd graph) or forward + backward."""
    mu, logvar, grad_z, grad_kl = case.make()
    if kwargs:  # a benchmark-only variant of the triton backend
        from benchmarks.kernel_variants import reparameterize_kl_variant

        call = functools.partial(reparameterize_kl_variant, **kwargs)
    else:
        call = functools.partial(reparameterize_kl, backend=backend)

    if direction == "forward":

        def forward() -> object:
            with torch.no_grad():
                return call(mu, logvar)

        return forward

    def forward_backward() -> object:
        z, kl = call(mu, logvar)
        return torch.autograd.grad((z, kl), (mu, logvar), (grad_z, grad_kl))

    return forward_backward
