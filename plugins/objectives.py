"""Built-in training objectives (``--model``): the VAE family and the classic autoencoders.

``vae``  negative ELBO, recon + beta * KL, with an optional linear KL warm-up (beta-VAE);
``iwae`` the K-sample importance-weighted bound (Burda et al., 2016);
``ae``   a deterministic autoencoder: z = mu, reconstruction only;
``dae``  a denoising autoencoder: a fraction ``corruption`` of input values zeroed (masking
         noise), the clean input reconstructed;
``sae``  a sparse autoencoder: reconstruction + ``sparsity`` * ||z||_1.

The autoencoders ignore the encoder's log-variance and the prior; they are not variational,
so their ELBO metrics stay empty.
"""

from __future__ import annotations

import math

import torch


def _number(name: str, value: object, low: float, *, whole: bool = False) -> float:
    """A declared option's value, checked: ValueError names the option and the bound."""
    kind = "a whole number" if whole else "a number"
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (whole and not isinstance(value, int))
    ):
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if not value >= low:
        raise ValueError(f"{name} must be >= {low:g}, got {value!r}")
    return value


class VAEObjective:
    variational = True

    def __init__(self, beta: float = 1.0, kl_warmup_steps: int = 0) -> None:
        self.beta = float(_number("beta", beta, 0))
        self.warmup = int(_number("kl_warmup_steps", kl_warmup_steps, 0, whole=True))

    def kl_weight(self, step: int) -> float:
        return self.beta * min(1.0, (step + 1) / self.warmup) if self.warmup > 0 else self.beta

    def loss(self, model, x: torch.Tensor, step: int):
        terms = model.loss_terms(x)
        return (terms.recon + self.kl_weight(step) * terms.kl).mean(), {
            "recon": terms.recon,
            "kl": terms.kl,
        }


class IWAEObjective:
    variational = True

    def __init__(self, iwae_samples: int = 5) -> None:
        self.samples = int(_number("iwae_samples", iwae_samples, 1, whole=True))

    def loss(self, model, x: torch.Tensor, step: int):
        log_w = model.log_importance_weights(x, self.samples)
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.samples)
        return -bound.mean(), {}


class AutoEncoderObjective:
    variational = False

    def __init__(self, corruption: float = 0.0, sparsity: float = 0.0) -> None:
        if not _number("corruption", corruption, 0) < 1:
            raise ValueError(f"corruption must be < 1, got {corruption}")
        self.corruption, self.sparsity = float(corruption), float(_number("sparsity", sparsity, 0))

    def loss(self, model, x: torch.Tensor, step: int):
        inputs = x
        if self.corruption > 0:
            inputs = x * (torch.rand_like(x) >= self.corruption)
        code, _ = model.encode(inputs)
        recon = -model.likelihood.log_prob(model.decode(code), x)
        loss = recon + self.sparsity * code.abs().sum(-1) if self.sparsity > 0 else recon
        return loss.mean(), {"recon": recon}


# The factories below are what ``-M KEY=VALUE`` reaches: their keyword parameters are the
# objectives' declared options (``steps_per_epoch`` is context the core passes, not an option).


def vae(beta: float = 1.0, kl_warmup: int = 0, steps_per_epoch: int = 1) -> VAEObjective:
    """``beta``: KL weight; ``kl_warmup``: epochs over which the KL weight rises linearly to beta."""
    warmup = int(_number("kl_warmup", kl_warmup, 0, whole=True))
    return VAEObjective(beta=beta, kl_warmup_steps=warmup * steps_per_epoch)


def iwae(iwae_samples: int = 5) -> IWAEObjective:
    """``iwae_samples``: K of the importance-weighted training bound."""
    return IWAEObjective(iwae_samples=iwae_samples)


def autoencoder() -> AutoEncoderObjective:
    return AutoEncoderObjective()


def denoising_autoencoder(corruption: float = 0.3) -> AutoEncoderObjective:
    """``corruption``: fraction of input values zeroed."""
    return AutoEncoderObjective(corruption=corruption)


def sparse_autoencoder(sparsity: float = 0.05) -> AutoEncoderObjective:
    """``sparsity``: L1 weight on the code."""
    return AutoEncoderObjective(sparsity=sparsity)
