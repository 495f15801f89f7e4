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


class VAEObjective:
    variational = True

    def __init__(self, beta: float = 1.0, kl_warmup_steps: int = 0, **options) -> None:
        if not beta >= 0:
            raise ValueError(f"vae: beta must be >= 0, got {beta}")
        self.beta, self.warmup = float(beta), int(kl_warmup_steps)

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

    def __init__(self, iwae_samples: int = 5, **options) -> None:
        if int(iwae_samples) < 1:
            raise ValueError(f"iwae: iwae_samples must be >= 1, got {iwae_samples}")
        self.samples = int(iwae_samples)

    def loss(self, model, x: torch.Tensor, step: int):
        log_w = model.log_importance_weights(x, self.samples)
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.samples)
        return -bound.mean(), {}


class AutoEncoderObjective:
    variational = False

    def __init__(self, corruption: float = 0.0, sparsity: float = 0.0) -> None:
        if not 0 <= corruption < 1:
            raise ValueError(f"corruption must be in [0, 1), got {corruption}")
        if not sparsity >= 0:
            raise ValueError(f"sparsity must be >= 0, got {sparsity}")
        self.corruption, self.sparsity = float(corruption), float(sparsity)

    def loss(self, model, x: torch.Tensor, step: int):
        inputs = x
        if self.corruption > 0:
            inputs = x * (torch.rand_like(x) >= self.corruption)
        code, _ = model.encode(inputs)
        recon = -model.likelihood.log_prob(model.decode(code), x)
        loss = recon + self.sparsity * code.abs().sum(-1) if self.sparsity > 0 else recon
        return loss.mean(), {"recon": recon}


def autoencoder(**options) -> AutoEncoderObjective:
    return AutoEncoderObjective()


def denoising_autoencoder(corruption: float = 0.3, **options) -> AutoEncoderObjective:
    return AutoEncoderObjective(corruption=corruption)


def sparse_autoencoder(sparsity: float = 0.05, **options) -> AutoEncoderObjective:
    return AutoEncoderObjective(sparsity=sparsity)
