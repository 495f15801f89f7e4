"""Every prior: a normalized density (numerical integration in 1-2 D), sampling, and the MC KL."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D
from torch import nn

from vaebench.model import VAE
from vaebench.plugins.likelihoods import Bernoulli
from vaebench.plugins.mlp import MLPDecoder, MLPEncoder
from vaebench.plugins.priors import (
    FlowPrior,
    MixtureOfGaussiansPrior,
    StandardNormalPrior,
    VampPrior,
)


def tiny_encoder(dim: int) -> nn.Module:
    return MLPEncoder((1, 2, 2), dim, hidden=8)


def make_prior(name: str, dim: int):
    torch.manual_seed(0)
    if name == "normal":
        return StandardNormalPrior(dim)
    if name == "mog":
        prior = MixtureOfGaussiansPrior(dim, components=3)
        with torch.no_grad():  # a non-trivial mixture: spread means, unequal weights and scales
            prior.means.mul_(1.5)
            prior.logits.copy_(torch.tensor([0.0, 1.0, -0.5]))
            prior.log_scales.uniform_(-0.5, 0.3)
        return prior
    if name == "vamp":
        return VampPrior(
            dim,
            input_shape=(1, 2, 2),
            encoder=tiny_encoder(dim),
            pseudo_inputs=4,
            examples=torch.rand(6, 1, 2, 2),
        )
    if name == "flow":
        prior = FlowPrior(dim, transforms=2, hidden=16)
        with torch.no_grad():  # random weights so the flow is not the identity
            for p in prior.parameters():
                p.add_(0.3 * torch.randn_like(p))
        return prior
    raise AssertionError(name)


PRIORS = ["normal", "mog", "vamp", "flow"]


@pytest.mark.parametrize("name", PRIORS)
@pytest.mark.parametrize("dim", [1, 2])
def test_density_integrates_to_one(name, dim):
    prior = make_prior(name, dim)
    half, points = 9.0, 601 if dim == 1 else 241
    axis = torch.linspace(-half, half, points)
    cell = (axis[1] - axis[0]).item() ** dim
    grid = axis[:, None] if dim == 1 else torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        mass = prior.log_prob(grid).double().exp().sum().item() * cell
    assert mass == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("name", PRIORS)
def test_sampling_shapes_and_agreement_with_log_prob(name):
    prior = make_prior(name, 2)
    with torch.no_grad():
        samples = prior.sample(4000)
        assert samples.shape == (4000, 2) and torch.isfinite(samples).all()
        # Samples come from the density: their mean log-density is the (negative) entropy,
        # which must beat the log-density of the same points shifted off the distribution.
        on = prior.log_prob(samples).mean()
        off = prior.log_prob(samples + 3.0).mean()
    assert on > off + 1.0


def test_mog_sample_moments_match_the_mixture():
    prior = make_prior("mog", 2)
    with torch.no_grad():
        weights = torch.softmax(prior.logits, 0)
        mean = (weights[:, None] * prior.means).sum(0)
        samples = prior.sample(200_000)
    torch.testing.assert_close(samples.mean(0), mean, atol=0.02, rtol=0)
    reference = D.MixtureSameFamily(
        D.Categorical(weights), D.Independent(D.Normal(prior.means, prior.log_scales.exp()), 1)
    )
    z = torch.randn(50, 2)
    torch.testing.assert_close(prior.log_prob(z), reference.log_prob(z), rtol=1e-5, atol=1e-5)


def test_vamp_is_the_mean_of_the_encoder_posteriors():
    prior = make_prior("vamp", 2)
    z = torch.randn(7, 2)
    with torch.no_grad():
        mu, logvar = prior.components()
        q = D.Normal(mu, (0.5 * logvar).exp())  # (K, D)
        expected = torch.logsumexp(q.log_prob(z[:, None, :]).sum(-1), dim=1) - math.log(mu.shape[0])
        torch.testing.assert_close(prior.log_prob(z), expected, rtol=1e-5, atol=1e-5)
    assert not any(name.startswith("_encoder") for name, _ in prior.named_parameters()), (
        "encoder not owned twice"
    )


def test_monte_carlo_kl_matches_the_closed_form_for_normal():
    """A prior without standard_normal/kl gets log q - log p at the sampled z; for N(0, I) its mean is the closed form."""

    class PlainNormal(nn.Module):
        def log_prob(self, z):
            return D.Normal(0.0, 1.0).log_prob(z).sum(-1)

    shape, dim = (1, 2, 2), 3
    encoder, decoder = MLPEncoder(shape, dim, hidden=8), MLPDecoder(shape, dim, hidden=8)
    closed = VAE(
        encoder,
        decoder,
        StandardNormalPrior(dim),
        Bernoulli(shape),
        latent_dim=dim,
        kernel_backend="torch",
    )
    mc = VAE(
        encoder, decoder, PlainNormal(), Bernoulli(shape), latent_dim=dim, kernel_backend="torch"
    )
    x = torch.rand(5, *shape).repeat(20000, 1, 1, 1)
    with torch.no_grad():
        exact = closed.loss_terms(x[:5]).kl
        estimate = mc.loss_terms(x).kl.view(20000, 5).mean(0)
    torch.testing.assert_close(estimate, exact, atol=0.03, rtol=0.03)


def test_learnable_priors_train_with_the_model():
    for name in ("mog", "vamp", "flow"):
        prior = make_prior(name, 2)
        assert any(p.requires_grad for p in prior.parameters()), name
