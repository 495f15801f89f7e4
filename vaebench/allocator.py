"""glibc's malloc, set for a process that frees and reallocates the same large tensors.

PyTorch's CPU tensors come straight from ``malloc``. Under glibc's self-adjusting defaults a
process that has trained and evaluated can end up handing a freed block of a few MiB back to
the kernel (``munmap``, or trimming the top of the heap), and the next tensor of that size
faults its pages in again, zeroed: in the streamed IW-NLL (a 4 MiB decoder output and its
likelihood per chunk) that was about 2,000 page faults per chunk (``tests/test_allocator.py``
keeps the probe). Fixed thresholds keep freed blocks in the heap for the next chunk:
allocations up to ``MMAP_THRESHOLD`` come from the heap, and up to ``TRIM_THRESHOLD`` of free
memory at the top of each heap stays mapped. Tensor memory is unchanged; the process may hold
that much more resident memory than it uses (one whole run measured the same peak RSS).

Nothing is changed where the user chose: ``VAEBENCH_MALLOC=system`` keeps glibc's defaults, as
do threshold settings of their own (``MALLOC_TRIM_THRESHOLD_`` and the like, or the same in
``GLIBC_TUNABLES``), an allocator loaded with ``LD_PRELOAD`` (jemalloc, tcmalloc, mimalloc), or
a C library other than glibc. The setting lasts for the life of the process.
"""

from __future__ import annotations

import ctypes
import os
import platform

MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its dynamic threshold (64-bit)
TRIM_THRESHOLD = 128 << 20
OPT_OUT = "VAEBENCH_MALLOC"  # =system: leave the C library's allocator as it is
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
# the settings by which a user has chosen glibc's thresholds (environment and tunables)
_THRESHOLDS = ("TRIM_THRESHOLD", "MMAP_THRESHOLD", "TOP_PAD", "MMAP_MAX")

_state: str | None = None  # what keep_freed_memory did in this process


def _choice_made_elsewhere() -> str | None:
    """Why the thresholds must be left alone, in words, or None."""
    library, version = platform.libc_ver()
    if os.environ.get(OPT_OUT, "").lower() == "system":
        return f"{library} {version}: its defaults ({OPT_OUT}=system)".strip()
    preloaded = [
        os.path.basename(p)
        for p in os.environ.get("LD_PRELOAD", "").replace(":", " ").split()
        if "malloc" in os.path.basename(p)
    ]
    if preloaded:
        return f"{', '.join(preloaded)} (LD_PRELOAD)"
    if library != "glibc":
        return f"{library or 'unknown C library'}: its defaults"
    chosen = [f"MALLOC_{name}_" for name in _THRESHOLDS if f"MALLOC_{name}_" in os.environ]
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(f"glibc.malloc.{name.lower()}" in tunables for name in _THRESHOLDS):
        chosen.append("GLIBC_TUNABLES")
    if chosen:
        return f"glibc {version}: the user's settings ({', '.join(chosen)})"
    return None


def keep_freed_memory() -> str:
    """Set glibc's thresholds once per process (idempotent; never fails a run); returns what
    the process's malloc now does, in words, as ``environment()`` records it."""
    global _state
    if _state is not None:
        return _state
    _state = _choice_made_elsewhere()
    if _state is None:
        version = platform.libc_ver()[1]
        try:
            mallopt = ctypes.CDLL(None).mallopt
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            set_ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(
                _M_TRIM_THRESHOLD, TRIM_THRESHOLD
            )
        except (AttributeError, OSError):
            set_ok = False
        _state = (
            f"glibc {version}: mmap threshold {MMAP_THRESHOLD >> 20} MiB, "
            f"trim threshold {TRIM_THRESHOLD >> 20} MiB"
            if set_ok
            else f"glibc {version}: its defaults (mallopt refused a threshold)"
        )
    return _state


def description() -> str:
    """The malloc line for the environment record, whether or not this process set it."""
    if _state is not None:
        return _state
    library, version = platform.libc_ver()
    return _choice_made_elsewhere() or f"{library} {version}: its defaults"
