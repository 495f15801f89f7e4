"""``reparameterize_kl``: the one entry point for z = mu + exp(logvar/2) * eps and KL to N(0, I).

Backends:
  ``torch``    the readable reference (``reference.py``), noise from torch's generator;
  ``compile``  the reference under ``torch.compile``: the peer a user would otherwise pick;
  ``triton``   the fused Triton kernels (CUDA tensors, or any tensor when TRITON_INTERPRET=1);
  ``auto``     triton for CUDA tensors when Triton is installed, torch otherwise.

This module imports no torch: ``vaebench --help`` needs ``BACKENDS`` and importing torch
costs seconds of CLI start-up. The torch-dependent names (``reparameterize_kl``,
``resolve_backend``, ``reparameterize_kl_reference``) load on first access (PEP 562).
The kernel variants that benchmarks compare live in ``benchmarks/kernel_variants.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

BACKENDS = ("auto", "torch", "compile", "triton")
_LAZY = {
    "reparameterize_kl": "api",
    "resolve_backend": "api",
    "reparameterize_kl_reference": "reference",
}


_triton_found: bool | None = None


def triton_available() -> bool:
    """Whether Triton is installed: a module lookup, not an import (that costs seconds).

    Cached in a global, not ``functools.cache``, which ``torch.compile`` warns about."""
    global _triton_found
    if _triton_found is None:
        _triton_found = importlib.util.find_spec("triton") is not None
    return _triton_found


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "BACKENDS",
    "reparameterize_kl",
    "reparameterize_kl_reference",
    "resolve_backend",
    "triton_available",
    "triton_interpreting",
]
