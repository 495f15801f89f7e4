"""glibc's malloc thresholds (vaebench.allocator): freed tensors stay mapped for the next
chunk, the user's own settings win, and every run records which applied."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from vaebench import allocator, io

# A fresh process evaluates the IW-NLL (chunks of 13 examples x 100 samples: a 4 MiB decoder
# output and its likelihood each) and counts the page faults of its steady state per chunk.
PROBE = """
import resource, sys
import torch
from vaebench import allocator, metrics
from vaebench.model import ModelSpec, build_model
from vaebench.registry import load_registry
state = allocator.keep_freed_memory() if sys.argv[1] == "keep" else allocator.description()
torch.manual_seed(0)
torch.set_num_threads(1)
spec = ModelSpec("mlp", "normal", "bernoulli", (1, 28, 28), 20, arch_options={"hidden": 400})
model = build_model(load_registry(), spec, kernel_backend="torch").eval()
x = (torch.rand(26, 1, 28, 28) < 0.13).float()
with torch.no_grad():
    for _ in range(3):  # the heap reaches its size
        metrics.iw_nll(model, x, 100)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):  # 10 chunks
        metrics.iw_nll(model, x, 100)
print(state)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


def probe(mode: str, **env: str) -> tuple[str, float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUN"))}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env={**clean, **env},
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    state, faults = done.stdout.strip().splitlines()[-2:]
    return state, float(faults)


@glibc
def test_freed_chunks_are_not_faulted_in_again():
    state, faults = probe("keep")
    assert "mmap threshold 32 MiB, trim threshold 128 MiB" in state
    assert faults < 20  # a 4 MiB output is 1,024 pages
    state, faults = probe("default")  # what the setting is for: glibc hands the chunks back
    assert state.endswith("its defaults") and faults > 500


@glibc
def test_the_users_malloc_settings_win():
    state, faults = probe("keep", MALLOC_TRIM_THRESHOLD_="131072")
    assert state.endswith("the user's settings (MALLOC_TRIM_THRESHOLD_)")
    assert faults > 500  # nothing was changed
    state, _ = probe("keep", GLIBC_TUNABLES="glibc.malloc.mmap_threshold=131072")
    assert state.endswith("the user's settings (GLIBC_TUNABLES)")


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a: pytest.fail("mallopt called"))
    assert allocator.keep_freed_memory() == "unknown C library: its defaults"
    assert allocator.keep_freed_memory() == allocator.description()  # once per process
    assert io.environment("cpu")["malloc"] == "unknown C library: its defaults"
