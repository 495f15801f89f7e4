"""pytest-benchmark regression checks for reparameterize_kl, per backend, size and direction.

Names are stable across machines (``test_reparam_kl[fwd+bwd-torch-4096x64-fp32]``) so that
``--benchmark-compare`` lines up saved runs. Triton is benchmarked on CUDA only; on the CPU
its interpreter would time Python, not the kernel.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.cases import CPU_SIZES, DTYPES, GPU_SIZES, VARIANTS, Case, make_step, minimal_bytes

ON_GPU = torch.cuda.is_available()
SIZES = GPU_SIZES if ON_GPU else CPU_SIZES[:1]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v[0])
@pytest.mark.parametrize("direction", ["forward", "fwd+bwd"])
def test_reparam_kl(benchmark, synchronized, device, direction, variant, size, dtype, request):
    label, backend, kwargs = variant
    benchmarking = not request.config.getoption("benchmark_disable")
    if backend == "triton" and not ON_GPU and benchmarking:
        pytest.skip("triton is timed on CUDA only (the CPU interpreter is for correctness)")
    n, d = size
    case = Case(n, d, DTYPES[dtype], device)
    step = synchronized(make_step(case, backend, direction, **kwargs))
    benchmark.group = f"reparam_kl {direction} {n}x{d} {dtype}"
    benchmark.extra_info.update(
        {
            "backend": label,
            "direction": direction,
            "N": n,
            "D": d,
            "dtype": dtype,
            "device": str(device),
        }
    )
    moved = minimal_bytes(n, d, case.dtype, direction)
    benchmark.extra_info["min_bytes"] = moved
    benchmark(step)
    if benchmark.stats is not None:
        benchmark.extra_info["GB_per_s"] = moved / benchmark.stats.stats.median / 1e9
