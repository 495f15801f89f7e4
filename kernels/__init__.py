"""``reparameterize_kl``: the one entry point for z = mu + exp(logvar/2) * eps and KL to N(0, I).

Backends:
  ``torch``    the readable reference (``reference.py``), noise from torch's generator;
  ``compile``  the reference under ``torch.compile``: the peer a user would otherwise pick;
  ``triton``   the fused Triton kernels (CUDA tensors, or any tensor when TRITON_INTERPRET=1);
  ``auto``     triton for CUDA tensors when Triton is importable, torch otherwise.
"""

from __future__ import annotations

import functools
import os

import torch

from vaebench.kernels.reference import reparameterize_kl_reference

BACKENDS = ("auto", "torch", "compile", "triton")


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"


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
    generator = None
    if seed is not None:
        generator = torch.Generator(device=like.device).manual_seed(int(seed))
    cdt = torch.float64 if like.dtype == torch.float64 else torch.float32
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
    noise: str = "regenerate",
    rng: str = "philox",
) -> tuple[torch.Tensor, ...]:
    """Sample z ~ q(z|x) = N(mu, exp(logvar)) by reparameterization and the KL to N(0, I).

    ``mu``, ``logvar``: ``(N, D)``. Returns ``z`` (``(N, D)``, or ``(samples, N, D)`` when
    ``samples > 1``) in the input dtype and ``kl`` of shape ``(N,)`` in fp32; with
    ``return_log_q`` also log q(z|x) in fp32, ``(N,)`` or ``(samples, N)``. ``eps`` injects
    the noise (same shape as ``z``); otherwise it is drawn from ``seed`` (from torch's
    generator when not given, so ``torch.manual_seed`` makes runs reproducible).
    Differentiable in ``mu`` and ``logvar``. ``noise`` (triton only): ``regenerate`` redraws
    the noise in the backward kernel, ``store`` keeps it in a buffer, ``recover`` uses z - mu
    (benchmark variants); ``rng`` (triton only): ``philox`` or ``philox4`` (4 normals per draw).
    """
    if mu.shape != logvar.shape or mu.ndim != 2:
        raise ValueError(
            f"mu and logvar must both be (N, D); got {tuple(mu.shape)} and {tuple(logvar.shape)}"
        )
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    z_shape = tuple(mu.shape) if samples == 1 else (samples, *mu.shape)
    if eps is not None and tuple(eps.shape) != z_shape:
        raise ValueError(f"eps must have shape {z_shape}, got {tuple(eps.shape)}")
    concrete = resolve_backend(backend, mu.device)
    if concrete == "triton":
        from vaebench.kernels.reparam_kl import reparameterize_kl_triton

        return reparameterize_kl_triton(
            mu,
            logvar,
            eps=eps,
            seed=seed,
            samples=samples,
            return_log_q=return_log_q,
            noise=noise,
            rng=rng,
        )
    if eps is None:
        eps = _draw_noise(z_shape, mu, seed)
    fn = _compiled_reference() if concrete == "compile" else reparameterize_kl_reference
    return fn(mu, logvar, eps, return_log_q=return_log_q)


__all__ = ["BACKENDS", "reparameterize_kl", "reparameterize_kl_reference", "resolve_backend"]
