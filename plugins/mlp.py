"""Fully connected encoder and decoder for any input shape (flattened), with the choices the
literature's MLP VAEs differ in, as architecture options (``-A KEY=VALUE``):

- ``hidden``: the hidden layers' widths, one int (one layer) or a list (``-A hidden=300,300``);
- ``activation``: relu, tanh, elu, leaky_relu, gelu or none;
- ``gated``: each hidden layer is GatedDense, ``act(W_h x) * sigmoid(W_g x)`` (Dauphin et al.
  2017; the VampPrior code's layer, used there with no activation);
- ``init``: ``default`` (torch's), ``he`` (weights ~ N(0, 2 / fan_in), the VampPrior code's
  ``he_init``) or ``glorot`` (Xavier uniform); biases keep torch's initialization;
- ``logvar_min``/``logvar_max`` (encoder): clamp the log-variance (Hardtanh), e.g. -6 and 2.

The defaults (two layers of 256, ReLU) are vaebench's own; recipes set the papers'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

HIDDEN = (256, 256)
ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "none": nn.Identity,
}
INITS = ("default", "he", "glorot")


def widths(hidden: int | Sequence[int]) -> tuple[int, ...]:
    """``hidden`` as a tuple of layer widths, each a whole number >= 1 (at least one layer)."""
    layers = tuple(hidden) if isinstance(hidden, (list, tuple)) else (hidden,)
    if not layers or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in layers):
        raise ValueError(f"hidden must be widths >= 1, one or a comma list, got {hidden!r}")
    return layers


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


class GatedDense(nn.Module):
    """``act(W_h x + b_h) * sigmoid(W_g x + b_g)``: a linear layer gated by another."""

    def __init__(self, n_in: int, n_out: int, activation: nn.Module) -> None:
        super().__init__()
        self.h, self.g, self.activation = nn.Linear(n_in, n_out), nn.Linear(n_in, n_out), activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.h(x)) * torch.sigmoid(self.g(x))


def hidden_stack(
    n_in: int, hidden: int | Sequence[int], activation: str, gated: bool
) -> tuple[list[nn.Module], int]:
    """The hidden layers and the width of the last one (a flat list: the default's parameter
    names are those of vaebench's earlier fixed MLP, so old checkpoints still load)."""
    check_choice("activation", activation, tuple(ACTIVATIONS))
    if not isinstance(gated, bool):
        raise ValueError(f"gated must be true or false, got {gated!r}")
    layers: list[nn.Module] = []
    for width in widths(hidden):
        if gated:
            layers.append(GatedDense(n_in, width, ACTIVATIONS[activation]()))
        else:
            layers += [nn.Linear(n_in, width), ACTIVATIONS[activation]()]
        n_in = width
    return layers, n_in


def initialize(module: nn.Module, init: str) -> None:
    """He or Glorot weights for every linear layer; biases as torch made them."""
    check_choice("init", init, INITS)
    for layer in module.modules():
        if isinstance(layer, nn.Linear) and init == "he":
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / layer.in_features))
        elif isinstance(layer, nn.Linear) and init == "glorot":
            nn.init.xavier_uniform_(layer.weight)


class MLPEncoder(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        latent_dim: int,
        hidden: int | Sequence[int] = HIDDEN,
        activation: str = "relu",
        gated: bool = False,
        init: str = "default",
        logvar_min: float | None = None,
        logvar_max: float | None = None,
    ) -> None:
        super().__init__()
        body, width = hidden_stack(math.prod(input_shape), hidden, activation, gated)
        self.net = nn.Sequential(nn.Flatten(), *body, nn.Linear(width, 2 * latent_dim))
        self.clamp = logvar_clamp(logvar_min, logvar_max)
        initialize(self, init)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.net(x).chunk(2, dim=-1)
        return mu, self.clamp(logvar)


def logvar_clamp(low: float | None, high: float | None) -> nn.Module:
    """Hardtanh(low, high) on the log-variance (an open side: +-inf), or nothing."""
    if low is None and high is None:
        return nn.Identity()
    for name, value in (("logvar_min", low), ("logvar_max", high)):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    low = -math.inf if low is None else float(low)
    high = math.inf if high is None else float(high)
    if not low < high:
        raise ValueError(f"logvar_min must be < logvar_max, got {low} and {high}")
    return nn.Hardtanh(low, high)


class MLPDecoder(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        latent_dim: int,
        hidden: int | Sequence[int] = HIDDEN,
        activation: str = "relu",
        gated: bool = False,
        init: str = "default",
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        body, width = hidden_stack(latent_dim, tuple(reversed(widths(hidden))), activation, gated)
        self.net = nn.Sequential(*body, nn.Linear(width, math.prod(input_shape)))
        initialize(self, init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], *self.input_shape)
