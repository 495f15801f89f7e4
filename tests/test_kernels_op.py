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
from vaebench.kernels import reparameterize_kl
from vaebench.kernels.reference import reparameterize_kl_reference
from vaebench.kernels.reparam_kl import (
    KEY_RANGE,
    draw_key,
    reparam_kl_op,
    reparameterize_kl_variant,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def inputs(n, d, dtype=torch.float32):
    gen = torch.Generator().manual_seed(n * 1000 + d)
    mu = torch.randn(n, d, generator=gen).to(DEVICE, dtype).requires_grad_()
    logvar = (0.7 * torch.randn(n, d, generator=gen)).to(DEVICE, dtype).requires_grad_()
    return mu, logvar


@pytest.mark.parametrize(
    "samples, log_q, injected, variant",
    [
        (1, False, False, ("regenerate", "philox", False, 0, 0)),
        (3, True, False, ("regenerate", "philox", False, 0, 0)),
        (1, True, True, ("regenerate", "philox", False, 0, 0)),
        (2, True, False, ("store", "philox", False, 0, 0)),
        (2, False, False, ("recover", "philox4", False, 0, 0)),
        (1, True, False, ("regenerate", "philox", False, 4, 8)),
    ],
)
def test_custom_op_passes_opcheck(samples, log_q, injected, variant):
    mu, logvar = inputs(5, 9)
    eps = torch.randn(samples, 5, 9, device=DEVICE) if injected else None
    key = draw_key(mu.device, 11)
    torch.library.opcheck(reparam_kl_op, (mu, logvar, eps, key, samples, log_q, *variant))


def recovered_noise(z, mu, logvar):
    return (z.detach().double() - mu.detach().double()) / torch.exp(0.5 * logvar.detach().double())


@pytest.mark.slow
def test_fullgraph_compile_of_a_vae_loss_traces_the_op_and_draws_fresh_noise():
    torch.manual_seed(0)
    encoder = torch.nn.Linear(6, 2 * 4).to(DEVICE)
    decoder = torch.nn.Linear(4, 6).to(DEVICE)

    def loss(x):
        mu, logvar = encoder(x).chunk(2, dim=-1)
        z, kl = reparameterize_kl(mu, logvar, backend="triton")
        return ((decoder(z) - x) ** 2).sum(-1).mean() + kl.mean(), z, mu, logvar

    x = torch.randn(5, 6, device=DEVICE)
    explained = torch._dynamo.explain(loss)(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(loss, fullgraph=True)
    value, z, mu, logvar = compiled(x)
    params = [*encoder.parameters(), *decoder.parameters()]
    grads = torch.autograd.grad(value, params)

    # The same loss in eager PyTorch with the noise the compiled call drew: equal values and
    # gradients, so the traced op's forward and backward are the kernel's.
    eps = recovered_noise(z, mu, logvar).float()
    mu_e, logvar_e = encoder(x).chunk(2, dim=-1)
    z_e, kl_e = reparameterize_kl_reference(mu_e, logvar_e, eps)
    want = ((decoder(z_e) - x) ** 2).sum(-1).mean() + kl_e.mean()
    torch.testing.assert_close(value, want, rtol=1e-5, atol=1e-5)
    for got, expected in zip(grads, torch.autograd.grad(want, params), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)

    again = compiled(x)[1]
    assert not torch.isclose(again, z).any(), "each compiled call must draw fresh noise"
    torch.manual_seed(5)
    first = compiled(x)[1]
    torch.manual_seed(5)
    assert torch.equal(compiled(x)[1], first), "torch.manual_seed fixes the compiled noise too"


def test_second_derivative_through_the_op_is_a_clear_error():
    mu, logvar = inputs(4, 3)
    z, kl, _, _ = reparam_kl_op(
        mu, logvar, None, draw_key(mu.device, 3), 1, False, "regenerate", "philox", False, 0, 0
    )
    (grad_mu,) = torch.autograd.grad(z.square().sum() + kl.sum(), mu, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad_mu.sum().backward()


def test_seed_is_a_64_bit_key_so_high_bits_change_the_noise():
    mu, logvar = inputs(16, 8)
    low = reparameterize_kl(mu, logvar, seed=5, backend="triton")[0]
    high = reparameterize_kl(mu, logvar, seed=5 + 2**40, backend="triton")[0]
    assert not torch.isclose(low, high).any(), "a 32-bit seed would ignore the high bits"
    with pytest.raises(ValueError, match="64 bits"):
        reparameterize_kl(mu, logvar, seed=2**64, backend="triton")


def test_drawn_keys_are_device_tensors_with_62_random_bits():
    torch.manual_seed(0)
    keys = torch.cat([draw_key(torch.device(DEVICE), None) for _ in range(4000)])
    assert keys.dtype == torch.int64 and keys.device.type == DEVICE
    assert keys.unique().numel() == keys.numel()
    assert (keys >= 0).all() and (keys < KEY_RANGE).all()
    # Each of the 62 bits is set in about half of the keys: no truncation to 31 or 32 bits.
    bits = torch.stack([(keys >> b) & 1 for b in range(62)]).double().mean(1)
    assert ((bits - 0.5).abs() < 0.05).all(), bits


def test_a_call_never_reads_a_value_back_to_the_host(monkeypatch):
    """No ``.item()``, ``int(tensor)`` or ``.tolist()`` in the forward or backward: each would
    be a host sync on CUDA and a graph break under compile."""
    mu, logvar = inputs(8, 5)

    def refuse(*args, **kwargs):
        raise AssertionError("a host read-back")

    for name in ("item", "tolist", "__int__", "__index__", "__bool__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    z, kl, log_q = reparameterize_kl(mu, logvar, samples=2, return_log_q=True, backend="triton")
    torch.autograd.grad((z.sum() + kl.sum() + log_q.sum(),), (mu, logvar))


def test_fast_math_refuses_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    mu, logvar = inputs(2, 4)
    with pytest.raises(ValueError, match=r"fast_math .* interpreter cannot run"):
        reparameterize_kl_variant(mu, logvar, fast_math=True)
    with pytest.raises(ValueError, match="eps supplies it"):
        reparameterize_kl_variant(mu, logvar, fast_math=True, eps=torch.randn(2, 4, device=DEVICE))


@needs_cuda
@pytest.mark.parametrize("rng", ["philox", "philox4"])
def test_fast_math_draws_the_same_normals_as_exact_math_tails_included(rng):
    n, d = 4096, 256  # 1M elements
    mu = torch.zeros(n, d, device="cuda")
    logvar = torch.zeros(n, d, device="cuda")
    exact = reparameterize_kl_variant(mu, logvar, seed=77, rng=rng)[0].double()
    fast = reparameterize_kl_variant(mu, logvar, seed=77, rng=rng, fast_math=True)[0].double()
    # The same uniforms: the approximations move each normal by ~1e-6, in the tails too.
    tails = exact.abs() > 4
    assert tails.sum() > 20
    torch.testing.assert_close(fast, exact, rtol=0, atol=2e-5)
    flat = fast.flatten().cpu()
    assert abs(flat.mean().item()) < 4 / flat.numel() ** 0.5
    assert abs(flat.var().item() - 1) < 0.005
    assert stats.kstest(flat[:200_000].numpy(), "norm").pvalue > 1e-3
    assert flat.abs().max() <= 5.7  # sqrt(-2 ln 1e-7): Box-Muller's clamp of u1


@needs_cuda
def test_fast_math_backward_regenerates_its_own_noise():
    mu, logvar = inputs(64, 40)
    mu, logvar = mu.cuda().detach().requires_grad_(), logvar.cuda().detach().requires_grad_()
    z, _ = reparameterize_kl_variant(mu, logvar, seed=9, samples=3, fast_math=True)
    eps = recovered_noise(z, mu, logvar)
    g_lv = torch.autograd.grad(z.sum(), logvar)[0]
    want = (0.5 * torch.exp(0.5 * logvar.detach().double()) * eps).sum(0)
    torch.testing.assert_close(g_lv.double(), want, rtol=1e-4, atol=1e-5)


@needs_cuda
def test_cuda_graph_replays_draw_fresh_noise_and_matching_gradients():
    """A whole forward + backward captured once: each replay draws a new key on the device,
    so z changes, and the backward in the same replay regenerates that replay's noise."""
    mu, logvar = inputs(256, 20)
    mu, logvar = mu.cuda().detach().requires_grad_(), logvar.cuda().detach().requires_grad_()
    grad_z = torch.randn(256, 20, device="cuda")

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
