"""Built-in encoder/decoder families adapt to any input shape and latent size."""

from __future__ import annotations

import pytest
import torch

from vaebench.registry import Registry


@pytest.mark.parametrize("family", ["mlp", "conv"])
@pytest.mark.parametrize(
    "shape", [(1, 8, 8), (3, 7, 5), (1, 28, 28), (12,), (2, 1, 9), (1, 33, 17)]
)
@pytest.mark.parametrize("latent", [1, 6])
def test_shapes_round_trip(registry: Registry, family, shape, latent):
    encoder = registry.get("encoder", family).factory(shape, latent)
    decoder = registry.get("decoder", family).factory(shape, latent)
    x = torch.rand(3, *shape)
    mu, logvar = encoder(x)
    assert mu.shape == (3, latent) and logvar.shape == (3, latent)
    out = decoder(mu)
    assert out.shape == (3, *shape)
    out.sum().backward()
    assert all(p.grad is not None for p in decoder.parameters())


def test_single_example_batch(registry: Registry):
    encoder = registry.get("encoder", "conv").factory((1, 8, 8), 4)
    mu, _ = encoder(torch.rand(1, 1, 8, 8))
    assert mu.shape == (1, 4)
