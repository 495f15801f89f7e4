"""The discretized logistic mixture likelihood against independent references.

The reference evaluates the logistic CDF plainly, one value at a time, in 100-digit
``mpmath`` arithmetic (so far tails and tiny scales neither underflow nor cancel); the
parameter layout it reads is the one the module documents.
"""

from __future__ import annotations

import itertools
import math

import mpmath
import pytest
import torch

from vaebench.errors import ConfigError
from vaebench.model import ModelSpec, build_model
from vaebench.plugins.dlogistic import DiscretizedLogisticMixture


def random_params(lik, batch, shape, log_scales=(-3.0, 1.0), generator=None):
    """Decoder outputs with spread-out means and log-scales drawn from ``log_scales``:
    an interval (low, high) or a tuple of values to pick from."""
    g = generator or torch.Generator().manual_seed(0)
    params = torch.randn(batch, *lik.param_shape(shape), generator=g, dtype=torch.float64)
    m, c = lik.mixtures, lik.channels
    view = params.view(batch, lik.per_pixel(c), -1)
    view[:, :m] *= 2.0
    view[:, m : m + c * m] *= 1.5
    ls = view[:, m + c * m : m + 2 * c * m]
    if len(log_scales) == 2:
        ls.uniform_(*log_scales, generator=g)
    else:
        choice = torch.randint(len(log_scales), ls.shape, generator=g)
        ls.copy_(torch.tensor(log_scales, dtype=torch.float64)[choice])
    view[:, m + 2 * c * m :] *= 2.0
    return params


def random_x(batch, shape, bins, generator=None):
    """Values on the bin grid, with the edge bins 0 and bins - 1 always present."""
    g = generator or torch.Generator().manual_seed(1)
    k = torch.randint(bins, (batch, *shape), generator=g)
    flat = k.view(batch, -1)
    flat[0, 0], flat[-1, -1] = 0, bins - 1
    if flat.shape[1] > 2:
        flat[0, 1], flat[-1, 0] = bins - 1, 0
    return k.double() / (bins - 1)


def reference_log_prob(params, x, shape, mixtures, bins):
    """log p(x) per example from the plain logistic CDF, in 100-digit arithmetic."""
    channels = 1 if len(shape) == 1 else shape[0]
    m_count = mixtures
    per_pixel = mixtures * (1 + 2 * channels + (3 if channels == 3 else 0))
    batch = params.shape[0]
    p = params.double().reshape(batch, per_pixel, -1).tolist()
    xs = x.double().reshape(batch, channels, -1).tolist()
    top, half = bins - 1, mpmath.mpf(1) / (bins - 1)
    out = []
    with mpmath.workdps(100):
        for n in range(batch):
            total = mpmath.mpf(0)
            for j in range(len(p[n][0])):
                ks = [round(xs[n][ch][j] * top) for ch in range(channels)]
                cs = [2 * mpmath.mpf(k) / top - 1 for k in ks]
                logits = [mpmath.mpf(p[n][i][j]) for i in range(m_count)]
                norm = sum(mpmath.exp(v) for v in logits)
                pixel = mpmath.mpf(0)
                for m in range(m_count):
                    prob = mpmath.exp(logits[m]) / norm
                    for ch in range(channels):
                        mu = mpmath.mpf(p[n][m_count + ch * m_count + m][j])
                        ls = max(p[n][m_count + (channels + ch) * m_count + m][j], -7.0)
                        s = mpmath.exp(mpmath.mpf(ls))
                        if channels == 3:
                            a, b, g = (
                                mpmath.tanh(p[n][m_count + 6 * m_count + i * m_count + m][j])
                                for i in range(3)
                            )
                            mu += [0, a * cs[0], b * cs[0] + g * cs[1]][ch]
                        c = cs[ch]
                        lo = c - half if ks[ch] > 0 else -mpmath.inf
                        hi = c + half if ks[ch] < top else mpmath.inf
                        prob *= logistic_mass(lo, hi, mu, s)
                    pixel += prob
                total += mpmath.log(pixel)
            out.append(float(total))
    return torch.tensor(out, dtype=torch.float64)


def logistic_mass(lo, hi, mu, s):
    """F(hi) - F(lo) for the logistic CDF F(t) = 1 / (1 + exp(-(t - mu) / s)); above the
    mean as the difference of survival functions, so no digits cancel in the right tail."""

    def cdf(t):
        if t == -mpmath.inf:
            return mpmath.mpf(0)
        if t == mpmath.inf:
            return mpmath.mpf(1)
        return 1 / (1 + mpmath.exp(-(t - mu) / s))

    def survival(t):
        return 1 - cdf(t) if abs(t) == mpmath.inf else 1 / (1 + mpmath.exp((t - mu) / s))

    return survival(lo) - survival(hi) if lo >= mu else cdf(hi) - cdf(lo)


def all_values(channels, bins):
    """Every joint value of one pixel, as a batch of (channels, 1, 1) images."""
    grid = list(itertools.product(range(bins), repeat=channels))
    return torch.tensor(grid, dtype=torch.float64).view(-1, channels, 1, 1) / (bins - 1)


# --- shapes and options -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "mixtures", "expected"),
    [
        ((3, 8, 8), 10, (100, 8, 8)),
        ((1, 28, 28), 10, (30, 28, 28)),
        ((4, 5, 5), 2, (18, 5, 5)),
        ((2, 1, 9), 3, (15, 1, 9)),
        ((12,), 3, (108,)),
    ],
)
def test_param_shape(shape, mixtures, expected):
    lik = DiscretizedLogisticMixture(shape, mixtures=mixtures)
    assert lik.param_shape(shape) == expected
    params = torch.randn(2, *expected)
    assert lik.log_prob(params, torch.rand(2, *shape)).shape == (2,)
    mean = lik.mean(params)
    assert mean.shape == (2, *shape) and mean.min() >= 0 and mean.max() <= 1


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("mixtures", 0),
        ("mixtures", -3),
        ("mixtures", 2.5),
        ("mixtures", "ten"),
        ("mixtures", True),
        ("bins", 1),
        ("bins", 7.5),
        ("bins", float("nan")),
        ("bins", None),
    ],
)
def test_bad_options_raise_naming_the_option(option, value):
    with pytest.raises(ValueError, match=f"dlogistic: {option} must be an integer"):
        DiscretizedLogisticMixture((3, 4, 4), **{option: value})


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="input shape"):
        DiscretizedLogisticMixture(())
    lik = DiscretizedLogisticMixture((3, 2, 2), mixtures=2)
    with pytest.raises(ValueError, match="expected"):
        lik.log_prob(torch.zeros(2, 3, 2, 2), torch.zeros(2, 3, 2, 2))
    with pytest.raises(ValueError, match="multiple"):
        lik.log_prob(torch.zeros(3, 20, 2, 2), torch.zeros(2, 3, 2, 2))


# --- the probabilities --------------------------------------------------------------------


@pytest.mark.parametrize("bins", [2, 16, 256])
@pytest.mark.parametrize("mixtures", [1, 10])
@pytest.mark.parametrize("log_scales", [(-3.0, 1.0), (-7.0, -7.0, 0.0, 4.0)])
def test_grey_pixel_sums_to_one(bins, mixtures, log_scales):
    lik = DiscretizedLogisticMixture((1, 1, 1), mixtures=mixtures, bins=bins)
    g = torch.Generator().manual_seed(bins * 100 + mixtures)
    params = random_params(lik, 3, (1, 1, 1), log_scales, g)
    for row in params:
        x = all_values(1, bins)
        log_p = lik.log_prob(row.expand(len(x), *row.shape), x)
        assert log_p.dtype == torch.float64
        torch.testing.assert_close(log_p.exp().sum().item(), 1.0, atol=1e-9, rtol=0)
        log_p32 = lik.log_prob(row.float().expand(len(x), *row.shape), x.float())
        assert log_p32.dtype == torch.float32
        torch.testing.assert_close(log_p32.double().exp().sum().item(), 1.0, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("channels", "bins", "mixtures"), [(3, 8, 1), (3, 16, 4), (2, 16, 3), (4, 6, 2)]
)
def test_joint_pixel_sums_to_one(channels, bins, mixtures):
    """Over all bins^C joint values of one pixel; for RGB the coupling is in play."""
    shape = (channels, 1, 1)
    lik = DiscretizedLogisticMixture(shape, mixtures=mixtures, bins=bins)
    params = random_params(lik, 3, shape, (-4.0, 0.5), torch.Generator().manual_seed(channels))
    x = all_values(channels, bins)
    for row in params:
        log_p = lik.log_prob(row.expand(len(x), *row.shape), x)
        torch.testing.assert_close(log_p.exp().sum().item(), 1.0, atol=1e-9, rtol=0)


def test_flat_values_sum_to_one():
    lik = DiscretizedLogisticMixture((1,), mixtures=4, bins=32)
    params = random_params(lik, 1, (1,))
    x = torch.arange(32, dtype=torch.float64).view(32, 1) / 31
    log_p = lik.log_prob(params.expand(32, -1), x)
    torch.testing.assert_close(log_p.exp().sum().item(), 1.0, atol=1e-9, rtol=0)


CASES = [
    ((1, 2, 2), 3, 256),
    ((3, 2, 2), 2, 256),
    ((3, 1, 3), 1, 16),
    ((4, 2, 1), 2, 32),
    ((2, 3), 2, 8),
    ((5,), 3, 256),
]
EXTREME = (-10.0, -7.0, -3.0, 0.0, 3.0, 12.0, 30.0, 90.0, 150.0)


@pytest.mark.parametrize(("shape", "mixtures", "bins"), CASES)
@pytest.mark.parametrize("regime", ["moderate", "extreme"])
def test_matches_plain_logistic_cdf(shape, mixtures, bins, regime):
    lik = DiscretizedLogisticMixture(shape, mixtures=mixtures, bins=bins)
    g = torch.Generator().manual_seed(hash((shape, mixtures, bins)) % 1000)
    scales = (-3.0, 1.0) if regime == "moderate" else EXTREME
    params = random_params(lik, 3, shape, scales, g)
    if regime == "extreme":  # means far outside the data range too
        m, c = mixtures, lik.channels
        params.view(3, lik.per_pixel(c), -1)[0, m : m + c * m] *= 30.0
    x = random_x(3, shape, bins, g)
    expected = reference_log_prob(params, x, shape, mixtures, bins)
    got64 = lik.log_prob(params, x)
    torch.testing.assert_close(got64, expected, rtol=1e-10, atol=1e-9)
    got32 = lik.log_prob(params.float(), x.float())
    assert got32.dtype == torch.float32 and got32.shape == (3,)
    torch.testing.assert_close(got32.double(), expected, rtol=2e-5, atol=2e-3)


def test_importance_samples_broadcast_x_sample_major():
    """params (K * B) against x (B), as ``VAE.log_importance_weights`` may hand them over."""
    shape = (3, 2, 2)
    lik = DiscretizedLogisticMixture(shape, mixtures=2, bins=256)
    params = random_params(lik, 4 * 3, shape)
    x = random_x(3, shape, 256)
    x_rep = x.unsqueeze(0).expand(4, *x.shape).reshape(12, *shape)  # what the model builds
    torch.testing.assert_close(lik.log_prob(params, x), lik.log_prob(params, x_rep))
    torch.testing.assert_close(
        lik.log_prob(params, x)[5], reference_log_prob(params[5:6], x[2:3], shape, 2, 256)[0]
    )
    single = lik.log_prob(params, x[:1])
    torch.testing.assert_close(single, lik.log_prob(params, x[:1].expand(12, *shape)))


# --- the mean -----------------------------------------------------------------------------


def discrete_mean(lik, row, channels, bins):
    """E[x] of one pixel by summing over every joint value: (channels,)."""
    x = all_values(channels, bins)
    probs = lik.log_prob(row.expand(len(x), *row.shape), x).exp()
    return (probs[:, None] * x.view(len(x), channels)).sum(0)


@pytest.mark.parametrize(
    "log_scales", [(-4.0, 2.0), (-7.0, -4.0, 0.0, 5.0, 30.0, 90.0, 200.0)], ids=["broad", "extreme"]
)
def test_grey_mean_is_the_discrete_mean(log_scales):
    """Exact up to the rounding to bins, edge tails included, at any scale."""
    lik = DiscretizedLogisticMixture((1, 1, 1), mixtures=3, bins=256)
    params = random_params(lik, 8, (1, 1, 1), log_scales, torch.Generator().manual_seed(3))
    params[:, 3:6] *= 2.0  # many means outside [-1, 1]: the tails matter
    for row in params:
        expected = discrete_mean(lik, row, 1, 256)
        torch.testing.assert_close(lik.mean(row[None]).view(1), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(
            lik.mean(row[None].float()).double().view(1), expected, atol=1e-5, rtol=0
        )
    far = torch.full((1, 9, 1, 1), 50.0)
    far[:, 6:] = 0.0  # unit scales far above the range: all mass in the top bin
    assert lik.mean(far).item() == 1.0 and lik.mean(-far).item() == 0.0


def test_independent_channels_mean_is_the_discrete_mean():
    lik = DiscretizedLogisticMixture((2, 1, 1), mixtures=2, bins=64)
    params = random_params(lik, 4, (2, 1, 1), (-2.0, 1.0), torch.Generator().manual_seed(4))
    for row in params:
        torch.testing.assert_close(
            lik.mean(row[None]).view(2), discrete_mean(lik, row, 2, 64), atol=2e-4, rtol=0
        )


def test_rgb_mean_is_the_discrete_mean_while_unclipped():
    """The coupling is linear, so the mean is exact while the channels stay inside [-1, 1]."""
    lik = DiscretizedLogisticMixture((3, 1, 1), mixtures=2, bins=32)
    params = random_params(lik, 3, (3, 1, 1), (-3.0, -2.5), torch.Generator().manual_seed(5))
    params[:, 2:8] *= 0.2  # means near the middle
    for row in params:  # the tolerance allows for the rounding to 32 bins
        torch.testing.assert_close(
            lik.mean(row[None]).view(3), discrete_mean(lik, row, 3, 32), atol=5e-3, rtol=0
        )


# --- gradients and training ---------------------------------------------------------------


@pytest.mark.parametrize(("shape", "bins"), [((3, 1, 2), 16), ((3,), 8)])
def test_gradcheck(shape, bins):
    lik = DiscretizedLogisticMixture(shape, mixtures=2, bins=bins)
    params = random_params(lik, 1, shape, (-2.0, 0.5)).requires_grad_()
    x = random_x(1, shape, bins)
    assert torch.autograd.gradcheck(lambda p: lik.log_prob(p, x), (params,))
    assert torch.autograd.gradcheck(lambda p: lik.mean(p), (params.detach() * 0.3).requires_grad_())


def test_gradients_finite_and_nonzero_at_extremes():
    shape = (3, 2, 2)
    lik = DiscretizedLogisticMixture(shape, mixtures=3)
    params = random_params(lik, 4, shape, (-20.0, -7.0, 0.0, 50.0, 100.0)).float()
    params.view(4, 30, 4)[:, 3:12] *= 40.0
    params.requires_grad_()
    lik.log_prob(params, random_x(4, shape, 256).float()).sum().backward()
    grad = params.grad.view(4, 30, 4)
    assert torch.isfinite(grad).all()
    for block in (slice(0, 3), slice(3, 12), slice(12, 21), slice(21, 30)):
        assert grad[:, block].abs().sum() > 0, block


def test_a_few_adam_steps_fit_a_fixed_rgb_batch():
    shape = (3, 2, 2)
    lik = DiscretizedLogisticMixture(shape, mixtures=2)
    x = random_x(4, shape, 256).float()
    params = (0.1 * torch.randn(4, *lik.param_shape(shape))).requires_grad_()
    opt = torch.optim.Adam([params], lr=0.1)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = -lik.log_prob(params, x).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.4 * losses[0], (losses[0], losses[-1])
    torch.testing.assert_close(lik.mean(params.detach()), x, atol=0.05, rtol=0)


# --- through the registry and the model ---------------------------------------------------


def test_registered_and_builds_with_options(registry):
    component = registry.get("likelihood", "dlogistic")
    lik = component.factory((3, 8, 8), mixtures=3)
    assert isinstance(lik, DiscretizedLogisticMixture)
    assert lik.mixtures == 3 and lik.bins == 256 and lik.param_shape((3, 8, 8)) == (30, 8, 8)
    spec = ModelSpec("mlp", "normal", "dlogistic", (3, 8, 8), 4, {}, {"mixtures": 0})
    with pytest.raises(ConfigError, match="mixtures must be an integer >= 1"):
        build_model(registry, spec, kernel_backend="torch")


@pytest.mark.parametrize("family", ["mlp", "conv"])
def test_vae_computes_loss_and_importance_weights(registry, family):
    shape = (3, 8, 8)
    spec = ModelSpec(family, "normal", "dlogistic", shape, 4, {}, {"mixtures": 3, "bins": 32})
    model = build_model(registry, spec, kernel_backend="torch")
    assert model.param_shape == (30, 8, 8)
    x = torch.randint(32, (5, *shape)).float() / 31
    terms = model.loss_terms(x)
    assert terms.recon.shape == (5,) and torch.isfinite(terms.recon).all()
    assert (terms.recon > 0).all(), "a discrete likelihood: -log p >= 0"
    terms.neg_elbo.mean().backward()
    assert all(p.grad is not None for p in model.decoder.parameters())
    log_w = model.log_importance_weights(x, 4)
    assert log_w.shape == (4, 5) and torch.isfinite(log_w).all()
    with torch.no_grad():
        recon = model.likelihood.mean(model.decode(model.encode(x)[0]))
    assert recon.shape == (5, *shape) and recon.min() >= 0 and recon.max() <= 1
