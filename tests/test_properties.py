"""Property-based checks (hypothesis): random shapes, tiles, dtypes and data, against references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vaebench.data import to_images
from vaebench.errors import DataError
from vaebench.kernels.reference import reparameterize_kl_reference

pytest.importorskip("triton")
from benchmarks.kernel_variants import reparameterize_kl_variant

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow
@FAST
@given(
    n=st.integers(1, 70),
    d=st.integers(1, 90),
    samples=st.integers(1, 3),
    tiles=st.sampled_from([None, (1, 16), (4, 8), (16, 32), (2, 128)]),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    seed=st.integers(0, 2**31 - 2),
)
def test_triton_matches_reference_on_random_problems(device, n, d, samples, tiles, dtype, seed):
    generator = torch.Generator(device=device).manual_seed(seed)
    mu = (torch.randn(n, d, generator=generator, device=device) * 2).to(dtype).requires_grad_()
    logvar = (torch.randn(n, d, generator=generator, device=device) * 2).to(dtype).requires_grad_()
    shape = (samples, n, d) if samples > 1 else (n, d)
    eps = torch.randn(shape, generator=generator, device=device)
    z, kl, log_q = reparameterize_kl_variant(
        mu, logvar, eps=eps, samples=samples, return_log_q=True, tiles=tiles
    )
    ref = reparameterize_kl_reference(mu, logvar, eps, return_log_q=True)
    tol = TOL[dtype]
    torch.testing.assert_close(z, ref[0], rtol=tol, atol=tol)
    torch.testing.assert_close(kl, ref[1], rtol=1e-5, atol=1e-5 * d)
    torch.testing.assert_close(log_q, ref[2], rtol=1e-5, atol=1e-5 * d)
    upstream = (
        torch.randn(z.shape, generator=generator, device=device),
        torch.randn(n, generator=generator, device=device),
    )
    got = torch.autograd.grad(
        (z.float() * upstream[0]).sum() + (kl * upstream[1]).sum(), (mu, logvar)
    )
    want = torch.autograd.grad(
        (ref[0].float() * upstream[0]).sum() + (ref[1] * upstream[1]).sum(), (mu, logvar)
    )
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=tol, atol=tol)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=6)))
def test_integer_images_land_in_the_unit_interval(array):
    if array.ndim not in (2, 3, 4):
        return
    x = to_images(array, "prop")
    assert x.dtype == torch.float32 and float(x.min()) >= 0 and float(x.max()) <= 1
    assert x.shape[0] == array.shape[0] and x.numel() == array.size
    if array.max() <= 1:
        assert torch.equal(x, torch.from_numpy(array.astype(np.float32)).reshape(x.shape)), (
            "0/1 data stays binary"
        )
    else:
        np.testing.assert_allclose(x.reshape(array.shape).numpy(), array / 255.0, rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=5)))
def test_float_images_are_kept_or_rejected_with_a_reason(array):
    if not np.isfinite(array).all():
        with pytest.raises(DataError, match="NaN or infinite"):
            to_images(array, "prop")
        return
    with np.errstate(over="ignore"):
        overflows = not np.isfinite(array.astype(np.float32)).all()
    if overflows:
        with pytest.raises(DataError, match="beyond the float32 range"):
            to_images(array, "prop")
        return
    x = to_images(array, "prop")
    np.testing.assert_allclose(x.reshape(array.shape).numpy(), array.astype(np.float32))
