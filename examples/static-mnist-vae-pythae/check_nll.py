"""An independent re-evaluation of this run's checkpoint: the test IW-NLL computed the way
pythae's ``VAE.get_nll`` computes it (plain PyTorch, no vaebench code, importance samples
drawn in chunks of 100 per image, one log-sum-exp over all K), at K = 200 and K = 5000.

    python examples/static-mnist-vae-pythae/check_nll.py DATA_ROOT/binarized_mnist \
        RUN/checkpoints/vae-mlp__normal.pt [K ...]

(checkpoints are not committed beside the examples: rerun the recipe, or resume it, to get one)

Costs K x 10,000 decodes per figure: about 2 minutes at K = 200 on 2 CPU cores, and an
hour at K = 5000.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CHUNK = 2000  # images per step; samples go in chunks of 100 as in pythae


def _stack(state: dict[str, torch.Tensor], prefix: str) -> nn.Sequential:
    """The MLP whose Linear weights are ``prefix.net.<i>.weight``, in order, ReLU between
    (784-400-... as the checkpoint holds it: one hidden layer or two)."""
    indices = sorted(
        int(k.split(".")[2])
        for k in state
        if k.startswith(f"{prefix}.net.") and k.endswith(".weight")
    )
    layers: list[nn.Module] = []
    for n, i in enumerate(indices):
        weight, bias = state[f"{prefix}.net.{i}.weight"], state[f"{prefix}.net.{i}.bias"]
        linear = nn.Linear(weight.shape[1], weight.shape[0])
        linear.load_state_dict({"weight": weight, "bias": bias})
        layers += [linear] if n == len(indices) - 1 else [linear, nn.ReLU()]
    return nn.Sequential(*layers)


def networks(checkpoint: Path) -> tuple[nn.Module, nn.Module]:
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    return _stack(state, "encoder").eval(), _stack(state, "decoder").eval()


@torch.no_grad()
def iw_nll(x: torch.Tensor, checkpoint: Path, k: int, seed: int = 0) -> float:
    encoder, decoder = networks(checkpoint)
    torch.manual_seed(seed)
    total = 0.0
    for start in range(0, x.shape[0], CHUNK):
        xb = x[start : start + CHUNK]
        mu, logvar = encoder(xb).chunk(2, -1)
        log_w = []
        for _ in range(0, k, 100):
            s = min(100, k - len(log_w) * 100)
            z = mu + torch.randn(s, *mu.shape) * (0.5 * logvar).exp()
            log_q = -0.5 * (logvar + (z - mu) ** 2 / logvar.exp()).sum(-1)
            log_pz = -0.5 * (z**2).sum(-1)
            logits = decoder(z)
            log_px = -F.binary_cross_entropy_with_logits(
                logits, xb.expand_as(logits), reduction="none"
            ).sum(-1)
            log_w.append(log_px + log_pz - log_q)  # the 2 pi terms cancel
        log_w = torch.cat(log_w)
        total += -(torch.logsumexp(log_w.double(), 0) - math.log(k)).sum().item()
    return total / x.shape[0]


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    test = torch.from_numpy(np.loadtxt(folder / "binarized_mnist_test.amat", dtype=np.float32))
    for k in [int(a) for a in sys.argv[3:]] or [200]:
        print(f"K = {k}: test IW-NLL {iw_nll(test, Path(sys.argv[2]), k):.3f} nats", flush=True)
