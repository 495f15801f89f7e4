"""What a trained model is worth on the test split: every quality, sample and latent metric
of a row, from ``metrics`` and ``generative``. The test split is read here and nowhere in
training.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch

from vaebench import metrics
from vaebench.data import Dataset
from vaebench.generative import FeatureClassifier, interpolation_smoothness, mmd, sample_quality
from vaebench.model import VAE, Objective
from vaebench.reporting import Reporter


class EvaluationData(Protocol):
    """What evaluation reads of a run (a ``RunContext`` is one)."""

    dataset: Dataset
    x_train: torch.Tensor
    x_test: torch.Tensor
    classifier: tuple[FeatureClassifier, float] | None


@torch.no_grad()
def untrained(model: VAE, objective: Objective, x_test: torch.Tensor) -> dict[str, float]:
    """The same network before its first step: what training must beat."""
    model.eval()
    if objective.variational:
        return {"neg_elbo_untrained": metrics.elbo_terms(model, x_test)["neg_elbo"]}
    return {"recon_nll_untrained": metrics.deterministic_recon_nll(model, x_test)}


@torch.no_grad()
def evaluate(
    model: VAE,
    objective: Objective,
    data: EvaluationData,
    *,
    iw_samples: int,
    seed: int,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Test-split metrics. ELBO columns only for the VAE family (AE rows leave them empty).

    Costs, n test examples: the ELBO and posterior passes O(n); the IW-NLL O(n K) decodes
    in bounded memory (``metrics.iw_nll`` streams); the probe and MMD at most 10,000 codes.
    """
    reporter = reporter or Reporter()
    dataset, classifier = data.dataset, data.classifier
    x_train, x_test = data.x_train, data.x_test
    model.eval()
    torch.manual_seed(seed + 1)
    test_means = metrics.posterior_means(model, x_test)
    result: dict[str, Any] = {
        "active_units": metrics.active_units(test_means),
        "probe_accuracy": float("nan"),
    }
    if objective.variational:
        terms = metrics.elbo_terms(model, x_test)
        label = f"IW-NLL, K={iw_samples}, decoder passes"
        with reporter.progress(label, x_test.shape[0] * iw_samples):
            iw = metrics.iw_nll(model, x_test, iw_samples, on_passes=reporter.advance)
        bits = math.prod(dataset.input_shape) * math.log(2)  # nats per example -> bits per value
        result.update(
            neg_elbo=terms["neg_elbo"],
            recon_nll=terms["recon_nll"],
            kl=terms["kl"],
            iw_nll=iw,
            elbo_gap=terms["neg_elbo"] - iw,
            kl_per_dim=terms["kl_per_dim"],
            bpd=iw / bits,
            neg_elbo_bpd=terms["neg_elbo"] / bits,
        )
        codes = metrics.posterior_samples(model, x_test)
    else:
        result["recon_nll"] = metrics.deterministic_recon_nll(model, x_test)
        codes = test_means.to(x_test.device)
    if dataset.has_labels:
        train_means = metrics.posterior_means(model, x_train)
        result["probe_accuracy"] = metrics.probe_accuracy(
            train_means, dataset.y_train, test_means, dataset.y_test
        )
    prior_codes = model.prior.sample(len(x_test)).float()
    result["latent_mmd"] = mmd(codes.cpu(), prior_codes.cpu())

    def decode_mean(z: torch.Tensor) -> torch.Tensor:
        return model.likelihood.mean(model.decode(z))

    result.update(interpolation_smoothness(decode_mean, test_means.to(x_test.device)))
    if classifier is not None:
        network, accuracy = classifier
        result.update(sample_quality(network, x_test, decode_mean(prior_codes)))
        result["classifier_test_accuracy"] = accuracy
    return result
