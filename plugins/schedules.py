"""Learning-rate schedules that need the run's length: the rest are ``torch.optim``'s own."""

from __future__ import annotations

from typing import Any

import torch


def cosine(
    optimizer: torch.optim.Optimizer, epochs: int, T_max: int = 0, eta_min: float = 0.0
) -> Any:
    """``CosineAnnealingLR`` over the run's epochs unless ``T_max`` says otherwise."""
    if T_max < 0:
        raise ValueError(f"T_max must be >= 1 (0: the run's epochs), got {T_max}")
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=T_max or epochs, eta_min=eta_min
    )
