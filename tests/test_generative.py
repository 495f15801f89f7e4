"""Sample and latent metrics against closed forms and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaebench import generative
from vaebench.generative import (
    frechet_distance,
    interpolation_smoothness,
    load_or_train_classifier,
    mmd,
)
from vaebench.plugins.datasets import synthetic


def test_frechet_distance_matches_the_gaussian_closed_form():
    """For diagonal Gaussians: ||m1 - m2||^2 + sum(s1 + s2 - 2 sqrt(s1 s2)) (variances s)."""
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    v1, v2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    a = m1 + rng.normal(size=(200_000, 5)) * np.sqrt(v1)
    b = m2 + rng.normal(size=(200_000, 5)) * np.sqrt(v2)
    expected = ((m1 - m2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02, abs=0.02)


def test_frechet_distance_against_scipy_sqrtm_and_with_few_samples():
    from scipy import linalg

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 6)), rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)) + 1
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(
        ca + cb - 2 * linalg.sqrtm(ca @ cb).real
    )
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    few = rng.normal(size=(5, 64))  # singular covariances: finite, no warning
    assert np.isfinite(frechet_distance(few, few + 0.1))


def test_mmd_is_zero_for_one_distribution_and_grows_with_the_shift():
    torch.manual_seed(0)
    x, y = torch.randn(600, 4), torch.randn(600, 4)
    assert abs(mmd(x, y)) < 0.01
    shifted = [mmd(x, y + shift) for shift in (0.5, 1.0, 2.0)]
    assert shifted[0] > 0.02 and shifted[0] < shifted[1] < shifted[2]


def dense_mmd(x: torch.Tensor, y: torch.Tensor) -> float:
    """The n x n definition, as the metric was first written."""
    x, y, total = x.double(), y.double(), 0.0
    for scale in generative.MMD_SCALES:
        gamma = 1.0 / (2 * scale**2 * x.shape[1])
        k_xx, k_yy, k_xy = (
            torch.exp(-gamma * torch.cdist(a, b).pow(2)) for a, b in ((x, x), (y, y), (x, y))
        )
        n, m = len(x), len(y)
        total += ((k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
                  + (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1)) - 2 * k_xy.mean()).item()  # fmt: skip
    return total


def test_blocked_mmd_equals_the_dense_definition_and_caps_its_points(monkeypatch):
    torch.manual_seed(0)
    x, y = torch.randn(70, 3), torch.randn(50, 3) + 0.7  # unequal sizes: x and y not swappable
    monkeypatch.setattr(generative, "MMD_BLOCK", 16)  # several blocks, a short last one
    # Kernel values are float32 (summed in float64): agreement to ~1e-8, not to float64's 1e-15;
    # a dropped block or a doubled row is off by percents.
    assert mmd(x, y) == pytest.approx(dense_mmd(x, y), rel=1e-6)
    monkeypatch.setattr(generative, "MMD_MAX_POINTS", 40)
    generator = torch.Generator().manual_seed(0)
    sub_x = x[torch.randperm(70, generator=generator)[:40]]
    sub_y = y[torch.randperm(50, generator=generator)[:40]]
    assert mmd(x, y) == pytest.approx(dense_mmd(sub_x, sub_y), rel=1e-6)


def test_interpolation_of_a_linear_decoder_is_perfectly_smooth():
    weight = torch.randn(3, 10)
    codes = torch.randn(50, 3)
    result = interpolation_smoothness(lambda z: z @ weight, codes, steps=16)
    assert result["interp_path_ratio"] == pytest.approx(1.0, abs=1e-5)
    assert result["interp_max_jump"] == pytest.approx(1 / 16, abs=1e-5)
    step = interpolation_smoothness(lambda z: (z[:, :1] > 0).float().repeat(1, 10), codes, steps=16)
    assert step["interp_max_jump"] == pytest.approx(1.0), "a jump puts the whole path in one step"


def test_classifier_is_trained_once_per_dataset_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv(generative.CACHE_ENV, str(tmp_path))
    data = synthetic(seed=0, n_train=200, n_test=80, classes=3)
    first, accuracy = load_or_train_classifier(data)
    assert accuracy > 0.8, "blob position is easy to classify"
    (cached,) = (tmp_path / "classifiers").glob("*.pt")
    calls = []
    monkeypatch.setattr(generative, "_train_classifier", lambda *a: calls.append(a))
    second, again = load_or_train_classifier(data)
    assert calls == [] and again == accuracy
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = synthetic(seed=1, n_train=200, n_test=80, classes=3)
    assert generative.fingerprint(other) != cached.stem
