"""The kernel as a graph citizen: the custom op, its device-side key, compile and graphs.

``torch.library.opcheck`` checks the op's schema, fake (meta) kernel, autograd registration
and that AOT dispatch reproduces eager outputs and gradients. ``torch.compile(fullgraph=True)``
of a VAE loss must trace with no graph break, which a host ``.item()`` on the seed would cause.
The CUDA-only tests (CUDA-graph replay, fast-math numerics) run in the GPU session.
"""

from __future__ import annotations

import pytest
import torch
from scipy import stats

pytest.importorskip("triton")
from benchmarks.kernel_variants import reparameterize_kl_variant
from vaebench.kernels import reparameterize_kl
from vaebench.kernels.reference import reparameterize_kl_reference
from vaebench.kernels.reparam_kl import KEY_RANGE, draw_key, reparam_kl_op


def inputs(n, d, device, dtype=torch.float32):
    gen = torch.Generator(device=device).manual_seed(n * 1000 + d)
    mu = torch.randn(n, d, generator=gen, device=device).to(dtype).requires_grad_()
    logvar = (0.7 * torch.randn(n, d, generator=gen, device=device)).to(dtype).requires_grad_()
    return mu, logvar


@pytest.mark.gpu_session
@pytest.mark.parametrize(
    "samples, log_q, injected", [(1, False, False), (3, True, False), (1, True, True)]
)
def test_custom_op_passes_opcheck(device, samples, log_q, injected):
    mu, logvar = inputs(5, 9, device)
    eps = torch.randn(samples, 5, 9, device=device) if injected else None
    key = draw_key(mu.device, 11)
    torch.library.opcheck(reparam_kl_op, (mu, logvar, eps, key, samples, log_q))


def test_the_op_takes_what_a_user_passes_and_nothing_else():
    """The kernel variants are benchmark questions (``benchmarks.kernel_variants``), not
    arguments of the production op."""
    schema = torch.ops.vaebench.reparam_kl.default._schema
    assert [a.name for a in schema.arguments] == [
        "mu", "logvar", "eps", "key", "samples", "return_log_q"
    ]  # fmt: skip


def recovered_noise(z, mu, logvar):
    return (z.detach().double() - mu.detach().double()) / torch.exp(0.5 * logvar.detach().double())


@pytest.mark.slow
@pytest.mark.gpu_session
@pytest.mark.parametrize(
    "mode", ["default", pytest.param("reduce-overhead", marks=pytest.mark.cuda)]
)
def test_fullgraph_compile_of_a_vae_loss_traces_the_op_and_draws_fresh_noise(device, mode):
    """``reduce-overhead`` replays the compiled graph as a CUDA graph: the key drawn inside
    it must still change every call, and outputs are cloned before the next replay reuses
    their memory."""
    torch.manual_seed(0)
    encoder = torch.nn.Linear(6, 2 * 4).to(device)
    decoder = torch.nn.Linear(4, 6).to(device)

    def loss(x):
        mu, logvar = encoder(x).chunk(2, dim=-1)
        z, kl = reparameterize_kl(mu, logvar, backend="triton")
        return ((decoder(z) - x) ** 2).sum(-1).mean() + kl.mean(), z, mu, logvar

    x = torch.randn(5, 6, device=device)
    explained = torch._dynamo.explain(loss)(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(loss, fullgraph=True, mode=mode)
    value, z, mu, logvar = compiled(x)
    params = [*encoder.parameters(), *decoder.parameters()]
    grads = torch.autograd.grad(value, params)
    value, z, mu, logvar = (t.detach().clone() for t in (value, z, mu, logvar))

    # The same loss in eager PyTorch with the noise the compiled call drew: equal values and
    # gradients, so the traced op's forward and backward are the kernel's.
    eps = recovered_noise(z, mu, logvar).float()
    mu_e, logvar_e = encoder(x).chunk(2, dim=-1)
    z_e, kl_e = reparameterize_kl_reference(mu_e, logvar_e, eps)
    want = ((decoder(z_e) - x) ** 2).sum(-1).mean() + kl_e.mean()
    torch.testing.assert_close(value, want, rtol=1e-5, atol=1e-5)
    for got, expected in zip(grads, torch.autograd.grad(want, params), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)

    again = compiled(x)[1].detach().clone()
    assert not torch.isclose(again, z).any(), "each compiled call must draw fresh noise"
    torch.manual_seed(5)
    first = compiled(x)[1].detach().clone()
    torch.manual_seed(5)
    assert torch.equal(compiled(x)[1], first), "torch.manual_seed fixes the compiled noise too"


@pytest.mark.gpu_session
def test_second_derivative_through_the_op_matches_the_reference(device):
    mu, logvar = inputs(4, 3, device)
    z, kl, _ = reparam_kl_op(mu, logvar, None, draw_key(mu.device, 3), 1, False)
    (grad_mu,) = torch.autograd.grad(z.square().sum() + kl.square().sum(), mu, create_graph=True)
    (h,) = torch.autograd.grad(grad_mu.sum(), mu)
    eps = recovered_noise(z, mu, logvar)
    mu64 = mu.detach().double().requires_grad_()
    z64, kl64 = reparameterize_kl_reference(mu64, logvar.detach().double(), eps)
    (g64,) = torch.autograd.grad(z64.square().sum() + kl64.square().sum(), mu64, create_graph=True)
    torch.testing.assert_close(h.double(), torch.autograd.grad(g64.sum(), mu64)[0])


def test_seed_is_a_64_bit_key_so_high_bits_change_the_noise(device):
    mu, logvar = inputs(16, 8, device)
    low = reparameterize_kl(mu, logvar, seed=5, backend="triton")[0]
    high = reparameterize_kl(mu, logvar, seed=5 + 2**40, backend="triton")[0]
    assert not torch.isclose(low, high).any(), "a 32-bit seed would ignore the high bits"
    with pytest.raises(ValueError, match="64 bits"):
        reparameterize_kl(mu, logvar, seed=2**64, backend="triton")


def test_drawn_keys_are_device_tensors_with_62_random_bits(device):
    torch.manual_seed(0)
    keys = torch.cat([draw_key(device, None) for _ in range(4000)])
    assert keys.dtype == torch.int64 and keys.device == device
    assert keys.unique().numel() == keys.numel()
    assert (keys >= 0).all() and (keys < KEY_RANGE).all()
    # Each of the 62 bits is set in about half of the keys: no truncation to 31 or 32 bits.
    bits = torch.stack([(keys >> b) & 1 for b in range(62)]).double().mean(1)
    assert ((bits - 0.5).abs() < 0.05).all(), bits


@pytest.mark.gpu_session
def test_a_call_never_reads_a_value_back_to_the_host(device, monkeypatch):
    """No ``.item()``, ``int(tensor)`` or ``.tolist()`` in the forward or backward: each would
    be a host sync on CUDA and a graph break under compile."""
    mu, logvar = inputs(8, 5, device)

    def refuse(*args, **kwargs):
        raise AssertionError("a host read-back")

    for name in ("item", "tolist", "__int__", "__index__", "__bool__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    z, kl, log_q = reparameterize_kl(mu, logvar, samples=2, return_log_q=True, backend="triton")
    torch.autograd.grad((z.sum() + kl.sum() + log_q.sum(),), (mu, logvar))


def test_fast_math_refuses_the_interpreter(device, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    mu, logvar = inputs(2, 4, device)
    with pytest.raises(ValueError, match=r"fast_math .* interpreter cannot run"):
        reparameterize_kl_variant(mu, logvar, fast_math=True)
    with pytest.raises(ValueError, match="eps supplies it"):
        reparameterize_kl_variant(mu, logvar, fast_math=True, eps=torch.randn(2, 4, device=device))


@pytest.mark.cuda
@pytest.mark.parametrize("rng", ["philox", "philox4"])
def test_fast_math_draws_the_same_normals_as_exact_math_tails_included(device, rng):
    n, d = 4096, 256  # 1M elements
    mu = torch.zeros(n, d, device=device)
    logvar = torch.zeros(n, d, device=device)
    exact = reparameterize_kl_variant(mu, logvar, seed=77, rng=rng)[0].double()
    fast = reparameterize_kl_variant(mu, logvar, seed=77, rng=rng, fast_math=True)[0].double()
    # The same uniforms and radius: sin.approx and cos.approx move each normal by at most
    # r * 2^-20.9 <= 3.2e-6 (see _box_muller), in the tails too.
    tails = exact.abs() > 4
    assert tails.sum() > 20
    torch.testing.assert_close(fast, exact, rtol=0, atol=4e-6)
    assert torch.isfinite(fast).all()
    flat = fast.flatten().cpu()
    assert abs(flat.mean().item()) < 4 / flat.numel() ** 0.5
    assert abs(flat.var().item() - 1) < 0.005
    assert stats.kstest(flat[:200_000].numpy(), "norm").pvalue > 1e-3
    assert flat.abs().max() <= 5.7  # sqrt(-2 ln 1e-7): Box-Muller's clamp of u1


@pytest.mark.cuda
def test_fast_math_backward_regenerates_its_own_noise(device):
    mu, logvar = inputs(64, 40, device)
    z, _ = reparameterize_kl_variant(mu, logvar, seed=9, samples=3, fast_math=True)
    eps = recovered_noise(z, mu, logvar)
    g_lv = torch.autograd.grad(z.sum(), logvar)[0]
    want = (0.5 * torch.exp(0.5 * logvar.detach().double()) * eps).sum(0)
    torch.testing.assert_close(g_lv.double(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
def test_cuda_graph_replays_draw_fresh_noise_and_matching_gradients(device):
    """A whole forward + backward captured once: each replay draws a new key on the device,
    so z changes, and the backward in the same replay regenerates that replay's noise."""
    mu, logvar = inputs(256, 20, device)
    grad_z = torch.randn(256, 20, device=device)

    def step():
        z, kl = reparameterize_kl(mu, logvar, backend="triton")
        _, g_lv = torch.autograd.grad((z, kl), (mu, logvar), (grad_z, torch.ones_like(kl)))
        return z, g_lv

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            step()  # warm-up: compile and autotune outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        z_out, g_lv_out = step()
    draws = []
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        z, g_lv = z_out.clone(), g_lv_out.clone()
        eps = recovered_noise(z, mu, logvar)
        want = grad_z.double() * 0.5 * torch.exp(0.5 * logvar.detach().double()) * eps
        want += 0.5 * (torch.exp(logvar.detach().double()) - 1)
        torch.testing.assert_close(g_lv.double(), want, rtol=1e-4, atol=1e-5)
        draws.append(z)
    assert (
        not torch.isclose(draws[0], draws[1]).any() and not torch.isclose(draws[1], draws[2]).any()
    )
