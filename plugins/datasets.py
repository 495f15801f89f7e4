"""Built-in datasets: scikit-learn's bundled digits (default) and a procedural synthetic set."""

from __future__ import annotations

import math

import numpy as np
import torch

from vaebench.data import Dataset, to_images
from vaebench.errors import DataError

DIGITS_TEST_SIZE = 360  # the last fifth of 1797, stratified by label, fixed seed


def digits(seed: int = 0) -> Dataset:
    """8x8 handwritten digits shipped inside scikit-learn (no download), scaled to [0, 1].

    The split is fixed (it ignores ``seed``) so that scores are comparable across runs.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    x_train, x_test, y_train, y_test = train_test_split(
        images, bunch.target, test_size=DIGITS_TEST_SIZE, random_state=0, stratify=bunch.target
    )
    return Dataset(
        "digits",
        to_images(x_train, "digits"),
        to_images(x_test, "digits"),
        torch.from_numpy(y_train.astype(np.int64)),
        torch.from_numpy(y_test.astype(np.int64)),
    )


def synthetic(
    seed: int = 0,
    n_train: int = 512,
    n_test: int = 128,
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
        ("side", side, 2),
        ("classes", classes, 1),
    ):
        if not isinstance(value, int) or value < low:
            raise DataError(f"synthetic: option {key} must be an integer >= {low}, got {value!r}")
    rng = np.random.default_rng(seed)
    n = n_train + n_test
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
    return Dataset("synthetic", x[:n_train], x[n_train:], y[:n_train], y[n_train:])
