"""Built-in datasets: scikit-learn's bundled digits (default) and a procedural synthetic set."""

from __future__ import annotations

import math

import numpy as np
import torch

from vaebench.data import Dataset, to_images
from vaebench.errors import DataError

DIGITS_TEST_SIZE = 360  # a fifth of 1797, stratified by label, fixed seed
DIGITS_VALID_SIZE = 144  # a tenth of the rest, stratified, fixed seed


def digits(seed: int = 0) -> Dataset:
    """8x8 handwritten digits shipped inside scikit-learn (no download), scaled to [0, 1].

    The splits (1,293 train / 144 validation / 360 test) are fixed (they ignore ``seed``) so
    that scores are comparable across runs.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    x_rest, x_test, y_rest, y_test = train_test_split(
        images, bunch.target, test_size=DIGITS_TEST_SIZE, random_state=0, stratify=bunch.target
    )
    x_train, x_valid, y_train, y_valid = train_test_split(
        x_rest, y_rest, test_size=DIGITS_VALID_SIZE, random_state=0, stratify=y_rest
    )

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y.astype(np.int64))

    return Dataset(
        "digits",
        to_images(x_train, "digits"),
        to_images(x_test, "digits"),
        labels(y_train),
        labels(y_test),
        to_images(x_valid, "digits"),
        labels(y_valid),
    )


def synthetic(
    seed: int = 0,
    n_train: int = 512,
    n_test: int = 128,
    n_valid: int = 64,
    side: int = 8,
    classes: int = 4,
    binary: int = 0,
) -> Dataset:
    """Blobs whose position encodes a class: fast, labelled, learnable, any size.

    Each class puts a Gaussian bump at its own point on a circle; examples jitter the
    position and width and add noise. ``binary=1`` thresholds the images to 0/1.
    """
    for key, value, low in (
        ("n_train", n_train, 1),
        ("n_test", n_test, 1),
        ("n_valid", n_valid, 1),
        ("side", side, 2),
        ("classes", classes, 1),
    ):
        if not isinstance(value, int) or value < low:
            raise DataError(f"synthetic: option {key} must be an integer >= {low}, got {value!r}")
    rng = np.random.default_rng(seed)
    n = n_train + n_valid + n_test
    labels = rng.integers(0, classes, size=n)
    angle = 2 * math.pi * labels / classes
    radius = side / 4
    cy = (side - 1) / 2 + radius * np.sin(angle) + rng.normal(0, side / 16, n)
    cx = (side - 1) / 2 + radius * np.cos(angle) + rng.normal(0, side / 16, n)
    width = side / 6 * rng.uniform(0.8, 1.25, n)
    grid = np.arange(side, dtype=np.float64)
    dy = grid[None, :, None] - cy[:, None, None]
    dx = grid[None, None, :] - cx[:, None, None]
    images = np.exp(-(dx**2 + dy**2) / (2 * width[:, None, None] ** 2))
    images = np.clip(images + rng.normal(0, 0.05, images.shape), 0, 1).astype(np.float32)
    if binary:
        images = (images > 0.5).astype(np.float32)
    x = to_images(images, "synthetic")
    y = torch.from_numpy(labels.astype(np.int64))
    cut = n_train + n_valid
    return Dataset(
        "synthetic", x[:n_train], x[cut:], y[:n_train], y[cut:], x[n_train:cut], y[n_train:cut]
    )
