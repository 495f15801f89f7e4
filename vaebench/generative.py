"""Metrics of the latent space and of prior samples: the numbers that separate AE from VAE.

- Frechet distance between a small classifier's features of real test images and of images
  decoded from prior samples (the FID recipe with a dataset-specific network, trained once per
  dataset and cached), and that classifier's mean confidence on the samples.
- MMD between the aggregate posterior (the test set's codes) and the prior.
- Interpolation smoothness: how evenly decoded outputs move along a straight line between codes.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vaebench.data import Dataset
from vaebench.errors import VaebenchError
from vaebench.io import atomic_torch_save

CACHE_ENV = "VAEBENCH_CACHE"
CLASSIFIER_EPOCHS = 30
FEATURES = 64


class FeatureClassifier(nn.Module):
    """A small MLP classifier; its penultimate layer is the feature space for the distance."""

    def __init__(self, input_shape: tuple[int, ...], classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), 256),
            nn.ReLU(),
            nn.Linear(256, FEATURES),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vaebench")


def fingerprint(dataset: Dataset) -> str:
    """Content hash of the training split: the classifier is reused only for the same data."""
    digest = hashlib.sha256()
    digest.update(str(tuple(dataset.x_train.shape)).encode())
    digest.update(dataset.x_train.numpy().tobytes())
    if dataset.y_train is not None:
        digest.update(dataset.y_train.numpy().tobytes())
    return digest.hexdigest()[:20]


def _train_classifier(dataset: Dataset, classes: int) -> FeatureClassifier:
    torch.manual_seed(0)
    classifier = FeatureClassifier(dataset.input_shape, classes)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3, weight_decay=1e-4)
    order_rng = torch.Generator().manual_seed(0)
    x, y = dataset.x_train, dataset.y_train
    for _ in range(CLASSIFIER_EPOCHS):
        for batch in torch.randperm(len(x), generator=order_rng).split(128):
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(classifier(x[batch]), y[batch]).backward()
            optimizer.step()
    return classifier.eval()


def load_or_train_classifier(dataset: Dataset) -> tuple[FeatureClassifier, float]:
    """The dataset's feature classifier and its test accuracy, trained once and cached on disk."""
    if not dataset.has_labels:
        raise VaebenchError(
            f"{dataset.name}: sample metrics need labels to train the feature classifier"
        )
    classes = int(max(dataset.y_train.max(), dataset.y_test.max()).item()) + 1
    path = cache_dir() / "classifiers" / f"{fingerprint(dataset)}.pt"
    if path.is_file():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            classifier = FeatureClassifier(dataset.input_shape, classes)
            classifier.load_state_dict(payload["state_dict"])
            return classifier.eval(), float(payload["test_accuracy"])
        except Exception:
            path.unlink(missing_ok=True)  # a stale or broken cache entry is retrained, not trusted
    classifier = _train_classifier(dataset, classes)
    with torch.no_grad():
        accuracy = (classifier(dataset.x_test).argmax(-1) == dataset.y_test).float().mean().item()
    try:
        atomic_torch_save(path, {"state_dict": classifier.state_dict(), "test_accuracy": accuracy})
    except OSError as exc:  # a broken cache costs time, never the run
        print(
            f"vaebench: warning: cache {cache_dir()} unusable ({exc.strerror or exc}); "
            f"the feature classifier is not cached (set {CACHE_ENV} to a writable folder)",
            file=sys.stderr,
        )
    return classifier, accuracy


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||m_a - m_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two feature sets (rows).

    The trace of the matrix square root is computed as the sum of square roots of the
    eigenvalues of S_a^(1/2) S_b S_a^(1/2), a symmetric PSD matrix with the same spectrum:
    stable even when few samples make the covariances singular.
    """
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _psd_sqrt(cov_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


@torch.no_grad()
def sample_quality(
    classifier: FeatureClassifier, real: torch.Tensor, generated: torch.Tensor
) -> dict[str, float]:
    real_features = classifier.features(real.float().cpu()).double().numpy()
    fake_features = classifier.features(generated.float().cpu()).double().numpy()
    confidence = torch.softmax(classifier(generated.float().cpu()), -1).max(-1).values.mean().item()
    return {
        "sample_fd": frechet_distance(real_features, fake_features),
        "sample_confidence": confidence,
    }


MMD_MAX_POINTS = 4096  # codes per side; beyond, a fixed-seed subsample (an unbiased estimate)
MMD_BLOCK = 1024  # rows of each kernel block: memory O(MMD_BLOCK x MMD_MAX_POINTS), never n x n
MMD_SCALES = (0.2, 0.5, 1.0, 2.0, 5.0)


def _subsample(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    if len(x) <= MMD_MAX_POINTS:
        return x
    return x[torch.randperm(len(x), generator=generator)[:MMD_MAX_POINTS].to(x.device)]


def _kernel_sums(a: torch.Tensor, b: torch.Tensor, gammas: list[float]) -> list[float]:
    """sum_ij exp(-gamma ||a_i - b_j||^2) per gamma, one block of rows at a time.

    Distances in float64; each kernel value (in (0, 1]) in float32, summed in float64: the
    exponentials are most of the cost and float32 halves it, at a relative error of ~1e-7
    per term (far below the estimator's own sampling noise).
    """
    sums = [0.0] * len(gammas)
    for start in range(0, len(a), MMD_BLOCK):
        d2 = torch.cdist(a[start : start + MMD_BLOCK], b).pow(2).float()
        for i, gamma in enumerate(gammas):
            sums[i] += torch.exp(d2 * -gamma).sum(dtype=torch.float64).item()
    return sums


def mmd(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased squared MMD with a sum of RBF kernels, bandwidths 0.2 to 5 times sqrt(dim).

    Cost: O(n) memory (kernel blocks of ``MMD_BLOCK`` rows) and at most
    ``MMD_MAX_POINTS``^2 kernel evaluations per bandwidth, whatever n.
    """
    generator = torch.Generator().manual_seed(0)
    x, y = _subsample(x.double(), generator), _subsample(y.double(), generator)
    n, m = len(x), len(y)
    gammas = [1.0 / (2 * scale**2 * x.shape[1]) for scale in MMD_SCALES]
    xx, yy, xy = (_kernel_sums(a, b, gammas) for a, b in ((x, x), (y, y), (x, y)))
    # k(x_i, x_i) = 1: the diagonal leaves the within-sample sums exactly.
    return sum(
        (xx[i] - n) / (n * (n - 1)) + (yy[i] - m) / (m * (m - 1)) - 2 * xy[i] / (n * m)
        for i in range(len(gammas))
    )


@torch.no_grad()
def interpolation_smoothness(
    decode, codes: torch.Tensor, *, pairs: int = 32, steps: int = 16
) -> dict[str, float]:
    """Decode straight lines between random pairs of codes.

    ``interp_path_ratio``: length of the decoded path over the distance between its ends
    (1 = outputs move in a straight line; larger = detours). ``interp_max_jump``: the
    largest single step's share of the path (1/steps for even motion, near 1 for a jump).
    """
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(0, len(codes), (pairs,), generator=generator)
    second = torch.randint(0, len(codes), (pairs,), generator=generator)
    keep = first != second
    start, end = codes[first[keep]], codes[second[keep]]
    t = torch.linspace(0, 1, steps + 1, device=codes.device)[:, None, None]
    line = (1 - t) * start[None] + t * end[None]  # (steps + 1, P, D)
    decoded = decode(line.reshape(-1, codes.shape[1])).reshape(steps + 1, len(start), -1).double()
    jumps = (decoded[1:] - decoded[:-1]).norm(dim=-1)  # (steps, P)
    path = jumps.sum(0)
    ends = (decoded[-1] - decoded[0]).norm(dim=-1)
    valid = ends > 1e-6
    return {
        "interp_path_ratio": (path[valid] / ends[valid]).mean().item(),
        "interp_max_jump": (jumps.max(0).values[valid] / path[valid]).mean().item(),
    }
