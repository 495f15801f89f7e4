"""The fused Triton reparameterization + KL kernel against the PyTorch reference.

On a machine without CUDA these run through ``TRITON_INTERPRET=1`` (set in conftest), with
tiles chosen so that few programs launch. Tolerances per dtype: fp32 results match to
float32 rounding (both paths compute in fp32); fp16 and bf16 outputs may differ by one unit
in the last place of the output dtype (the exp implementations differ in the last fp32 bit,
which can flip the final rounding).
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from vaebench.kernels import reparameterize_kl
from vaebench.kernels.reference import reparameterize_kl_reference

pytest.importorskip("triton")
from benchmarks.kernel_variants import reparameterize_kl_variant
from vaebench.resolve import resolve_config

TOL = {
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.float16: {"rtol": 2e-3, "atol": 2e-3},
    torch.bfloat16: {"rtol": 1.6e-2, "atol": 1.6e-2},
}
# Two of them (odd sizes, several column blocks) are in the GPU session's selection.
SHAPES = [(1, 1), (1, 7), (5, 1), (17, 33), (64, 257), (300, 5), (129, 64)]
SHAPE_PARAMS = [
    pytest.param(shape, id=f"{shape[0]}x{shape[1]}",
                 marks=[pytest.mark.gpu_session] if shape in ((17, 33), (64, 257)) else [])
    for shape in SHAPES
]  # fmt: skip


def inputs(n, d, dtype, device, *, requires_grad=True):
    mu = torch.randn(n, d, device=device).to(dtype)
    logvar = (torch.randn(n, d, device=device) * 1.5).to(dtype)
    return mu.requires_grad_(requires_grad), logvar.requires_grad_(requires_grad)


def run_both(mu, logvar, eps, samples, **kwargs):
    """Forward + backward with random upstream gradients through triton and the reference."""
    z, kl, log_q = reparameterize_kl(
        mu, logvar, eps=eps, samples=samples, backend="triton", return_log_q=True, **kwargs
    )
    gz, gkl, glq = (
        torch.randn_like(z.float()).to(z.dtype),
        torch.randn_like(kl),
        torch.randn_like(log_q),
    )
    grads = torch.autograd.grad(
        (z.float() * gz).sum() + (kl * gkl).sum() + (log_q * glq).sum(), (mu, logvar)
    )
    ref = reparameterize_kl_reference(mu, logvar, eps, return_log_q=True)
    ref_grads = torch.autograd.grad(
        (ref[0].float() * gz).sum() + (ref[1] * gkl).sum() + (ref[2] * glq).sum(), (mu, logvar)
    )
    return (z, kl, log_q, *grads), (*ref, *ref_grads), (gz, gkl, glq)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPE_PARAMS)
@pytest.mark.parametrize("samples", [1, 3])
def test_matches_reference_with_injected_eps(device, dtype, shape, samples):
    mu, logvar = inputs(*shape, dtype, device)
    eps_shape = shape if samples == 1 else (samples, *shape)
    eps = torch.randn(eps_shape, device=device)
    got, want, _ = run_both(mu, logvar, eps, samples)
    z, kl, log_q, g_mu, g_lv = got
    assert (
        z.dtype == dtype
        and z.shape == eps_shape
        and kl.dtype == torch.float32
        and kl.shape == (shape[0],)
    )
    assert log_q.shape == eps_shape[:-1]
    torch.testing.assert_close(z, want[0], **TOL[dtype])
    scale = shape[1]  # sums over D accumulate rounding in a different order
    torch.testing.assert_close(kl, want[1], rtol=1e-5, atol=1e-5 * scale)
    torch.testing.assert_close(log_q, want[2], rtol=1e-5, atol=1e-5 * scale)
    torch.testing.assert_close(g_mu, want[3], **TOL[dtype])
    torch.testing.assert_close(g_lv, want[4], **TOL[dtype])


@pytest.mark.gpu_session
@pytest.mark.parametrize("samples", [1, 4])
def test_gradients_match_float64_autograd(device, samples):
    mu, logvar = inputs(23, 45, torch.float32, device)
    eps = torch.randn((samples, 23, 45) if samples > 1 else (23, 45), device=device)
    got, _, (gz, gkl, glq) = run_both(mu, logvar, eps, samples)
    mu64 = mu.detach().double().requires_grad_()
    lv64 = logvar.detach().double().requires_grad_()
    z, kl, log_q = reparameterize_kl_reference(mu64, lv64, eps.double(), return_log_q=True)
    want = torch.autograd.grad(
        (z * gz.double()).sum() + (kl * gkl.double()).sum() + (log_q * glq.double()).sum(),
        (mu64, lv64),
    )
    torch.testing.assert_close(got[3].double(), want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[4].double(), want[1], rtol=1e-5, atol=1e-5)


@pytest.mark.gpu_session
@pytest.mark.parametrize("which", ["z", "kl", "log_q"])
def test_each_output_alone_gives_the_right_gradient(device, which):
    mu, logvar = inputs(9, 70, torch.float32, device)
    eps = torch.randn(9, 70, device=device)
    outs = dict(
        zip(
            ("z", "kl", "log_q"),
            reparameterize_kl_variant(mu, logvar, eps=eps, return_log_q=True, tiles=(4, 16)),
            strict=True,
        )
    )
    refs = dict(
        zip(
            ("z", "kl", "log_q"),
            reparameterize_kl_reference(mu, logvar, eps, return_log_q=True),
            strict=True,
        )
    )
    got = torch.autograd.grad(outs[which].sum(), (mu, logvar), allow_unused=True)
    want = torch.autograd.grad(refs[which].sum(), (mu, logvar), allow_unused=True)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(
            g, torch.zeros_like(mu) if w is None else w, rtol=1e-5, atol=1e-5
        )


def test_many_column_blocks_and_odd_tiles(device):
    mu, logvar = inputs(37, 101, torch.float32, device)
    eps = torch.randn(2, 37, 101, device=device)
    z, kl, log_q = reparameterize_kl_variant(
        mu, logvar, eps=eps, samples=2, return_log_q=True, tiles=(8, 16)
    )
    ref = reparameterize_kl_reference(mu, logvar, eps, return_log_q=True)
    torch.testing.assert_close(z, ref[0])
    torch.testing.assert_close(kl, ref[1], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(log_q, ref[2], rtol=1e-5, atol=1e-4)


@pytest.mark.gpu_session
def test_non_contiguous_inputs_and_gradients(device):
    base = torch.randn(40, 2 * 33, device=device)
    mu = base[:, ::2].detach().requires_grad_()  # strided columns, not a copy
    logvar_t = torch.randn(33, 40, device=device)
    logvar = logvar_t.t().detach().requires_grad_()  # transposed
    mu_view, logvar_view = base[:, ::2], logvar_t.t()
    assert not mu_view.is_contiguous() and not logvar_view.is_contiguous()
    eps = torch.randn(40, 33, device=device)
    z, kl = reparameterize_kl(mu_view, logvar_view, eps=eps, backend="triton")
    ref_z, ref_kl = reparameterize_kl_reference(mu_view, logvar_view, eps)
    torch.testing.assert_close(z, ref_z)
    torch.testing.assert_close(kl, ref_kl, rtol=1e-5, atol=1e-4)
    # An expanded (stride-0) upstream gradient, as z.sum() produces.
    g = torch.autograd.grad(
        reparameterize_kl(mu, logvar, eps=eps, backend="triton")[0].sum(), (mu, logvar)
    )
    torch.testing.assert_close(g[0], torch.ones_like(mu))
    torch.testing.assert_close(g[1], 0.5 * torch.exp(0.5 * logvar.detach()) * eps)


@pytest.mark.gpu_session
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy reports the inf/NaN
def test_extreme_values_follow_the_reference(device):
    mu = torch.tensor([[0.5, -1.0, 2.0, float("nan"), 0.0, 1.0]], device=device).repeat(3, 1)
    logvar = torch.tensor(
        [
            [80.0, -80.0, 0.0, 0.0, 1.0, 0.0],
            [math.inf, 0.0, 0.0, 0.0, 0.0, 0.0],
            [-math.inf, 1.0, 0.0, 0.0, 0.0, float("nan")],
        ],
        device=device,
    )
    eps = torch.randn(3, 6, device=device)
    eps[1, 0] = 0.0  # inf * 0 = NaN in both paths
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        z, kl = reparameterize_kl(mu.to(dtype), logvar.to(dtype), eps=eps, backend="triton")
        ref_z, ref_kl = reparameterize_kl_reference(mu.to(dtype), logvar.to(dtype), eps)
        torch.testing.assert_close(z, ref_z, equal_nan=True, **TOL[dtype])
        torch.testing.assert_close(kl, ref_kl, equal_nan=True, rtol=1e-5, atol=1e-5)
    assert torch.isnan(kl).all(), "each row holds a NaN or an inf - inf"


@pytest.mark.gpu_session
@pytest.mark.parametrize("rng", ["philox", "philox4"])
def test_in_kernel_noise_is_standard_normal_and_uncorrelated(device, rng):
    n, d = 512, 256
    mu = torch.zeros(n, d, device=device)
    logvar = torch.zeros(n, d, device=device)
    z, _ = reparameterize_kl_variant(mu, logvar, seed=1234, rng=rng)
    eps = z.double().cpu()
    flat = eps.flatten()
    assert abs(flat.mean().item()) < 4 / math.sqrt(flat.numel())  # 4 standard errors
    assert abs(flat.var().item() - 1) < 0.01
    assert stats.kstest(flat.numpy(), "norm").pvalue > 1e-3

    def corr(a, b):
        return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()

    assert abs(corr(eps[:, 1:], eps[:, :-1])) < 0.01, "neighbouring columns correlate"
    assert abs(corr(eps[1:], eps[:-1])) < 0.01, "neighbouring rows correlate"


@pytest.mark.gpu_session
@pytest.mark.parametrize("rng", ["philox", "philox4"])
def test_noise_is_a_function_of_seed_and_index_only(device, rng):
    mu, logvar = inputs(64, 41, torch.float32, device, requires_grad=False)
    a = reparameterize_kl_variant(mu, logvar, seed=7, samples=2, rng=rng)[0]
    b = reparameterize_kl_variant(mu, logvar, seed=7, samples=2, tiles=(4, 8), rng=rng)[0]
    c = reparameterize_kl_variant(mu, logvar, seed=8, samples=2, rng=rng)[0]
    assert torch.equal(a, b), "noise must not depend on tile sizes"
    assert not torch.isclose(a, c).any(), "a new seed must give new noise everywhere"
    assert not torch.isclose(a[0], a[1]).any(), "samples must differ"
    torch.manual_seed(3)
    first = reparameterize_kl_variant(mu, logvar, rng=rng)[0]
    torch.manual_seed(3)
    second = reparameterize_kl_variant(mu, logvar, rng=rng)[0]
    assert torch.equal(first, second), "torch.manual_seed must make in-kernel noise reproducible"


@pytest.mark.gpu_session
@pytest.mark.parametrize("rng", ["philox", "philox4"])
@pytest.mark.parametrize("samples", [1, 3])
def test_backward_regenerates_the_forward_noise(device, samples, rng):
    mu, logvar = inputs(33, 70, torch.float32, device)
    z, _ = reparameterize_kl_variant(mu, logvar, seed=99, samples=samples, tiles=(8, 32), rng=rng)
    eps = (z.detach() - mu.detach()) / torch.exp(
        0.5 * logvar.detach()
    )  # the noise the forward used
    g_mu, g_lv = torch.autograd.grad(z.sum(), (mu, logvar))
    expected = 0.5 * torch.exp(0.5 * logvar.detach()) * eps
    expected = expected if samples == 1 else expected.sum(0)
    torch.testing.assert_close(g_lv, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g_mu, torch.full_like(mu, samples))


@pytest.mark.gpu_session
@pytest.mark.parametrize("samples", [1, 2])
def test_noise_variants_equal_regenerate(device, samples):
    mu, logvar = inputs(20, 30, torch.float32, device)
    outs = {}
    for noise in ("regenerate", "store", "recover"):
        z, kl = reparameterize_kl_variant(mu, logvar, seed=5, samples=samples, noise=noise)
        outs[noise] = (z, kl, *torch.autograd.grad((z * z).sum() + kl.sum(), (mu, logvar)))
    for variant in ("store", "recover"):
        for a, b in zip(outs["regenerate"], outs[variant], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.host_tensors
def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    host = torch.randn(2, 2, device="cpu")  # what a CUDA host would refuse too
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        reparameterize_kl(host, host, backend="triton")


def test_philox4_is_another_stream_and_needs_tiles_of_four(device):
    mu, logvar = inputs(9, 13, torch.float32, device, requires_grad=False)
    one = reparameterize_kl_variant(mu, logvar, seed=1)[0]
    four = reparameterize_kl_variant(mu, logvar, seed=1, rng="philox4")[0]
    # Element 0 coincides by construction (lane 0 of draw 0 in both); the rest differ.
    assert torch.isclose(one, four).float().mean() < 0.05
    with pytest.raises(ValueError, match="BLOCK_D divisible by 4"):
        reparameterize_kl_variant(mu, logvar, seed=1, rng="philox4", tiles=(4, 6))
    with pytest.raises(ValueError, match="unknown rng"):
        reparameterize_kl_variant(mu, logvar, rng="mt19937")


def test_unsupported_dtype_is_rejected(device):
    with pytest.raises(ValueError, match="fp32, fp16 or bf16"):
        reparameterize_kl_variant(
            torch.randn(2, 2, dtype=torch.float64, device=device),
            torch.randn(2, 2, dtype=torch.float64, device=device),
        )


def test_variants_that_do_not_apply_are_errors(device):
    mu, logvar = inputs(3, 8, torch.float32, device, requires_grad=False)
    eps = torch.randn(3, 8, device=device)
    for variant in ({"noise": "store"}, {"noise": "recover"}, {"rng": "philox4"}):
        with pytest.raises(ValueError, match="variants draw the noise; eps supplies it"):
            reparameterize_kl_variant(mu, logvar, eps=eps, **variant)
    with pytest.raises(ValueError, match="unknown noise mode 'keep'"):
        reparameterize_kl_variant(mu, logvar, noise="keep")
    with pytest.raises(ValueError, match="seed draws the noise; eps supplies it: give one"):
        reparameterize_kl_variant(mu, logvar, eps=eps, seed=3)
    with pytest.raises(ValueError, match="both be"):
        reparameterize_kl_variant(mu, logvar[:, :2])
    with pytest.raises(TypeError, match="noise"):  # the variants are not public API
        reparameterize_kl(mu, logvar, backend="triton", noise="store")


@pytest.mark.slow
def test_compile_backend_matches_reference(device):
    mu, logvar = inputs(31, 17, torch.float32, device)
    eps = torch.randn(31, 17, device=device)
    z, kl = reparameterize_kl(mu, logvar, eps=eps, backend="compile")
    ref = reparameterize_kl_reference(mu, logvar, eps)
    torch.testing.assert_close(z, ref[0])
    torch.testing.assert_close(kl, ref[1])
    g = torch.autograd.grad(z.sum() + kl.sum(), (mu, logvar))
    want = torch.autograd.grad(ref[0].sum() + ref[1].sum(), (mu, logvar))
    torch.testing.assert_close(g, want)


@pytest.mark.slow
def test_runner_trains_through_triton_like_torch(registry, tmp_path):
    """Same model, data and seed: the two backends draw different noise, so the curves agree
    statistically (final test -ELBO within 3%), not bit for bit."""
    from vaebench.config import RunConfig
    from vaebench.runner import run

    finals = {}
    for kernel in ("torch", "triton"):
        config = resolve_config(
            RunConfig(
                plugins=["mlp"],
                dataset="synthetic",
                dataset_options={"n_train": 256, "n_test": 128},
                epochs=6,
                batch_size=32,
                kernel=kernel,
                iw_samples=4,
                timing_min_time=0.01,
                out=str(tmp_path / kernel),
            ),
            registry,
        )
        (row,) = run(config, registry)
        assert row["status"] == "ok" and row["kernel_backend"] == kernel
        finals[kernel] = row["neg_elbo"]
        assert row["neg_elbo"] < row["neg_elbo_untrained"] - 5
    assert finals["triton"] == pytest.approx(finals["torch"], rel=0.03)


@pytest.mark.gpu_session
@pytest.mark.parametrize("samples", [1, 3])
def test_second_derivatives_match_float64_autograd(device, samples):
    """Issue 24's case: mu also enters the loss directly, and the gradient is taken with
    ``inputs=`` (a once_differentiable error node hanging off detached copies was pruned, and
    the second derivative came out wrong by about 40, silently). The backward under
    ``create_graph`` is differentiable, on the very noise the forward drew."""
    gen = torch.Generator(device=device).manual_seed(5)
    mu = torch.randn(6, 5, generator=gen, device=device, requires_grad=True)
    logvar = (0.5 * torch.randn(6, 5, generator=gen, device=device)).requires_grad_()
    z, kl, log_q = reparameterize_kl(
        mu, logvar, seed=11, samples=samples, backend="triton", return_log_q=True
    )
    eps = ((z.detach() - mu.detach()) / torch.exp(0.5 * logvar.detach())).double()

    def loss(z, kl, log_q, mu):
        return (z**2).sum() + (kl**2).sum() + (mu**3).sum() + (log_q**2).sum()

    (g,) = torch.autograd.grad(loss(z, kl, log_q, mu), mu, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), mu)

    mu64 = mu.detach().double().requires_grad_()
    lv64 = logvar.detach().double().requires_grad_()
    ref = reparameterize_kl_reference(mu64, lv64, eps, return_log_q=True)
    (g64,) = torch.autograd.grad(loss(*ref, mu64), mu64, create_graph=True)
    (h64,) = torch.autograd.grad(g64.sum(), mu64)
    torch.testing.assert_close(g.double(), g64, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(h.double(), h64, rtol=1e-4, atol=1e-4)

    # Hessian-vector products in both inputs, against float64 autograd on the same noise.
    def value(m, lv):
        out = reparameterize_kl(m, lv, seed=11, samples=samples, backend="triton",
                                return_log_q=True)  # fmt: skip
        return loss(*out, m)

    def value64(m, lv):
        return loss(*reparameterize_kl_reference(m, lv, eps, return_log_q=True), m)

    v = (torch.ones_like(mu), torch.full_like(logvar, -0.5))
    _, hvp = torch.autograd.functional.hvp(value, (mu.detach(), logvar.detach()), v)
    _, hvp64 = torch.autograd.functional.hvp(
        value64, (mu64.detach(), lv64.detach()), tuple(t.double() for t in v)
    )
    for got, want in zip(hvp, hvp64, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-3)


@pytest.mark.gpu_session
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_injected_eps_gets_the_gradient_the_reference_gives(device, backend):
    gen = torch.Generator(device=device).manual_seed(2)
    mu = torch.randn(7, 9, generator=gen, device=device, requires_grad=True)
    logvar = torch.randn(7, 9, generator=gen, device=device, requires_grad=True)
    eps = torch.randn(2, 7, 9, generator=gen, device=device, requires_grad=True)
    z, kl, log_q = reparameterize_kl(
        mu, logvar, eps=eps, samples=2, backend=backend, return_log_q=True
    )
    gz = torch.randn(z.shape, generator=gen, device=device)
    glq = torch.randn(log_q.shape, generator=gen, device=device)
    got = torch.autograd.grad((z * gz).sum() + (log_q * glq).sum() + kl.sum(), eps)[0]
    eps64 = eps.detach().double().requires_grad_()
    ref = reparameterize_kl_reference(mu.double(), logvar.double(), eps64, return_log_q=True)
    want = torch.autograd.grad((ref[0] * gz).sum() + (ref[2] * glq).sum(), eps64)[0]
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


BACKENDS_BUT_TORCH = ["triton", pytest.param("compile", marks=pytest.mark.slow)]


@pytest.mark.gpu_session
@pytest.mark.parametrize("backend", BACKENDS_BUT_TORCH)
@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (0, 0)], ids=str)
@pytest.mark.parametrize("samples", [1, 3])
def test_empty_inputs_give_the_same_empty_results_on_every_backend(device, backend, shape, samples):
    """No rows or no columns: empty z, kl = log_q = 0 per row (sums over no columns), empty
    gradients, as the reference gives; Triton launched nothing (next_power_of_2(0) raised)."""
    results = {}
    for name in ("torch", backend):
        mu = torch.zeros(shape, device=device, requires_grad=True)
        logvar = torch.zeros(shape, device=device, requires_grad=True)
        z, kl, log_q = reparameterize_kl(
            mu, logvar, seed=1, samples=samples, backend=name, return_log_q=True
        )
        grads = torch.autograd.grad(z.sum() + kl.sum() + log_q.sum(), (mu, logvar))
        results[name] = (z, kl, log_q, *grads)
    for got, want in zip(results[backend], results["torch"], strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        torch.testing.assert_close(got, want)
    n, d = shape
    assert results["torch"][1].shape == (n,)
    want_log_q = -0.5 * d * math.log(2 * math.pi)  # no columns: 0
    assert torch.all(results[backend][2] == want_log_q)


@pytest.mark.slow
def test_second_derivative_on_the_compile_backend_is_torchs_clear_error(device):
    """AOTAutograd does not differentiate a compiled backward: torch says so in one line,
    rather than returning a wrong number."""
    mu = torch.randn(6, 5, device=device, requires_grad=True)
    logvar = torch.randn(6, 5, device=device, requires_grad=True)
    z, kl = reparameterize_kl(mu, logvar, eps=torch.randn(6, 5, device=device), backend="compile")
    (g,) = torch.autograd.grad((z**2).sum() + (kl**2).sum() + (mu**3).sum(), mu, create_graph=True)
    with pytest.raises(RuntimeError, match="does not currently support double backward"):
        torch.autograd.grad(g.sum(), mu)


@pytest.mark.gpu_session
def test_grids_are_one_axis_so_any_sample_count_and_width_launches(device, monkeypatch):
    """CUDA caps launch axes 1 and 2 at 65,535: K = 70 samples times the row blocks, and
    every (row block, column block) of the backward, go on axis 0."""
    from vaebench.kernels import reparam_kl

    grids = {}
    for name in ("_reparam_kl_fwd", "_reparam_kl_bwd"):
        real = getattr(reparam_kl, name)

        class Recording:
            def __getitem__(self, grid, real=real, name=name):
                grids.setdefault(name, []).append(grid)
                return real[grid]

        monkeypatch.setattr(reparam_kl, name, Recording())
    mu = torch.randn(3, 2, device=device, requires_grad=True)
    logvar = torch.randn(3, 2, device=device, requires_grad=True)
    z, _ = reparameterize_kl(mu, logvar, samples=70, seed=1, backend="triton")
    block_n, _, _ = reparam_kl.tile_sizes(3, 2)
    assert grids["_reparam_kl_fwd"] == [(70 * math.ceil(3 / block_n),)]
    # The backward's blocks, with tiles forced small so that there are several column blocks.
    wide = torch.randn(5, 40, device=device, requires_grad=True)
    z, _ = reparameterize_kl_variant(wide, wide, seed=2, tiles=(2, 8))
    (g,) = torch.autograd.grad(z.sum(), wide)
    assert grids["_reparam_kl_bwd"][-1] == (math.ceil(5 / 2) * math.ceil(40 / 8),)
    z_ref = reparameterize_kl_variant(wide.detach(), wide.detach(), seed=2)[0]
    eps = (z_ref - wide.detach()) / torch.exp(0.5 * wide.detach())
    torch.testing.assert_close(g, 1 + 0.5 * torch.exp(0.5 * wide.detach()) * eps)


@pytest.mark.cuda(devices=2)
def test_launches_on_the_inputs_device_not_the_current_one():
    mu = torch.randn(64, 16, device="cuda:1", requires_grad=True)
    logvar = torch.randn(64, 16, device="cuda:1", requires_grad=True)
    eps = torch.randn(64, 16, device="cuda:1")
    with torch.cuda.device(0):
        z, kl = reparameterize_kl(mu, logvar, eps=eps, backend="triton")
        grads = torch.autograd.grad(z.sum() + kl.sum(), (mu, logvar))
    ref = reparameterize_kl_reference(mu, logvar, eps)
    want = torch.autograd.grad(ref[0].sum() + ref[1].sum(), (mu, logvar))
    assert z.device == mu.device and grads[0].device == mu.device
    torch.testing.assert_close(z, ref[0])
    torch.testing.assert_close(kl, ref[1])
    for got, expected in zip(grads, want, strict=True):
        torch.testing.assert_close(got, expected)


@pytest.mark.slow
@pytest.mark.gpu_session
def test_offsets_past_2_31_elements_are_computed_in_64_bits(device):
    """Strided views into 4 GiB: column 2 of mu and the second sample of grad_z lie past
    element 2^31, where 32-bit offset products wrap (virtual on the CPU: only read elements
    are touched)."""
    big = torch.empty(2**31 + 4096, dtype=torch.float16, device=device)
    gen = torch.Generator(device=device).manual_seed(0)

    def view(shape, stride, offset, values):
        v = big.as_strided(shape, stride, offset)
        v.copy_(values.to(torch.float16))
        return v

    n, d, s = 2, 3, 2
    mu_v = torch.randn(n, d, generator=gen, device=device)
    lv_v = 0.3 * torch.randn(n, d, generator=gen, device=device)
    mu = view((n, d), (1, 2**30), 0, mu_v).requires_grad_()
    logvar = view((n, d), (1, 2**30), 8, lv_v).requires_grad_()
    eps = torch.randn(s, n, d, generator=gen, device=device)
    grad_z = view((s, n, d), (2**31, d, 1), 64, torch.randn(s, n, d, generator=gen, device=device))
    grad_kl = torch.randn(n, generator=gen, device=device)
    z, kl = reparameterize_kl(mu, logvar, eps=eps, samples=s, backend="triton")
    grads = torch.autograd.grad((z, kl), (mu, logvar), (grad_z, grad_kl))

    mu_r = mu.detach().float().clone().requires_grad_()
    lv_r = logvar.detach().float().clone().requires_grad_()
    z_r, kl_r = reparameterize_kl_reference(mu_r, lv_r, eps)
    grads_r = torch.autograd.grad((z_r, kl_r), (mu_r, lv_r), (grad_z.float().clone(), grad_kl))
    torch.testing.assert_close(z.float(), z_r, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(kl, kl_r, atol=1e-3, rtol=1e-3)
    for got, want in zip(grads, grads_r, strict=True):
        torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize(
    "kwargs", [{}, {"return_log_q": True}, {"samples": 3, "return_log_q": True}]
)
def test_backward_allocates_no_zeros_and_copies_no_slices(device, kwargs):
    """One sample returns (N, D) itself (no slice whose backward zero-fills a buffer), and
    unused outputs' gradients stay None (no materialized zeros): the profiler sees neither."""
    mu = torch.randn(8, 4, device=device, requires_grad=True)
    logvar = torch.randn(8, 4, device=device, requires_grad=True)
    out = reparameterize_kl(mu, logvar, seed=1, backend="triton", **kwargs)
    assert type(out[0].grad_fn).__name__ == "ReparamKLBackward"
    with torch.profiler.profile() as prof:
        torch.autograd.grad(out[0].sum(), (mu, logvar))
    ran = {event.name for event in prof.events()}
    assert not ran & {"aten::zeros", "aten::zero_", "aten::zeros_like", "aten::select_backward"}
