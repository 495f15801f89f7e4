"""Convolutional encoder and decoder that adapt to any (C, H, W) or flat (D,) input.

The encoder halves the spatial size with stride-2 convolutions while both sides stay >= 4
(at most three times); the decoder mirrors it, upsampling to the exact sizes the encoder
saw, so odd image sizes round-trip without cropping.
"""

from __future__ import annotations

import math

import torch
from torch import nn

WIDTH = 32
MAX_DOWNSAMPLES = 3


def as_image_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) == 3:
        return tuple(input_shape)  # type: ignore[return-value]
    if len(input_shape) == 2:
        return (1, *input_shape)  # type: ignore[return-value]
    if len(input_shape) == 1:
        return (1, 1, input_shape[0])
    raise ValueError(f"conv plugin supports inputs of rank 1 to 3, got shape {input_shape}")


def spatial_sizes(height: int, width: int, depth: int = MAX_DOWNSAMPLES) -> list[tuple[int, int]]:
    """The sizes after each stride-2 stage (at most ``depth``), starting with the input size."""
    sizes = [(height, width)]
    while len(sizes) <= depth and min(sizes[-1]) >= 8:
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.SiLU())


def check_sizes(channels: int, depth: int) -> None:
    """The architecture options: ``channels`` of the first stage (doubled at each stride-2
    stage) and ``depth``, the most stride-2 stages (each needs both sides >= 8)."""
    for name, value, low in (("channels", channels, 1), ("depth", depth, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")


class ConvEncoder(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        latent_dim: int,
        channels: int = WIDTH,
        depth: int = MAX_DOWNSAMPLES,
    ) -> None:
        super().__init__()
        check_sizes(channels, depth)
        width = channels
        image_channels, height, wid = as_image_shape(input_shape)
        self.image_shape = (image_channels, height, wid)
        sizes = spatial_sizes(height, wid, depth)
        layers: list[nn.Module] = [_block(image_channels, width)]
        cin = width
        for _ in sizes[1:]:
            layers.append(_block(cin, 2 * cin, stride=2))
            cin *= 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(cin * math.prod(sizes[-1]), 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x.reshape(x.shape[0], *self.image_shape))
        mu, logvar = self.head(h).chunk(2, dim=-1)
        return mu, logvar


class ConvDecoder(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        latent_dim: int,
        channels: int = WIDTH,
        depth: int = MAX_DOWNSAMPLES,
    ) -> None:
        super().__init__()
        check_sizes(channels, depth)
        width = channels
        self.input_shape = tuple(input_shape)
        image_channels, height, wid = as_image_shape(input_shape)
        sizes = spatial_sizes(height, wid, depth)
        cin = width * 2 ** (len(sizes) - 1)
        self.start = (cin, *sizes[-1])
        self.project = nn.Sequential(nn.Linear(latent_dim, cin * math.prod(sizes[-1])), nn.SiLU())
        layers: list[nn.Module] = []
        for size in reversed(sizes[:-1]):
            layers += [nn.Upsample(size=size, mode="nearest"), _block(cin, cin // 2)]
            cin //= 2
        layers.append(nn.Conv2d(cin, image_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(z.shape[0], *self.start)
        return self.body(h).reshape(z.shape[0], *self.input_shape)
