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
    windows = []
    for _ in range(3):  # the steady state: the quietest of 3 windows of 10 chunks (a heap
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt  # may still grow once)
        for _ in range(5):
            metrics.iw_nll(model, x, 100)
        windows.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
print(state)
print(min(windows))
"""

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


def probe(mode: str, **env: str) -> tuple[str, float]:
    clean = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("MALLOC_", "GLIBC_TUN", "LD_PRELOAD", allocator.OPT_OUT))
    }  # fmt: skip
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
    # what the setting is for: under glibc's own defaults the chunks go back to the kernel
    # (if this half fails, glibc or torch changed how they allocate: see vaebench.allocator)
    state, faults = probe("default")
    assert state.endswith("its defaults") and faults > 500


@glibc
def test_vaebench_malloc_system_keeps_glibcs_defaults():
    state, faults = probe("keep", VAEBENCH_MALLOC="system")
    assert state.endswith("its defaults (VAEBENCH_MALLOC=system)")
    assert faults > 500  # nothing was changed


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MALLOC_TRIM_THRESHOLD_": "131072"}, "the user's settings (MALLOC_TRIM_THRESHOLD_)"),
        ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}, "the user's settings (GLIBC_TUNABLES)"),
        ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, "libjemalloc.so.2 (LD_PRELOAD)"),
        ({"VAEBENCH_MALLOC": "System"}, "its defaults (VAEBENCH_MALLOC=system)"),
    ],
)  # fmt: skip
def test_a_choice_made_elsewhere_wins(monkeypatch, env, expected):
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("glibc", "2.36"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a: pytest.fail("mallopt called"))
    assert allocator.description().endswith(expected)  # before the call, too
    assert allocator.keep_freed_memory().endswith(expected)


@pytest.mark.parametrize(
    "env",
    [{"MALLOC_PERTURB_": "165"}, {"MALLOC_CHECK_": "3"}, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}],
)  # fmt: skip
def test_settings_that_are_not_thresholds_do_not_stop_it(monkeypatch, env):
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("glibc", "2.36"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert allocator.keep_freed_memory().endswith("trim threshold 128 MiB")


def test_a_missing_mallopt_never_fails_a_run(monkeypatch):
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("glibc", "2.36"))

    class NoMallopt:
        def __getattr__(self, name):
            raise AttributeError(name)

    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a: NoMallopt())
    assert allocator.keep_freed_memory() == "glibc 2.36: its defaults (mallopt refused a threshold)"


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a: pytest.fail("mallopt called"))
    assert allocator.keep_freed_memory() == "unknown C library: its defaults"
    assert allocator.keep_freed_memory() == allocator.description()  # once per process
    assert io.environment("cpu")["malloc"] == "unknown C library: its defaults"
