"""glibc's malloc, set for a process that frees and reallocates the same large tensors.

PyTorch's CPU tensors come straight from ``malloc``. By default glibc hands a freed block of a
few MiB back to the kernel (``munmap``, or trimming the top of the heap) and the next tensor
of that size faults its pages in again, zeroed: in the streamed IW-NLL (a 4 MiB decoder output
and its likelihood per chunk) that was 2,000 page faults per chunk and 30 % of the time in the
kernel (AMD EPYC, 2 threads; ``benchmarks/iw_nll_speed.py``). Fixing the thresholds keeps
freed blocks in the heap for the next chunk: allocations up to ``MMAP_THRESHOLD`` come from
the heap and up to ``TRIM_THRESHOLD`` of free memory at its top stays mapped. Peak memory is
unchanged; memory freed after the peak is returned later (or not) instead of at once.

A user's own choice wins: with any ``MALLOC_*_`` variable or a ``glibc.malloc`` tunable in
``GLIBC_TUNABLES`` set (``GLIBC_TUNABLES=glibc.malloc.trim_threshold=131072`` restores glibc's
dynamic default), or on a C library other than glibc, nothing is changed.
"""

from __future__ import annotations

import ctypes
import os
import platform

MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its dynamic threshold (64-bit)
TRIM_THRESHOLD = 128 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)

_state: str | None = None  # what keep_freed_memory did, for the run's environment record


def _user_settings() -> list[str]:
    names = [k for k in os.environ if k.startswith("MALLOC_") and k.endswith("_")]
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        names.append("GLIBC_TUNABLES")
    return sorted(names)


def keep_freed_memory() -> str:
    """Set glibc's thresholds once per process (idempotent); returns what the process's malloc
    now does, in words, as ``environment()`` records it beside every figure."""
    global _state
    if _state is not None:
        return _state
    library, version = platform.libc_ver()
    if library != "glibc":
        _state = f"{library or 'unknown C library'}: its defaults"
    elif user := _user_settings():
        _state = f"glibc {version}: the user's settings ({', '.join(user)})"
    else:
        mallopt = ctypes.CDLL(None).mallopt
        set_ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(
            _M_TRIM_THRESHOLD, TRIM_THRESHOLD
        )
        _state = (
            f"glibc {version}: mmap threshold {MMAP_THRESHOLD >> 20} MiB, "
            f"trim threshold {TRIM_THRESHOLD >> 20} MiB"
            if set_ok
            else f"glibc {version}: its defaults (mallopt refused the thresholds)"
        )
    return _state


def description() -> str:
    """The malloc line for the environment record, whether or not this process set it."""
    if _state is not None:
        return _state
    library, version = platform.libc_ver()
    return f"{library or 'unknown C library'} {version}: its defaults".replace(" :", ":")
