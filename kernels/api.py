"""The torch-dependent half of ``vaebench.kernels``, loaded on first use (see ``__init__``)."""

from __future__ import annotations

import functools

import torch

from vaebench.kernels import BACKENDS, triton_available, triton_interpreting
from vaebench.kernels.contract import check_inputs
from vaebench.kernels.reference import reparameterize_kl_reference


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The concrete backend for tensors on ``device``; raises ValueError with what to do."""
    device = torch.device(device)
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend '{backend}'; available: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if backend == "triton":
        if not triton_available():
            raise ValueError(
                "kernel backend 'triton' needs the triton package (pip install triton, Linux only)"
            )
        if device.type != "cuda" and not triton_interpreting():
            raise ValueError(
                f"kernel backend 'triton' needs CUDA tensors (got {device.type}); "
                "set TRITON_INTERPRET=1 to run it slowly on the CPU, or use --kernel torch"
            )
    return backend


@functools.cache
def _compiled_reference():
    return torch.compile(reparameterize_kl_reference, dynamic=True)


def _draw_noise(shape: tuple[int, ...], like: torch.Tensor, seed: int | None) -> torch.Tensor:
    cdt = torch.float64 if like.dtype == torch.float64 else torch.float32
    if seed is None:  # no generator argument at all: torch.compile traces it with dynamic shapes
        return torch.randn(shape, device=like.device, dtype=cdt)
    generator = torch.Generator(device=like.device).manual_seed(int(seed))
    return torch.randn(shape, generator=generator, device=like.device, dtype=cdt)


def reparameterize_kl(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    eps: torch.Tensor | None = None,
    seed: int | None = None,
    samples: int = 1,
    backend: str = "auto",
    return_log_q: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Sample z ~ q(z|x) = N(mu, exp(logvar)) by reparameterization and the KL to N(0, I).

    ``mu``, ``logvar``: ``(N, D)``, one dtype and device. Returns ``z`` (``(N, D)``, or
    ``(samples, N, D)`` when ``samples > 1``) in the input dtype and ``kl`` of shape ``(N,)``
    in fp32; with ``return_log_q`` also log q(z|x) in fp32, ``(N,)`` or ``(samples, N)``.
    ``eps`` injects the noise (same shape as ``z``); otherwise it is drawn from ``seed``
    (from torch's generator when not given, so ``torch.manual_seed`` makes runs
    reproducible); giving both is an error. From one seed, triton (in-kernel Philox) draws
    other noise than torch and compile. Differentiable in ``mu`` and ``logvar``.
    """
    z_shape = check_inputs(mu, logvar, eps, seed, samples)
    concrete = resolve_backend(backend, mu.device)
    if concrete == "triton":
        from vaebench.kernels.reparam_kl import apply, check_dtype

        check_dtype(mu)
        z, kl, log_q = apply(mu, logvar, eps, seed, samples, return_log_q)
        return (z, kl, log_q) if return_log_q else (z, kl)
    if eps is None:
        eps = _draw_noise(z_shape, mu, seed)
    fn = _compiled_reference() if concrete == "compile" else reparameterize_kl_reference
    return fn(mu, logvar, eps, return_log_q=return_log_q)
