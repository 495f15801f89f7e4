"""The training loop: Adam on the mean negative ELBO, stopping a model the step it diverges."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from vaebench.model import VAE, Objective

HISTORY_KEYS = ("loss", "recon", "kl")


@dataclass
class TrainOutcome:
    """What training produced: per-epoch train-set means, the number of steps, a status."""

    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    status: str = "ok"
    seconds: float = 0.0

    @property
    def diverged(self) -> bool:
        return self.status != "ok"


def train(
    model: VAE,
    x_train: torch.Tensor,
    *,
    objective: Objective,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    on_step: Callable[[], None] | None = None,
) -> TrainOutcome:
    """Train in place on ``objective``. A NaN or infinite loss stops with ``diverged at step N``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order_rng = torch.Generator().manual_seed(seed)
    outcome = TrainOutcome()
    started = time.perf_counter()
    n = x_train.shape[0]
    model.train()
    for epoch in range(1, epochs + 1):
        # Sums stay on the device: the finiteness check is the step's only host sync.
        sums = {
            key: torch.zeros((), dtype=torch.float64, device=x_train.device) for key in HISTORY_KEYS
        }
        missing: set[str] = set()
        seen = 0
        order = torch.randperm(n, generator=order_rng).to(x_train.device)
        for start in range(0, n, batch_size):
            xb = x_train[order[start : start + batch_size]]
            loss, terms = objective.loss(model, xb, outcome.steps)
            outcome.steps += 1
            if not torch.isfinite(loss):
                outcome.status = f"diverged at step {outcome.steps}"
                outcome.seconds = time.perf_counter() - started
                return outcome
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            b = xb.shape[0]
            seen += b
            sums["loss"] += loss.detach().double() * b
            for key in ("recon", "kl"):
                term = terms.get(key)
                if term is None:
                    missing.add(key)
                else:
                    sums[key] += term.detach().double().sum()
            if on_step is not None:
                on_step()
        means = {k: math.nan if k in missing else v.item() / seen for k, v in sums.items()}
        outcome.history.append({"epoch": epoch, **means})
    outcome.seconds = time.perf_counter() - started
    return outcome
