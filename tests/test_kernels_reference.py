"""The PyTorch reference of reparameterize_kl against float64 closed forms and autograd."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import distributions as D

from vaebench import kernels
from vaebench.kernels import reparameterize_kl, resolve_backend
from vaebench.kernels.reference import reparameterize_kl_reference


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (33, 65)])
def test_reference_matches_closed_form_in_float64(shape):
    mu, logvar, eps = torch.randn(*shape), torch.randn(*shape) * 2, torch.randn(*shape)
    z, kl, log_q = reparameterize_kl_reference(mu, logvar, eps, return_log_q=True)
    q = D.Normal(mu.double(), (0.5 * logvar.double()).exp())
    torch.testing.assert_close(z.double(), q.loc + q.scale * eps.double(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        kl.double(), D.kl_divergence(q, D.Normal(0.0, 1.0)).sum(-1), rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(log_q.double(), q.log_prob(z.double()).sum(-1), rtol=1e-5, atol=1e-4)
    assert kl.dtype == torch.float32 and z.dtype == mu.dtype


def test_reference_gradcheck():
    mu = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    logvar = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    eps = torch.randn(2, 4, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda m, v: reparameterize_kl_reference(m, v, eps, return_log_q=True), (mu, logvar)
    )


def test_samples_axis_and_seeded_noise():
    mu, logvar = torch.randn(5, 4), torch.randn(5, 4)
    z, kl = reparameterize_kl(mu, logvar, samples=3, seed=7, backend="torch")
    assert z.shape == (3, 5, 4) and kl.shape == (5,)
    again, _ = reparameterize_kl(mu, logvar, samples=3, seed=7, backend="torch")
    other, _ = reparameterize_kl(mu, logvar, samples=3, seed=8, backend="torch")
    assert torch.equal(z, again) and not torch.equal(z, other)
    torch.manual_seed(0)
    first, _ = reparameterize_kl(mu, logvar, backend="torch")
    torch.manual_seed(0)
    second, _ = reparameterize_kl(mu, logvar, backend="torch")
    assert torch.equal(first, second)


def test_injected_eps_is_used():
    mu, logvar, eps = torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, 4)
    z, _ = reparameterize_kl(mu, logvar, eps=eps, backend="torch")
    torch.testing.assert_close(z, mu + (0.5 * logvar).exp() * eps)


def test_extremes_follow_ieee_semantics():
    mu = torch.tensor([[0.0, 1.0], [0.0, float("nan")]])
    logvar = torch.tensor([[-math.inf, 80.0], [math.inf, 0.0]])
    eps = torch.ones(2, 2)
    z, kl = reparameterize_kl_reference(mu, logvar, eps)
    assert z[0, 0] == 0.0 and math.isinf(kl[0]) and kl[0] > 0
    assert math.isinf(z[1, 0]) and math.isnan(z[1, 1]) and math.isnan(kl[1])
    _, kl_inf = reparameterize_kl_reference(
        torch.zeros(1, 1), torch.full((1, 1), math.inf), torch.ones(1, 1)
    )
    assert math.isnan(kl_inf[0]), "inf - inf: documented as NaN"


def test_bad_arguments_are_rejected_clearly():
    mu = torch.randn(3, 2)
    with pytest.raises(ValueError, match="unknown kernel backend 'cuda'"):
        reparameterize_kl(mu, mu, backend="cuda")
    with pytest.raises(ValueError, match=r"eps must have shape \(3, 2\)"):
        reparameterize_kl(mu, mu, eps=torch.randn(2, 2), backend="torch")
    with pytest.raises(ValueError, match="both be"):
        reparameterize_kl(mu, mu[:, :1], backend="torch")
    assert resolve_backend("auto", "cpu") == "torch"


@pytest.mark.parametrize("backend", ["torch", "compile"])
def test_arguments_that_do_not_apply_are_errors_on_every_backend(backend):
    mu = torch.randn(3, 2)
    with pytest.raises(ValueError, match="seed draws the noise; eps supplies it: give one"):
        reparameterize_kl(mu, mu, eps=torch.randn(3, 2), seed=1, backend=backend)
    with pytest.raises(ValueError, match="must share a dtype"):
        reparameterize_kl(mu, mu.double(), backend=backend)
    with pytest.raises(ValueError, match="must be on one device"):
        reparameterize_kl(mu, mu, eps=torch.empty(3, 2, device="meta"), backend=backend)
    with pytest.raises(ValueError, match="samples must be >= 1"):
        reparameterize_kl(mu, mu, samples=0, backend=backend)
    for internal in ({"noise": "store"}, {"rng": "philox4"}, {"tiles": (4, 4)}):
        with pytest.raises(TypeError, match="unexpected keyword"):  # internal to the benchmarks
            reparameterize_kl(mu, mu, backend=backend, **internal)


def test_importing_the_kernels_package_does_not_import_torch():
    """``vaebench --help`` reads BACKENDS from here; torch would cost seconds of start-up."""
    probe = (
        "import sys, vaebench.kernels as k\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert k.BACKENDS == ('auto', 'torch', 'compile', 'triton')\n"
        "assert isinstance(k.triton_available(), bool) and 'torch' not in sys.modules\n"
        "assert {'reparameterize_kl', 'resolve_backend'} <= set(dir(k))\n"
        "from vaebench.kernels import reparameterize_kl, resolve_backend\n"
        "assert 'torch' in sys.modules and resolve_backend('auto', 'cpu') == 'torch'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        kernels.nope  # noqa: B018
