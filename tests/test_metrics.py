"""Every metric against an independent computation with torch.distributions, numpy or sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import distributions as D

from tests.helpers import TINY_LATENT, TINY_SHAPE, tiny_vae
from vaebench import metrics
from vaebench.model import VAE
from vaebench.plugins.likelihoods import Bernoulli, Categorical, Gaussian
from vaebench.plugins.priors import StandardNormalPrior

SHAPE, LATENT = TINY_SHAPE, TINY_LATENT  # tiny_vae's
VALUES = math.prod(SHAPE)  # decoder outputs per example


def data(n: int = 23) -> torch.Tensor:
    return torch.rand(n, *SHAPE)


def independent_log_weights(model: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """log p(x|z) + log p(z) - log q(z|x) with torch.distributions, one example at a time."""
    rows = []
    with torch.no_grad():
        for i in range(x.shape[0]):
            mu, logvar = model.encode(x[i : i + 1])
            q = D.Normal(mu[0].double(), (0.5 * logvar[0].double()).exp())
            z = q.loc + q.scale * eps[:, i].double()  # (K, D)
            logits = model.decode(z.float()).double()
            log_px = (
                D.Bernoulli(logits=logits, validate_args=False)
                .log_prob(x[i].double().expand_as(logits))
                .flatten(1)
                .sum(-1)
            )
            log_pz = D.Normal(0.0, 1.0).log_prob(z).sum(-1)
            rows.append(log_px + log_pz - q.log_prob(z).sum(-1))
    return torch.stack(rows, dim=1)  # (K, N)


def test_elbo_terms_match_torch_distributions():
    model, x = tiny_vae(), data()
    torch.manual_seed(5)
    got = metrics.elbo_terms(model, x)
    torch.manual_seed(5)
    eps = torch.randn(x.shape[0], LATENT)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        q = D.Normal(mu.double(), (0.5 * logvar.double()).exp())
        kl = D.kl_divergence(q, D.Normal(0.0, 1.0)).sum(-1)
        z = q.loc + q.scale * eps.double()
        recon = (
            -D.Bernoulli(logits=model.decode(z.float()).double(), validate_args=False)
            .log_prob(x.double())
            .flatten(1)
            .sum(-1)
        )
    assert got["kl"] == pytest.approx(kl.mean().item(), rel=1e-5)
    assert got["recon_nll"] == pytest.approx(recon.mean().item(), rel=1e-5)
    assert got["neg_elbo"] == pytest.approx((recon + kl).mean().item(), rel=1e-5)
    assert sum(got["kl_per_dim"]) == pytest.approx(kl.mean().item(), rel=1e-5)
    np.testing.assert_allclose(
        got["kl_per_dim"], D.kl_divergence(q, D.Normal(0.0, 1.0)).mean(0).numpy(), rtol=1e-6
    )


@pytest.mark.parametrize("samples", [1, 7])
def test_iw_nll_matches_an_independent_per_example_loop(samples):
    model, x = tiny_vae(), data(19)
    torch.manual_seed(11)
    got = metrics.iw_nll(model, x, samples)
    torch.manual_seed(11)
    eps = torch.randn(samples, x.shape[0], LATENT)
    log_w = independent_log_weights(model, x, eps)
    expected = -(torch.logsumexp(log_w, 0) - math.log(samples)).mean().item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_iw_nll_with_one_sample_is_the_monte_carlo_elbo():
    """With K = 1 the bound is log p(x|z) + log p(z) - log q(z|x): the MC negative ELBO."""
    model, x = tiny_vae(), data(400)
    torch.manual_seed(0)
    iw1 = metrics.iw_nll(model, x, 1)
    elbo = metrics.elbo_terms(model, x)["neg_elbo"]
    # Same expectation; one-sample MC noise over 400 examples is well under 1%.
    assert iw1 == pytest.approx(elbo, rel=0.02)


def test_iw_nll_tightens_with_more_samples():
    model, x = tiny_vae(), data(64)
    torch.manual_seed(1)
    bounds = [metrics.iw_nll(model, x, k) for k in (1, 10, 200)]
    assert bounds[0] > bounds[1] > bounds[2]


@pytest.mark.parametrize(
    ("budget", "batch", "chunk", "n"),
    [(9 * VALUES, 2, 4, 7), (3 * VALUES, 1, 3, 7), (VALUES, 1, 1, 7), (9 * VALUES, 2, 4, 23)],
)
def test_iw_nll_streams_examples_and_samples_exactly(monkeypatch, budget, batch, chunk, n):
    """Streaming only bounds memory: with the noise drawn chunk by chunk (examples in batches,
    samples in chunks of a running log-sum-exp) it equals the per-example reference. With 23
    examples the encoder's blocks (9 examples at this budget, not a multiple of the batch of
    2) must not cut a batch short."""
    model, x, samples = tiny_vae(), data(n), 4
    monkeypatch.setattr(metrics, "IW_BUDGET", budget)
    monkeypatch.setattr(metrics, "IW_CPU_BUDGET", budget)  # these tensors are on the CPU
    torch.manual_seed(3)
    streamed = metrics.iw_nll(model, x, samples)
    torch.manual_seed(3)
    columns = []
    for start in range(0, x.shape[0], batch):
        b = min(batch, x.shape[0] - start)
        step = max(1, (budget // VALUES) // b)
        draws = [torch.randn(min(step, samples - k), b, LATENT) for k in range(0, samples, step)]
        columns.append(torch.cat(draws, dim=0))
    eps = torch.cat(columns, dim=1)
    expected = (
        -(torch.logsumexp(independent_log_weights(model, x, eps), 0) - math.log(samples)).mean()
    ).item()
    assert streamed == pytest.approx(expected, rel=1e-5)
    assert (batch, chunk) == (
        max(1, (budget // VALUES) // samples),
        max(1, (budget // VALUES) // batch),
    )


def test_iw_nll_encodes_each_example_once_whatever_its_chunks(monkeypatch):
    """K = 40 in chunks of 3 samples: the encoder still sees each example once (it ran
    once per chunk before, 14x here; at K = 5000 on the CPU, 4x)."""
    model, x = tiny_vae(), data(5)
    monkeypatch.setattr(metrics, "IW_CPU_BUDGET", 3 * VALUES)
    seen = []
    model.encoder.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    metrics.iw_nll(model, x, 40)
    assert sum(seen) == x.shape[0]


def test_a_posterior_for_other_examples_is_refused_in_one_line():
    model, x = tiny_vae(), data(3)
    with torch.no_grad(), pytest.raises(ValueError, match="posterior for 2 examples given with 3"):
        model.log_importance_weights(x, 2, model.encode(x[:2]))


def test_gaussian_likelihood_matches_torch_distributions():
    lik = Gaussian(SHAPE)
    with torch.no_grad():
        lik.log_sigma.fill_(-0.7)
    mean, x = torch.randn(6, *SHAPE), torch.randn(6, *SHAPE)
    expected = D.Normal(mean, math.exp(-0.7)).log_prob(x).flatten(1).sum(-1)
    torch.testing.assert_close(lik.log_prob(mean, x), expected, rtol=1e-5, atol=1e-5)


def test_bernoulli_likelihood_matches_torch_distributions():
    logits, x = torch.randn(6, *SHAPE) * 3, torch.randint(0, 2, (6, *SHAPE)).float()
    expected = D.Bernoulli(logits=logits, validate_args=False).log_prob(x).flatten(1).sum(-1)
    torch.testing.assert_close(Bernoulli(SHAPE).log_prob(logits, x), expected)


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_bernoulli_likelihood_matches_float64_cross_entropy_at_extreme_logits(scale):
    """x l - softplus(l) against float64 binary cross-entropy: saturated logits (where a
    naive log(sigmoid) overflows), values in [0, 1] (not only binary), one x broadcast over
    many logits (the IW-NLL's samples)."""
    gen = torch.Generator().manual_seed(int(scale))
    logits = torch.randn(5, *SHAPE, generator=gen) * scale
    for x in (torch.randint(0, 2, (5, *SHAPE), generator=gen).float(),
              torch.rand(5, *SHAPE, generator=gen), torch.rand(1, *SHAPE, generator=gen)):  # fmt: skip
        want = (
            -torch.nn.functional.binary_cross_entropy_with_logits(
                logits.double(), x.double().expand_as(logits), reduction="none"
            )
            .flatten(1)
            .sum(-1)
        )
        got = Bernoulli(SHAPE).log_prob(logits, x)
        assert got.dtype == torch.float32 and torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4 * scale)


def test_standard_normal_prior_log_prob_and_samples():
    prior = StandardNormalPrior(4)
    z = torch.randn(10, 4)
    torch.testing.assert_close(prior.log_prob(z), D.Normal(0.0, 1.0).log_prob(z).sum(-1))
    samples = prior.sample(20000)
    assert samples.shape == (20000, 4)
    assert samples.mean().abs() < 0.03 and (samples.var() - 1).abs() < 0.05


def test_active_units_counts_varying_means():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(500, 6)) * np.array([1.0, 0.5, 0.2, 0.05, 0.0, 0.001])
    expected = int((means.var(axis=0) > 0.01).sum())
    assert expected == 3
    assert metrics.active_units(torch.from_numpy(means)) == expected


def test_probe_accuracy_separates_informative_from_random_codes():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    informative = torch.from_numpy(np.eye(3)[y] * 4 + rng.normal(size=(600, 3))).float()
    labels = torch.from_numpy(y)
    assert (
        metrics.probe_accuracy(informative[:400], labels[:400], informative[400:], labels[400:])
        > 0.9
    )
    noise = torch.randn(600, 3)
    assert metrics.probe_accuracy(noise[:400], labels[:400], noise[400:], labels[400:]) < 0.55


def test_fixed_sigma_gaussian_is_not_learned():
    lik = Gaussian(SHAPE, sigma=0.3)
    assert not list(lik.parameters())
    mean, x = torch.randn(4, *SHAPE), torch.randn(4, *SHAPE)
    expected = D.Normal(mean, 0.3).log_prob(x).flatten(1).sum(-1)
    torch.testing.assert_close(lik.log_prob(mean, x), expected, rtol=1e-5, atol=1e-4)
    assert list(Gaussian(SHAPE).parameters()), "without sigma the scale is learned"


@pytest.mark.parametrize("bins", [2, 5, 256])
def test_categorical_likelihood_matches_torch_distributions(bins):
    lik = Categorical(SHAPE, bins=bins)
    assert lik.param_shape(SHAPE) == (SHAPE[0] * bins, *SHAPE[1:])
    logits = torch.randn(6, *lik.param_shape(SHAPE))
    levels = torch.randint(0, bins, (6, *SHAPE))
    x = levels.float() / (bins - 1)
    per_value = logits.view(6, bins, *SHAPE).movedim(1, -1)  # (B, *shape, bins)
    expected = D.Categorical(logits=per_value).log_prob(levels).flatten(1).sum(-1)
    torch.testing.assert_close(lik.log_prob(logits, x), expected, rtol=1e-5, atol=1e-4)
    probs = torch.softmax(per_value, -1)
    torch.testing.assert_close(
        lik.mean(logits), (probs * torch.linspace(0, 1, bins)).sum(-1), rtol=1e-5, atol=1e-6
    )


def test_probe_fits_on_a_fixed_seed_subsample(monkeypatch):
    monkeypatch.setattr(metrics, "PROBE_MAX_TRAIN", 50)
    codes = torch.randn(200, 3)
    picked = torch.randperm(200, generator=torch.Generator().manual_seed(0))[:50]
    y = torch.ones(200, dtype=torch.long)
    y[picked] = 0  # the subsample holds one class only: nothing to fit
    assert math.isnan(metrics.probe_accuracy(codes, y, codes[:10], y[:10]))
    monkeypatch.setattr(metrics, "PROBE_MAX_TRAIN", 200)  # every code: both classes
    assert 0 <= metrics.probe_accuracy(codes, y, codes[:10], y[:10]) <= 1


def test_active_units_use_the_population_variance_and_a_strict_threshold():
    means = torch.tensor([[0.0, 0.0, 5.0], [2.0, 0.5, 5.0]])  # population variances 1, 1/16, 0
    assert metrics.active_units(means, threshold=1.5) == 0  # the sample variance would be 2
    assert metrics.active_units(means, threshold=1.0) == 0  # equal to the threshold: inactive
    assert metrics.active_units(means, threshold=0.99) == 1
    assert metrics.active_units(means, threshold=0.05) == 2


def test_decode_batch_budgets_decoder_outputs():
    model = tiny_vae()
    assert metrics.decode_batch(model, torch.zeros(1, 1, 2, 2)) == 512  # the cap, by default
    assert metrics.decode_batch(model, torch.zeros(1, 1, 2, 2), most=700) == 700
    image = torch.zeros(1, 3, 64, 64)  # 12,288 values: 2**24 // 12288 = 1365 -> 512
    assert metrics.decode_batch(model, image, most=10_000) == 2**24 // (3 * 64 * 64)
    assert metrics.decode_batch(model, torch.zeros(1, 2**25)) == 1  # at least one example
    model.param_shape = (256, 1, 28, 28)  # a categorical decoder: 256 values per pixel
    assert metrics.decode_batch(model, torch.zeros(1, 1, 28, 28)) == 2**24 // (256 * 784)


def test_probe_standardizes_the_codes_and_fits_the_subsample(monkeypatch):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 400)
    codes = np.stack([(y * 2 - 1 + rng.normal(size=400) * 0.5) * 1e-4, rng.normal(size=400)], 1)
    codes, labels = torch.from_numpy(codes).float(), torch.from_numpy(y)
    # Unscaled, the L2 penalty drowns the informative but tiny first unit; standardized, not.
    assert metrics.probe_accuracy(codes[:300], labels[:300], codes[300:], labels[300:]) > 0.9
    monkeypatch.setattr(metrics, "PROBE_MAX_TRAIN", 120)
    picked = torch.randperm(300, generator=torch.Generator().manual_seed(0))[:120]
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(codes[picked].numpy(), labels[picked].numpy())
    expected = probe.score(codes[300:].numpy(), labels[300:].numpy())
    assert metrics.probe_accuracy(codes[:300], labels[:300], codes[300:], labels[300:]) == expected


def test_bernoulli_fast_path_for_samples_equals_log_prob_on_repeated_inputs():
    """``log_prob_samples`` (the IW-NLL's layout, x never copied) against ``log_prob`` on x
    repeated per sample: the same numbers, values in [0, 1] too."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 7, *SHAPE, generator=gen) * 5
    for x in (torch.randint(0, 2, (4, *SHAPE), generator=gen).float(),
              torch.rand(4, *SHAPE, generator=gen)):  # fmt: skip
        lik = Bernoulli(SHAPE)
        repeated = x.unsqueeze(1).expand(4, 7, *SHAPE).reshape(28, *SHAPE)
        want = lik.log_prob(logits.reshape(28, *SHAPE), repeated).view(4, 7)
        torch.testing.assert_close(lik.log_prob_samples(logits, x), want, rtol=1e-5, atol=1e-4)
