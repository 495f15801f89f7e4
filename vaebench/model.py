"""A VAE assembled from an encoder, a decoder, a prior and a likelihood (all plugins)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from vaebench.kernels import reparameterize_kl
from vaebench.options import call_factory

if TYPE_CHECKING:
    from vaebench.registry import Registry


@dataclass
class LossTerms:
    """Per-example terms of the negative ELBO, in nats: ``recon + kl``."""

    recon: torch.Tensor  # -log p(x|z), (B,)
    kl: torch.Tensor  # KL(q(z|x) || p(z)), closed form or one-sample Monte Carlo, (B,)
    mu: torch.Tensor  # posterior mean, (B, D)
    logvar: torch.Tensor  # posterior log-variance, (B, D)

    @property
    def neg_elbo(self) -> torch.Tensor:
        return self.recon + self.kl


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 to fp32 (a network's output under autocast); other dtypes unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class VAE(nn.Module):
    """``-ELBO = E_q[-log p(x|z)] + KL(q(z|x) || p(z))`` with q a diagonal Gaussian.

    The KL is the fused kernel's closed form when the prior is N(0, I), the prior's own
    ``kl(mu, logvar)`` when it has one, else the Monte Carlo estimate log q(z|x) - log p(z).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        prior: object,
        likelihood: object,
        *,
        latent_dim: int,
        kernel_backend: str = "auto",
        param_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.prior = prior  # registered as a submodule when it is one (learnable priors train too)
        self.latent_dim = latent_dim
        self.kernel_backend = kernel_backend
        self.param_shape = param_shape  # what decode must return per example, when known
        self.autocast_dtype: torch.dtype | None = None  # the networks' precision (Mode.prepare)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)``, fp32 even when the encoder ran in bf16/fp16 under autocast."""
        with self.network_precision(x):
            mu, logvar = self.encoder(x)
        if mu.shape != (x.shape[0], self.latent_dim) or logvar.shape != mu.shape:
            raise RuntimeError(
                f"encoder returned mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)}; "
                f"expected ({x.shape[0]}, {self.latent_dim}) each"
            )
        return full_precision(mu), full_precision(logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The likelihood's parameters, fp32 (likelihood sums stay out of low precision)."""
        with self.network_precision(z):
            params = self.decoder(z)
        expected = (z.shape[0], *self.param_shape) if self.param_shape is not None else None
        if expected is not None and tuple(params.shape) != expected:
            raise RuntimeError(f"decoder returned shape {tuple(params.shape)}; expected {expected}")
        return full_precision(params)

    def network_precision(self, x: torch.Tensor) -> contextlib.AbstractContextManager:
        """Autocast around the encoder or decoder alone, when a mode set a low precision:
        nothing else (likelihoods, priors, metrics) runs in it."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=self.autocast_dtype)

    def kl_term(self, mu, logvar, z, fused_kl, log_q) -> torch.Tensor:
        if getattr(self.prior, "standard_normal", False):
            return fused_kl
        closed_form = getattr(self.prior, "kl", None)
        if callable(closed_form):
            return closed_form(mu, logvar)
        return log_q - self.prior.log_prob(z)

    def loss_terms(self, x: torch.Tensor) -> LossTerms:
        mu, logvar = self.encode(x)
        z, fused_kl, log_q = reparameterize_kl(
            mu, logvar, backend=self.kernel_backend, return_log_q=True
        )
        recon = -self.likelihood.log_prob(self.decode(z), x)
        kl = self.kl_term(mu, logvar, z, fused_kl, log_q)
        return LossTerms(recon=recon, kl=kl, mu=mu, logvar=logvar)

    def log_importance_weights(
        self,
        x: torch.Tensor,
        samples: int,
        posterior: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """log p(x|z_k) + log p(z_k) - log q(z_k|x) for K samples per example: ``(K, B)``.

        All K samples of a batch go through the decoder in one call (no Python loop per
        example or per sample). Differentiable: the IWAE objective trains on it.
        ``posterior``: ``encode(x)`` when the caller has it already (the IW-NLL encodes an
        example once for all its chunks of samples).
        """
        mu, logvar = self.encode(x) if posterior is None else posterior
        if mu.shape[0] != x.shape[0]:
            raise ValueError(f"posterior for {mu.shape[0]} examples given with {x.shape[0]}")
        z, _, log_q = reparameterize_kl(
            mu, logvar, samples=samples, backend=self.kernel_backend, return_log_q=True
        )
        z = z.reshape(samples, *mu.shape)
        log_q = log_q.reshape(samples, x.shape[0])
        if hasattr(self.likelihood, "log_prob_samples"):  # each example's samples together
            by_example = z.transpose(0, 1).reshape(x.shape[0] * samples, -1)
            params = self.decode(by_example)
            params = params.view(x.shape[0], samples, *params.shape[1:])
            log_px = self.likelihood.log_prob_samples(params, x).transpose(0, 1)
            log_pz = self.prior.log_prob(by_example).view(x.shape[0], samples).transpose(0, 1)
            return log_px + log_pz - log_q
        flat_z = z.reshape(samples * x.shape[0], -1)
        x_rep = x.unsqueeze(0).expand(samples, *x.shape).reshape(samples * x.shape[0], *x.shape[1:])
        log_px = self.likelihood.log_prob(self.decode(flat_z), x_rep).view(samples, -1)
        log_pz = self.prior.log_prob(flat_z).view(samples, -1)
        return log_px + log_pz - log_q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean negative ELBO over the batch."""
        return self.loss_terms(x).neg_elbo.mean()


class Objective(Protocol):
    """What a ``--model`` plugin provides (see ``hookspecs.vaebench_register_models``)."""

    variational: bool

    def loss(
        self, model: VAE, x: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model from plugins (saved in every checkpoint)."""

    plugin: str
    prior: str
    likelihood: str
    input_shape: tuple[int, ...]
    latent_dim: int
    prior_options: dict[str, Any] = field(default_factory=dict)
    likelihood_options: dict[str, Any] = field(default_factory=dict)
    arch_options: dict[str, Any] = field(default_factory=dict)  # -A, both halves of the family


def build_family(
    registry: Registry,
    plugin: str,
    input_shape: tuple[int, ...],
    param_shape: tuple[int, ...],
    latent_dim: int,
    options: dict[str, Any],
) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder registered as ``plugin``, each given the ``-A`` options it
    declares (the keys were checked against both when the run was resolved)."""
    encoder = call_factory(
        registry.get("encoder", plugin), input_shape, latent_dim, options=options, flag="-A"
    )
    decoder = call_factory(
        registry.get("decoder", plugin), param_shape, latent_dim, options=options, flag="-A"
    )
    return encoder, decoder


def build_model(
    registry: Registry,
    spec: ModelSpec,
    *,
    kernel_backend: str = "auto",
    examples: torch.Tensor | None = None,
) -> VAE:
    """Assemble a VAE from the registered factories named by ``spec``.

    The likelihood comes first: it may ask for more decoder outputs than input values
    (``param_shape``). ``examples`` (a few training inputs) initialise data-shaped priors.
    """
    shape, latent = tuple(spec.input_shape), spec.latent_dim
    likelihood = call_factory(
        registry.get("likelihood", spec.likelihood),
        shape,
        options=spec.likelihood_options,
        flag="-L",
    )
    param_shape = (
        tuple(likelihood.param_shape(shape)) if hasattr(likelihood, "param_shape") else shape
    )
    encoder, decoder = build_family(
        registry, spec.plugin, shape, param_shape, latent, spec.arch_options
    )
    prior = call_factory(
        registry.get("prior", spec.prior),
        latent,
        options=spec.prior_options,
        flag="-P",
        input_shape=shape,
        encoder=encoder,
        examples=examples,
    )
    return VAE(
        encoder,
        decoder,
        prior,
        likelihood,
        latent_dim=latent,
        kernel_backend=kernel_backend,
        param_shape=param_shape,
    )
